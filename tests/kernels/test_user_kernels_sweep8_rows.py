"""Kernels a new user writes that no earlier sweep covered, against torch eager: argmax /
argmin with ties and NaN (torch returns the first NaN; whole rows and looped reductions, and
``max(dim)``'s indices), torch's block factories in device code (``torch.zeros/ones/
full`` with tiles in the shape, ``torch.arange``, ``device=x.device``), ``torch.where`` with
python scalars of mixed kinds, ``clamp`` with tensor bounds, a reduction over the middle dim
of a 3-D block broadcast back with ``keepdim``, int32 sums that wrap like torch's, a
scatter-add of rows through an index tensor, and ``F.normalize``/``F.cosine_similarity``/
``repeat``/``flip``/``expand_as``/``broadcast_to`` of rows.

Example:
    pytest -q tests/kernels/test_user_kernels_sweep8_rows.py
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use
from torchship.kernels import Config


@ts.kernel
def arg_extremes(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty([x.size(0), 4], dtype=torch.int64, device=x.device)
    for tm in ts.tile(x.size(0), block_size=32):
        v = x[tm, :]
        out[tm, 0] = v.argmax(dim=1)
        out[tm, 1] = torch.argmin(v, dim=1)
        out[tm, 2] = v.max(dim=1).indices
        out[tm, 3] = torch.min(v, 1)[1]
    return out


def _with_ties_and_nans() -> torch.Tensor:
    x = torch.randint(0, 3, (40, 100)).float()  # many ties: the first index wins
    x[3, 7] = x[3, 50] = float("nan")
    x[5, 99] = float("nan")
    x[20, :] = float("nan")
    return x


def _want(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x.argmax(1), x.argmin(1), x.max(1).indices, x.min(1).indices], 1)


@pytest.mark.parametrize("mode", MODES)
def test_argmax_ties_and_nan_like_torch(mode: str, request: pytest.FixtureRequest,
                                        poison_empty: None) -> None:
    use(mode, request)
    x = _with_ties_and_nans()
    assert torch.equal(arg_extremes(x), _want(x))
    xi = torch.randint(-3, 3, (40, 100), dtype=torch.int32)
    assert torch.equal(arg_extremes(xi), _want(xi))


def test_looped_argmax_finds_the_first_nan(compiled_mode: None) -> None:
    x = _with_ties_and_nans()
    bound = arg_extremes.bind((x,))
    space = bound.config_space
    cfg = Config.from_dict(space.default().to_dict()
                           | {"reduction_loops": [32] * len(space.reductions)})
    assert "for " in arg_extremes.to_triton_code(cfg, args=(x,))
    assert torch.equal(bound.compile(cfg)(x), _want(x))


@ts.kernel
def factories(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.empty_like(x)
    pos = torch.empty([x.size(0), 32], dtype=torch.int64, device=x.device)
    for tm in ts.tile(x.size(0), block_size=32):
        acc = torch.zeros([tm, 32], dtype=torch.float32, device=x.device)
        acc = acc + torch.ones([tm, 32]) + torch.full([tm, 32], 2.0)
        out[tm, :] = x[tm, :] * torch.arange(32, device=x.device)[None, :] + acc
        pos[tm, :] = torch.arange(3, 67, 2)[None, :] + torch.full([tm, 32], 1)
    return out, pos


@pytest.mark.parametrize("mode", MODES)
def test_torch_factories_in_device_code(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    x = torch.randn(45, 32)
    out, pos = factories(x)
    close(out, x * torch.arange(32) + 3)
    assert pos.dtype == torch.int64
    assert torch.equal(pos, (torch.arange(3, 67, 2) + 1).expand(45, 32))


@ts.kernel
def arange_of_three(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        out[t] = x[t] + torch.arange(3).sum()
    return out


def test_arange_needs_a_power_of_two_length(compiled_mode: None) -> None:
    with pytest.raises(ts.KernelError) as info:
        arange_of_three(torch.randn(8))
    text = str(info.value)
    assert "`torch.arange(3)` has 3 elements" in text and "sweep8_rows.py" in text, text


@ts.kernel
def selects(x: torch.Tensor, m: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    a = torch.empty_like(x)
    b = torch.empty(x.shape, dtype=torch.int64, device=x.device)
    c = torch.empty_like(x)
    d = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for t in ts.tile(x.size(0)):
        xv, mv = x[t], m[t]
        a[t] = torch.where(mv, xv, 1)  # float block, int scalar: float
        b[t] = torch.where(mv, 2, 3)  # two python ints: int64
        c[t] = torch.clamp(xv, lo[t], hi[t]) + xv.clamp(min=lo[t])
        d[t] = torch.where(mv, xv.to(torch.int32), 0.5)  # int block, float scalar: float32
    return a, b, c, d


@pytest.mark.parametrize("mode", MODES)
def test_where_with_mixed_scalars_and_tensor_clamp_bounds(mode: str,
                                                          request: pytest.FixtureRequest,
                                                          poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(100) * 3
    m = torch.rand(100) > 0.5
    lo, hi = -torch.rand(100), torch.rand(100)
    a, b, c, d = selects(x, m, lo, hi)
    close(a, torch.where(m, x, 1))
    assert b.dtype == torch.where(m, 2, 3).dtype and torch.equal(b, torch.where(m, 2, 3))
    close(c, torch.clamp(x, lo, hi) + x.clamp(min=lo))
    close(d, torch.where(m, x.int(), 0.5))


@ts.kernel
def middle_dim(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    total = torch.empty([x.size(0), x.size(2)], dtype=x.dtype, device=x.device)
    centred = torch.empty_like(x)
    for tb in ts.tile(x.size(0), block_size=32):
        v = x[tb, :, :]
        total[tb, :] = v.sum(dim=1)
        centred[tb, :, :] = (v - v.mean(dim=1, keepdim=True)) / v.amax(1, keepdim=True)
    return total, centred


@pytest.mark.parametrize("mode", MODES)
def test_reduction_over_the_middle_dim_of_a_3d_block(mode: str, request: pytest.FixtureRequest,
                                                     poison_empty: None) -> None:
    use(mode, request)
    x = torch.rand(37, 20, 16) + 0.1
    total, centred = middle_dim(x)
    close(total, x.sum(1))
    close(centred, (x - x.mean(1, keepdim=True)) / x.amax(1, keepdim=True))


@ts.kernel
def int_sums(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    wrapped = torch.empty([x.size(0)], dtype=torch.int32, device=x.device)
    wide = torch.empty([x.size(0)], dtype=torch.int64, device=x.device)
    for tm in ts.tile(x.size(0), block_size=32):
        v = x[tm, :]
        wrapped[tm] = (v * v).sum(dim=1).to(torch.int32)  # int32 products wrap, the sum is int64
        wide[tm] = v.to(torch.int64).sum(dim=1) * 1000000
    return wrapped, wide


@pytest.mark.parametrize("mode", MODES)
def test_int32_products_wrap_and_sums_widen_like_torch(mode: str,
                                                      request: pytest.FixtureRequest) -> None:
    use(mode, request)
    x = torch.randint(-50000, 50000, (20, 64), dtype=torch.int32)
    wrapped, wide = int_sums(x)
    assert torch.equal(wrapped, (x * x).sum(1).to(torch.int32))
    assert torch.equal(wide, x.long().sum(1) * 1000000)


@ts.kernel
def index_add_rows(src: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.zeros([n, src.size(1)], dtype=src.dtype, device=src.device)
    for tm in ts.tile(src.size(0), block_size=32):
        ts.atomic_add(out, [index[tm], slice(None)], src[tm, :])
    return out


@pytest.mark.parametrize("mode", MODES)
def test_scatter_add_of_rows_through_an_index(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    src, index = torch.randn(100, 16), torch.randint(0, 10, (100,))
    close(index_add_rows(src, index, 10), torch.zeros(10, 16).index_add_(0, index, src))


@ts.kernel
def row_geometry(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """F.normalize, F.cosine_similarity against one vector, repeat, flip and expand_as."""
    unit = torch.empty_like(x)
    cos = torch.empty([x.size(0)], dtype=x.dtype, device=x.device)
    tiled = torch.empty([x.size(0), 2 * x.size(1)], dtype=x.dtype, device=x.device)
    flipped = torch.empty_like(x)
    for tm in ts.tile(x.size(0), block_size=32):
        v = x[tm, :]
        unit[tm, :] = F.normalize(v, dim=-1)
        cos[tm] = F.cosine_similarity(v, w[None, :], dim=-1)
        tiled[tm, :] = v.repeat(1, 2)
        flipped[tm, :] = v.flip(-1) + y[tm].unsqueeze(1).expand_as(v) + \
            torch.broadcast_to(y[tm][:, None], [tm, 32])
    return unit, cos, tiled, flipped


@pytest.mark.parametrize("mode", MODES)
def test_normalize_cosine_repeat_flip_expand(mode: str, request: pytest.FixtureRequest,
                                             poison_empty: None) -> None:
    use(mode, request)
    x, w, y = torch.randn(45, 32), torch.randn(32), torch.randn(45)
    x[3] = 0.0  # a zero row: normalize divides by eps
    unit, cos, tiled, flipped = row_geometry(x, w, y)
    close(unit, F.normalize(x, dim=-1))
    close(cos, F.cosine_similarity(x, w[None, :], dim=-1))
    close(tiled, x.repeat(1, 2))
    close(flipped, x.flip(-1) + 2 * y[:, None])
