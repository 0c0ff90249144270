"""Bucketing: a batched sorted sequence per row into ``torch.searchsorted`` (NeRF's
hierarchical importance sampling: inverse-transform sampling of a per-ray piecewise-constant
pdf from a small coarse network, over a dynamic number of rays) and ``torch.histc``; numpy
runtime against eager torch (float64 for the model, the same dtype for histc's counts)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from tests.edge.test_ops import Fn
from tests.edge.test_user_models_vision import check_model
from torchship.edge import export


class ImportanceSampler(nn.Module):
    """Coarse densities along each ray -> a pdf over its bins -> ``searchsorted`` of the
    uniform samples ``u`` (an input: a program draws no random numbers) in the ray's cdf ->
    fine sample depths by linear interpolation inside the found bin."""

    def __init__(self, bins: int = 8) -> None:
        super().__init__()
        self.coarse = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, bins))
        self.register_buffer("edges", torch.linspace(2.0, 6.0, bins + 1))

    def forward(self, rays: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = F.softplus(self.coarse(rays)) + 1e-5  # [R, N]
        pdf = weights / weights.sum(-1, keepdim=True)
        cdf = torch.cat([torch.zeros_like(pdf[:, :1]), pdf.cumsum(-1)], -1)  # [R, N + 1]
        idx = torch.searchsorted(cdf, u, right=True)  # [R, S]: one sorted row per ray
        below = (idx - 1).clamp(min=0)
        above = idx.clamp(max=cdf.shape[-1] - 1)
        pair = torch.stack([below, above], -1)  # [R, S, 2]
        s = u.shape[1]
        cdf_g = torch.gather(cdf[:, None].expand(-1, s, -1), 2, pair)
        edges = self.edges.expand(rays.shape[0], -1)
        bins_g = torch.gather(edges[:, None].expand(-1, s, -1), 2, pair)
        denom = cdf_g[..., 1] - cdf_g[..., 0]
        denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
        t = (u - cdf_g[..., 0]) / denom
        return bins_g[..., 0] + t * (bins_g[..., 1] - bins_g[..., 0]), idx


def test_nerf_importance_sampling_with_per_ray_searchsorted() -> None:
    torch.manual_seed(85)
    rays = Dim("rays", min=1, max=64)
    check_model(ImportanceSampler(), (torch.randn(5, 3), torch.rand(5, 12)), ({0: rays}, {0: rays}),
                others=((torch.randn(17, 3), torch.rand(17, 12)),))


@pytest.mark.parametrize("bins,lo,hi", [(5, -2.0, 2.0), (7, 0.0, 0.0), (4, -0.5, 3.0)])
def test_histc_matches_torch(bins: int, lo: float, hi: float) -> None:
    x = torch.randn(4, 9)
    x[0, :4] = torch.tensor([-2.0, 2.0, float("nan") if lo < hi else 1.0, 0.0])  # edges, NaN (not counted)
    got = export(Fn(lambda t: torch.histc(t, bins, lo, hi)), (x,)).run(x.numpy())
    np.testing.assert_array_equal(got, torch.histc(x, bins, lo, hi).numpy())
    flat = torch.full((3,), 1.5)  # one value: torch widens the range by 1 each way
    got = export(Fn(lambda t: torch.histc(t, bins)), (flat,)).run(flat.numpy())
    np.testing.assert_array_equal(got, torch.histc(flat, bins).numpy())
