"""max/min reductions of float blocks return NaN for a row holding one, like torch.amax/amin
(Triton's tl.max/tl.min skip NaN): whole-row blocks, looped reductions (chunk combine) and
reductions folded over a tile loop; integers unchanged."""

from __future__ import annotations

import pytest
import torch

import torchship as ts
from tests.kernels.test_user_kernels_rows import MODES, use
from torchship.kernels import Config


@ts.kernel
def row_extremes(x: torch.Tensor) -> torch.Tensor:
    m, n = x.size()
    out = torch.empty([m, 2], dtype=x.dtype, device=x.device)
    for tm in ts.tile(m):
        out[tm, 0] = x[tm, :].amax(dim=1)
        out[tm, 1] = torch.amin(x[tm, :], dim=1)
    return out


@ts.kernel
def tiled_max(x: torch.Tensor) -> torch.Tensor:
    m, n = x.size()
    out = torch.empty([m], dtype=torch.float32, device=x.device)
    for tm in ts.tile(m):
        acc = ts.full([tm], float("-inf"), dtype=torch.float32)
        for tn in ts.tile(n):
            acc = torch.maximum(acc, x[tm, tn].float().amax(dim=1))
        out[tm] = acc
    return out


def _with_nans(dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(40, 100).to(dtype)
    x[3, 7] = float("nan")
    x[10, 99] = float("nan")
    x[20, :] = float("nan")
    return x


def _same(got: torch.Tensor, want: torch.Tensor) -> None:
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.nan_to_num(), want.nan_to_num())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_max_and_min_propagate_nan(mode: str, dtype: torch.dtype,
                                       request: pytest.FixtureRequest) -> None:
    use(mode, request)
    x = _with_nans(dtype)
    _same(row_extremes(x), torch.stack([x.amax(1), x.amin(1)], dim=1))
    _same(tiled_max(x), x.float().amax(1))


def test_looped_reductions_propagate_nan(compiled_mode: None) -> None:
    x = _with_nans(torch.float32)
    bound = row_extremes.bind((x,))
    space = bound.config_space
    cfg = Config.from_dict(space.default().to_dict() | {"reduction_loops": [32] * len(space.reductions)})
    src = row_extremes.to_triton_code(cfg, args=(x,))
    assert "propagate_nan=tl.PropagateNan.ALL" in src
    _same(bound.compile(cfg)(x), torch.stack([x.amax(1), x.amin(1)], dim=1))


def test_integer_extremes_are_plain(compiled_mode: None) -> None:
    x = torch.randint(-50, 50, (40, 100), dtype=torch.int32)
    assert torch.equal(row_extremes(x), torch.stack([x.amax(1), x.amin(1)], dim=1))
    assert "PropagateNan" not in row_extremes.to_triton_code(args=(x,))
