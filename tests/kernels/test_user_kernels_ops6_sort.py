"""``torch.sort``/``argsort``/``topk`` on a block's last dim (values and indices) in user
kernels, compiled (Triton interpreter) and reference mode against torch eager, and the
refusals that name what to write instead.

Example:
    pytest -q tests/kernels/test_user_kernels_ops6_sort.py
"""

from __future__ import annotations

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_user_kernels_rows import MODES, use


@ts.kernel
def row_sorts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                         torch.Tensor, torch.Tensor]:
    m, n = x.size()
    up = torch.empty_like(x)
    down = torch.empty([m, n], dtype=torch.int64, device=x.device)
    order = torch.empty([m, n], dtype=torch.int64, device=x.device)
    top = torch.empty([m, 4], dtype=x.dtype, device=x.device)
    top_i = torch.empty([m, 4], dtype=torch.int64, device=x.device)
    for tm in ts.tile(m, block_size=32):
        v = x[tm, :]
        up[tm, :] = torch.sort(v, dim=-1).values
        down[tm, :] = v.sort(dim=1, descending=True)[1]
        order[tm, :] = torch.argsort(v, dim=-1)
        t = torch.topk(v, 4, dim=-1)
        top[tm, :] = t.values
        top_i[tm, :] = t.indices
    return up, down, order, top, top_i


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int32])
@pytest.mark.parametrize("mode", MODES)
def test_sort_argsort_topk_match_torch(mode: str, dtype: torch.dtype,
                                       request: pytest.FixtureRequest,
                                       poison_empty: None) -> None:
    use(mode, request)
    m, n = 40, 23  # n pads to a 32-wide block: padded lanes must never surface
    x = torch.stack([torch.randperm(n) for _ in range(m)]) - 11  # distinct per row
    x = (x.to(dtype) * 0.5) if dtype.is_floating_point else x.to(dtype)
    up, down, order, top, top_i = row_sorts(x)
    want_up = torch.sort(x, dim=-1)
    want_down = torch.sort(x, dim=-1, descending=True)
    want_top = torch.topk(x, 4, dim=-1)
    assert torch.equal(up, want_up.values)
    assert torch.equal(order, want_up.indices)
    assert torch.equal(down, want_down.indices)
    assert torch.equal(top, want_top.values)
    assert torch.equal(top_i, want_top.indices)


def test_sort_puts_nan_last_and_keeps_infinities(compiled_mode: None,
                                                 poison_empty: None) -> None:
    """NaN sorts as the largest value, like torch; indices always point at the values (ties
    may come in another order than torch's)."""
    x = torch.randn(33, 40)
    x[0, 3] = float("nan")
    x[1, :3] = float("inf")
    x[2, 5] = float("-inf")
    x[3, 7] = -0.0
    up, down, order, top, top_i = row_sorts(x)
    want = torch.sort(x, dim=-1)
    torch.testing.assert_close(up, want.values, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(top, torch.topk(x, 4, dim=-1).values, rtol=0, atol=0,
                               equal_nan=True)
    for idx, vals in ((order, up), (top_i, top)):
        torch.testing.assert_close(x.gather(1, idx), vals, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(down.sort(dim=1).values, torch.arange(40).expand(33, 40))


@pytest.mark.parametrize(("body", "message"), [
    ("out[tm, :] = torch.sort(x[tm, :], dim=0).values", "only the last dim"),
    ("out[tm, tn] = torch.sort(x[tm, tn], dim=1).values", "would sort each tile"),
    ("out[tm, :] = torch.topk(x[tm, :], 0, dim=1).values", "positive int"),
    ("out[tm, :] = torch.sort(x[tm, :].long(), dim=1).values.float()", "convert to"),
    ("out[tm, :] = torch.topk(x[tm, :], 2, largest=False).values", "largest=False"),
])
def test_sort_refusals_say_what_to_write(body: str, message: str, compiled_mode: None,
                                         tmp_path: object) -> None:
    src = (
        "import torch\nimport torchship.kernels as ts\n\n\n@ts.kernel\n"
        "def bad(x: torch.Tensor) -> torch.Tensor:\n"
        "    out = torch.empty_like(x)\n"
        "    for tm, tn in ts.tile(x.size()):\n"
        f"        {body}\n"
        "    return out\n"
    )
    import importlib.util
    from pathlib import Path

    path = Path(str(tmp_path)) / "bad_sort_kernel.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("bad_sort_kernel", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(ts.KernelError, match=message) as info:
        module.bad(torch.randn(8, 16))
    assert "bad_sort_kernel.py:9" in str(info.value)
