"""``F.grid_sample`` / ``F.affine_grid`` (spatial transformers, flow warping): torch's own
decomposition into indexing and arithmetic, exported and run by the numpy runtime against
torch eager in float64, for every interpolation and padding mode and both corner rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.export import Dim

from torchship.edge import export


class Warp(nn.Module):
    def __init__(self, mode: str, padding: str, corners: bool) -> None:
        super().__init__()
        self.mode, self.padding, self.corners = mode, padding, corners

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta, [x.size(0), x.size(1), 7, 9], align_corners=self.corners)
        return F.grid_sample(x, grid, mode=self.mode, padding_mode=self.padding,
                             align_corners=self.corners)


def _inputs(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 3, 6, 8, generator=g)
    # rotations, scales and shifts that move part of the grid outside the image
    theta = torch.randn(batch, 2, 3, generator=g) * 0.6 + torch.tensor([[1.0, 0, 0], [0, 1, 0]])
    return x, theta


@pytest.mark.parametrize("corners", [False, True])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_grid_sample_modes(mode: str, padding: str, corners: bool) -> None:
    model = Warp(mode, padding, corners).eval()
    x, theta = _inputs(2)
    got = export(model, (x, theta)).run(x, theta).astype(np.float64)
    want = model(x.double(), theta.double()).numpy()
    # nearest: a sample exactly between two pixels may round either way in float32
    bad = np.abs(got - want) > 1e-4 * max(1.0, np.abs(want).max())
    assert bad.mean() <= (0.01 if mode == "nearest" else 0.0)


def test_grid_sample_with_a_dynamic_batch() -> None:
    model = Warp("bilinear", "zeros", False).eval()
    x, theta = _inputs(2)
    batch = Dim("batch", min=1, max=16)
    prog = export(model, (x, theta), dynamic_shapes=({0: batch}, {0: batch}))
    for n in (1, 5):
        x, theta = _inputs(n)
        want = model(x.double(), theta.double()).numpy()
        np.testing.assert_allclose(prog.run(x, theta), want, rtol=1e-5, atol=1e-5)


class Masks(nn.Module):
    def forward(self, x: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return x & 1, x & 7, b & True


def test_integer_low_bit_masks_and_their_refusal() -> None:
    """grid_sample's reflection tests parity with ``flips & 1``: integer ``&`` with a mask
    2**k - 1 exports (negative values as in two's complement); other masks are refused."""
    x = torch.arange(-20, 20).reshape(4, 10)
    b = torch.rand(4, 10) > 0.5
    got = export(Masks().eval(), (x, b)).run(x, b)
    for g, w in zip(got, Masks()(x, b)):
        np.testing.assert_array_equal(g, w.numpy())

    class Other(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x & 6

    with pytest.raises(Exception, match=r"masks 2\*\*k - 1"):
        export(Other().eval(), (x,))
