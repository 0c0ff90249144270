"""int8 x int8 products accumulated in int32 (``ts.dot`` with an int32 ``acc``), the core of
a quantised linear layer: exact against torch's int64 matmul on ragged sizes, with per-row and
per-column dequantisation scales, in both modes; other integer products are refused."""

from __future__ import annotations

import pytest
import torch

import torchship as ts
from tests.kernels.test_user_kernels_rows import MODES, use


@ts.kernel
def int8_linear(a: torch.Tensor, b: torch.Tensor, sa: torch.Tensor,
                sb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m, k = a.size()
    n = b.size(1)
    raw = torch.empty([m, n], dtype=torch.int32, device=a.device)
    out = torch.empty([m, n], dtype=torch.float32, device=a.device)
    for tm, tn in ts.tile([m, n]):
        acc = ts.zeros([tm, tn], dtype=torch.int32)
        for tk in ts.tile(k):
            acc = ts.dot(a[tm, tk], b[tk, tn], acc=acc)
        raw[tm, tn] = acc
        out[tm, tn] = acc.to(torch.float32) * sa[tm][:, None] * sb[tn][None, :]
    return raw, out


@pytest.mark.parametrize("mode", MODES)
def test_int8_matmul_is_exact_in_int32(mode: str, request: pytest.FixtureRequest,
                                       poison_empty: None) -> None:
    use(mode, request)
    torch.manual_seed(0)
    a = torch.randint(-128, 128, (70, 100), dtype=torch.int8)  # ragged: masks on every dim
    b = torch.randint(-128, 128, (100, 45), dtype=torch.int8)
    sa, sb = torch.rand(70), torch.rand(45)
    raw, out = int8_linear(a, b, sa, sb)
    exact = a.long() @ b.long()  # |sums| < 2**31: int32 holds them
    assert torch.equal(raw.long(), exact)
    want = exact.double() * sa.double()[:, None] * sb.double()[None, :]
    torch.testing.assert_close(out.double(), want, rtol=1e-6, atol=1e-3)


@ts.kernel
def int8_wrapping(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = torch.empty([a.size(0), b.size(1)], dtype=torch.int8, device=a.device)
    for tm, tn in ts.tile([a.size(0), b.size(1)]):
        out[tm, tn] = a[tm, :] @ b[:, tn]
    return out


def test_int8_products_without_an_int32_acc_are_refused(compiled_mode: None) -> None:
    a = torch.ones(32, 32, dtype=torch.int8)
    with pytest.raises(ts.KernelTypeError, match="accumulates in int32") as info:
        int8_wrapping(a, a)
    assert "dtype=torch.int32" in str(info.value)


def test_one_byte_dots_get_blocks_of_at_least_32() -> None:
    """Triton refuses a dot of 1-byte operands with a block under 32 (seen on an H100 with
    a sampled K block of 16): no config of such a kernel offers one."""
    a = torch.zeros(70, 100, dtype=torch.int8)
    b = torch.zeros(100, 45, dtype=torch.int8)
    space = int8_linear.bind((a, b, torch.zeros(70), torch.zeros(45))).config_space
    assert space.launches[0].byte_dots
    for i, bp in enumerate(space.block_params):
        if bp.in_dot:
            assert min(space.params[f"block_sizes[{i}]"]) >= 32
    c = torch.zeros(70, 100, dtype=torch.bfloat16)
    half = int8_wrapping.bind((c, c.t().contiguous())).config_space
    assert not half.launches[0].byte_dots
