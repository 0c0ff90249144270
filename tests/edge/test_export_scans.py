"""``torch.cummax`` / ``cummin`` (values and indices) and ``torch.logcumsumexp``: export + numpy
runtime against torch eager (float64 for the values; indices exactly, ties and NaN included),
static and dynamic shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.export import Dim

from torchship.edge import export


class CumExt(nn.Module):
    def __init__(self, fn, dim: int) -> None:
        super().__init__()
        self.fn, self.dim = fn, dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.fn(x, self.dim)
        return r.values, r.indices


@pytest.mark.parametrize("fn", [torch.cummax, torch.cummin], ids=["cummax", "cummin"])
@pytest.mark.parametrize("dim", [1, -1, 0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_cummax_cummin_values_and_indices(fn, dim: int, dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    x = torch.randint(-3, 4, (5, 9)).to(dtype)  # few distinct values: many ties
    if dtype.is_floating_point:
        x[1, 3] = float("nan")  # values turn NaN from there on, indices point at a NaN
        x[2, 0] = float("-inf")
        x[3, 5:] = float("nan")
    got_v, got_i = export(CumExt(fn, dim).eval(), (x,)).run(x)
    want = fn(x.double() if dtype.is_floating_point else x, dim)
    np.testing.assert_array_equal(got_v, want.values.to(dtype).numpy())
    np.testing.assert_array_equal(got_i, want.indices.numpy())


def test_cummax_with_a_dynamic_length() -> None:
    model = CumExt(torch.cummax, 1).eval()
    prog = export(model, (torch.randn(2, 8),), dynamic_shapes=({1: Dim("n", min=2, max=64)},))
    for n in (3, 17, 40):
        x = torch.randn(2, n)
        got_v, got_i = prog.run(x)
        want = torch.cummax(x, 1)
        np.testing.assert_array_equal(got_v, want.values.numpy())
        np.testing.assert_array_equal(got_i, want.indices.numpy())


class LogCumSumExp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logcumsumexp(x, self.dim)


@pytest.mark.parametrize("dim", [1, 0])
def test_logcumsumexp_is_exact_for_any_range(dim: int) -> None:
    x = torch.randn(4, 30) * 20
    x[0] = torch.linspace(-1000.0, 0.0, 30)  # shifting by the row maximum would underflow
    x[1, :4] = float("-inf")
    x[2, 7] = float("inf")
    got = export(LogCumSumExp(dim).eval(), (x,)).run(x).astype(np.float64)
    want = torch.logcumsumexp(x.double(), dim).numpy()
    fin = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(got), fin)
    np.testing.assert_array_equal(got[~fin], want[~fin])
    np.testing.assert_allclose(got[fin], want[fin], rtol=2e-6, atol=1e-5)
