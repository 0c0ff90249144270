"""``prod`` (all elements, along a dim, keepdim, of integers and bools) exports through the core
``scatter`` with ``reduce="prod"`` and matches float64 eager, zeros and NaN included, with a
dynamic batch."""

from __future__ import annotations

import numpy as np
import torch
from torch.export import Dim

from torchship.edge import export


class Products(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x.prod(1), torch.prod(x, 0, keepdim=True), x.prod(), (x > 0).prod(1),
                torch.nan_to_num(x).round().long().prod(-1))


def test_prod_matches_eager_over_a_dynamic_batch() -> None:
    model = Products()
    g = torch.Generator().manual_seed(0)
    x = 1.0 + 0.3 * torch.randn(5, 7, generator=g)
    prog = export(model, (x,), dynamic_shapes=({0: Dim("b", max=64)},))
    for n in (5, 1, 12):
        xx = 1.0 + 0.3 * torch.randn(n, 7, generator=g)
        xx[0, 3] = 0.0
        if n > 2:
            xx[2, 2] = float("nan")
        got = prog.run(xx.numpy())
        with torch.no_grad():
            want = model(xx.double())
        for gv, wv in zip(got, want):
            wv = wv.numpy()
            assert gv.shape == wv.shape
            assert gv.dtype == (np.float32 if wv.dtype == np.float64 else wv.dtype)
            assert np.allclose(gv, wv, rtol=1e-5, atol=0, equal_nan=True)
