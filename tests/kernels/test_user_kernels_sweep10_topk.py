"""``torch.topk`` with ``k`` not a power of two, in both modes against torch: the top power of
two is selected and its first ``k`` form a whole dim of extent ``k`` (padded, masked), so
``out[tm, :] = vals`` into an ``[n, k]`` output and ``out[tm, :k] = vals`` into a wider one
store ``k`` columns, and a softmax over the ``k`` values skips the rest (an MoE router with
``k = 6`` or ``k`` an int argument).

Example:
    pytest -q tests/kernels/test_user_kernels_sweep10_topk.py
"""

from __future__ import annotations

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use
from tests.kernels.test_user_kernels_sweep9_ports import topk_router as router


@ts.kernel
def top6_into_wider(x: torch.Tensor) -> torch.Tensor:
    """The top 6 values (a literal k) into columns 0:6 of an 8-wide output, then their sum."""
    n = x.size(0)
    out = torch.full([n, 8], -1.0, dtype=x.dtype, device=x.device)
    for tm in ts.tile(n, block_size=32):
        vals = torch.topk(x[tm, :], 6).values
        out[tm, :6] = vals
        out[tm, 7] = vals.sum(dim=1)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_router_with_k_not_a_power_of_two(mode: str, request: pytest.FixtureRequest,
                                          poison_empty: None) -> None:
    use(mode, request)
    logits = torch.randn(50, 37)
    for k in (3, 6, 37):  # one kernel per k; 37 is the whole row
        weights, experts = router(logits, k)
        vals, idx = torch.topk(logits, k, dim=-1)
        assert torch.equal(experts, idx), k
        close(weights, torch.softmax(vals.double(), -1))


@pytest.mark.parametrize("mode", MODES)
def test_top_k_prefix_into_a_slice(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    x = torch.randn(40, 20)
    top = torch.topk(x.double(), 6).values
    want = torch.cat((top, torch.full((40, 1), -1.0, dtype=torch.float64),
                      top.sum(1, keepdim=True)), dim=1)
    close(top6_into_wider(x), want)


@ts.kernel
def top3_of_a_constant_block(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty([x.size(0), 3], dtype=x.dtype, device=x.device)
    for tm in ts.tile(x.size(0), block_size=32):
        out[tm, :] = torch.topk(ts.zeros([tm, 8]) + x[tm, 0][:, None], 3).values
    return out


def test_k_refusals_say_what_to_write(compiled_mode: None) -> None:
    with pytest.raises(ts.KernelError, match="positive int"):
        router(torch.randn(8, 16), 0)
    with pytest.raises(ts.KernelError, match=r"(?s)8-wide constant block.*topk\(v, 4\)"):
        top3_of_a_constant_block(torch.randn(8, 16))
