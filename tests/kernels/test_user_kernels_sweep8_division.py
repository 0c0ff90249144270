"""Float division with rounding against torch eager at the IEEE edge values: ``//``,
``torch.floor_divide``, ``torch.div(rounding_mode="floor"/"trunc")``, ``%``,
``torch.remainder`` and ``torch.fmod`` on ±0, ±inf, nan, negative divisors and quotients
beyond 2^24, with block and python-number divisors, in float32 and float64 — bit for bit,
signs of zeros included.

Example:
    pytest -q tests/kernels/test_user_kernels_sweep8_division.py
"""

from __future__ import annotations

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_user_kernels_rows import MODES, use


@ts.kernel
def rounded_division(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = torch.empty([9, a.size(0)], dtype=a.dtype, device=a.device)
    for t in ts.tile(a.size(0), block_size=256):
        x, y = a[t], b[t]
        out[0, t] = x // y
        out[1, t] = torch.floor_divide(x, y)
        out[2, t] = torch.div(x, y, rounding_mode="floor")
        out[3, t] = torch.div(x, y, rounding_mode="trunc")
        out[4, t] = x % y
        out[5, t] = torch.remainder(x, y)
        out[6, t] = torch.fmod(x, y)
        out[7, t] = x // -2.5
        out[8, t] = torch.fmod(x, 3.0) + x % -0.75
    return out


def _expected(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.stack([a // b, torch.floor_divide(a, b), torch.div(a, b, rounding_mode="floor"),
                        torch.div(a, b, rounding_mode="trunc"), a % b, torch.remainder(a, b),
                        torch.fmod(a, b), a // -2.5, torch.fmod(a, 3.0) + a % -0.75])


def _same_bits(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal values, nan where torch has nan, and the same sign on zeros."""
    both_nan = got.isnan() & want.isnan()
    bad = ~((got == want) & (got.signbit() == want.signbit()) | both_nan)
    assert not bad.any(), [(r, got[r][bad[r]][:4].tolist(), want[r][bad[r]][:4].tolist())
                           for r in range(got.size(0)) if bad[r].any()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", MODES)
def test_float_rounding_division_at_the_edges_like_torch(mode: str, dtype: torch.dtype,
                                                         request: pytest.FixtureRequest,
                                                         poison_empty: None) -> None:
    use(mode, request)
    # (quotients stay below the float32 maximum: torch's vectorised float32 fmod of -3e38 by
    # -0.75 is nan, its scalar path -0.5 — the exact answer, which we give)
    edges = [0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 7.0, -7.0, 0.75, 1e30, -3e37, 16777217.0,
             float("inf"), float("-inf"), float("nan")]
    pairs = torch.tensor([(x, y) for x in edges for y in edges], dtype=dtype)
    rand = torch.randn(400, 2, dtype=dtype) * torch.tensor([1e3, 3.0], dtype=dtype)
    ab = torch.cat([pairs, rand])
    a, b = ab[:, 0].contiguous(), ab[:, 1].contiguous()
    _same_bits(rounded_division(a, b), _expected(a, b))
