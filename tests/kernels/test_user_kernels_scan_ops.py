"""torch.logcumsumexp in device code (a scan with a log-add-exp combine), against torch in
float64: rows spanning a wide range (no shift by the row maximum that would underflow the
small entries), infinities, half types, the method form, both modes."""

from __future__ import annotations

import pytest
import torch

import torchship as ts
from tests.kernels.test_user_kernels_rows import MODES, use


@ts.kernel
def running_logsumexp(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m, n = x.size()
    a = torch.empty_like(x)
    b = torch.empty_like(x)
    for tm in ts.tile(m, block_size=32):
        a[tm, :] = torch.logcumsumexp(x[tm, :], dim=1)
        b[tm, :] = x[tm, :].logcumsumexp(-1)
    return a, b


@pytest.mark.parametrize("mode", MODES)
def test_logcumsumexp_matches_torch(mode: str, request: pytest.FixtureRequest,
                                    poison_empty: None) -> None:
    use(mode, request)
    torch.manual_seed(0)
    x = torch.randn(40, 45) * 30  # 45 pads to 64: padded lanes hold -inf
    x[0, :] = torch.linspace(-1000.0, 0.0, 45)  # tiny entries before a large one
    x[1, :3] = float("-inf")  # a leading -inf prefix stays -inf
    x[2, 10] = float("inf")  # +inf from there on
    got_a, got_b = running_logsumexp(x)
    want = torch.logcumsumexp(x.double(), dim=1)
    for got in (got_a, got_b):
        assert torch.equal(torch.isfinite(got), torch.isfinite(want))
        fin = torch.isfinite(want)
        assert torch.equal(got[~fin], want[~fin].float())
        torch.testing.assert_close(got[fin].double(), want[fin], rtol=2e-6, atol=1e-5)


def test_logcumsumexp_of_half_types_is_computed_in_float32(compiled_mode: None) -> None:
    x = (torch.randn(33, 64) * 4).to(torch.bfloat16)
    got, _ = running_logsumexp(x)
    assert got.dtype == torch.bfloat16
    want = torch.logcumsumexp(x.double(), dim=1).to(torch.bfloat16)
    torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2)
