"""Element-wise, indexing and scatter kernels written the way a Helion user would: softmax
through ``F.softmax``, blocks from ``torch.zeros_like``, ``masked_fill``, concatenation,
transpose, triangular masks, argmax, segment sums and embedding backward with atomics, int4
unpacking with shifts; both modes, against torch eager in float64.

Example:
    pytest -q tests/kernels/test_user_kernels_misc.py
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use


@ts.kernel
def softmax_functional(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.empty_like(x)
    logs = torch.empty([x.size(0), x.size(1)], dtype=torch.float32, device=x.device)
    for tm in ts.tile(x.size(0)):
        out[tm, :] = F.softmax(x[tm, :], dim=1)
        logs[tm, :] = torch.log_softmax(x[tm, :], dim=-1, dtype=torch.float32)
    return out, logs


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_softmax_and_log_softmax_calls(mode: str, dtype: torch.dtype,
                                       request: pytest.FixtureRequest,
                                       poison_empty: None) -> None:
    use(mode, request)
    x = (torch.randn(37, 70) * 3).to(dtype)
    out, logs = softmax_functional(x)
    assert out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    close(out, x.double().softmax(1), atol=tol, rtol=tol)
    close(logs, x.double().log_softmax(1), atol=1e-5, rtol=1e-5)


@ts.kernel
def block_helpers(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty([3, x.size(0), x.size(1)], dtype=torch.float32, device=x.device)
    for tm, tn in ts.tile(x.size()):
        v = x[tm, tn]
        acc = torch.zeros_like(v, dtype=torch.float32) + torch.ones_like(v)
        out[0, tm, tn] = acc + torch.full_like(v, 0.25)
        out[1, tm, tn] = v.masked_fill(v < 0, 0.0) + torch.where(v > 0, 1.0, -1.0)
        out[2, tm, tn] = torch.masked_fill(v, v > 1, 1.0)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_like_constructors_and_masked_fill(mode: str, request: pytest.FixtureRequest,
                                           poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(37, 70)
    xd = x.double()
    want = torch.stack([torch.full_like(xd, 1.25), xd.masked_fill(xd < 0, 0) +
                        torch.where(xd > 0, 1.0, -1.0).double(), xd.masked_fill(xd > 1, 1.0)])
    close(block_helpers(x), want)


@ts.kernel
def concat_dim1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    m, n1 = x.size()
    out = torch.empty([m, n1 + y.size(1)], dtype=x.dtype, device=x.device)
    for tm, tn in ts.tile(out.size()):
        idx = tn.index
        in_x = idx < n1
        a = x[tm, torch.where(in_x, idx, 0)]
        b = y[tm, torch.where(in_x, 0, idx - n1)]
        out[tm, tn] = torch.where(in_x[None, :], a, b)
    return out


@ts.kernel
def concat_two_loops(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    m, n1 = x.size()
    out = torch.empty([m, n1 + y.size(1)], dtype=x.dtype, device=x.device)
    for tm, tn in ts.tile([m, n1]):
        out[tm, tn] = x[tm, tn]
    for tm, tn in ts.tile([m, y.size(1)]):
        out[tm, tn.index + n1] = y[tm, tn]
    return out


@ts.kernel
def transpose_tril(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m, n = x.size()
    t = torch.empty([n, m], dtype=x.dtype, device=x.device)
    low = torch.empty_like(x)
    for tm, tn in ts.tile([m, n]):
        v = x[tm, tn]
        t[tn, tm] = v.T
        low[tm, tn] = torch.where(tm.index[:, None] >= tn.index[None, :], v, 0.0)
    return t, low


@ts.kernel
def row_max(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m = x.size(0)
    val = torch.empty([m], dtype=x.dtype, device=x.device)
    idx = torch.empty([m], dtype=torch.int64, device=x.device)
    for tm in ts.tile(m):
        v, i = torch.max(x[tm, :], dim=1)
        val[tm] = v
        idx[tm] = i
    return val, idx


@pytest.mark.parametrize("mode", MODES)
def test_copies_and_masks(mode: str, request: pytest.FixtureRequest, poison_empty: None) -> None:
    use(mode, request)
    x, y = torch.randn(37, 70), torch.randn(37, 45)
    want = torch.cat([x, y], 1)
    close(concat_dim1(x, y), want, atol=0, rtol=0)
    close(concat_two_loops(x, y), want, atol=0, rtol=0)
    t, low = transpose_tril(x)
    close(t, x.T, atol=0, rtol=0)
    close(low, torch.tril(x), atol=0, rtol=0)
    val, idx = row_max(x)
    want_val, want_idx = torch.max(x, 1)
    close(val, want_val, atol=0, rtol=0)
    assert torch.equal(idx, want_idx)


@ts.kernel
def segment_sum(x: torch.Tensor, seg: torch.Tensor, num_segments: int) -> torch.Tensor:
    n, d = x.size()
    out = torch.zeros([num_segments, d], dtype=torch.float32, device=x.device)
    for tn, td in ts.tile([n, d]):
        ts.atomic_add(out, [seg[tn], td], x[tn, td])
    return out


@ts.kernel
def column_sums_by_tile_id(x: torch.Tensor) -> torch.Tensor:
    m, n = x.size()
    parts = torch.zeros([(m + 31) // 32, n], dtype=torch.float32, device=x.device)
    for tm in ts.tile(m, block_size=32):
        parts[tm.id, :] = x[tm, :].sum(dim=0)
    return parts.sum(0)


@ts.kernel
def scaled_residual(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    for tm, tn in ts.tile(out.size()):
        out[tm, tn] += y[tm, tn] * 2
    return out


@pytest.mark.parametrize("mode", MODES)
def test_scatter_and_partial_sums(mode: str, request: pytest.FixtureRequest,
                                  poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(90, 40)
    seg = torch.randint(0, 7, (90,))
    close(segment_sum(x, seg, 7), torch.zeros(7, 40).double().index_add_(0, seg, x.double()),
          atol=1e-5)
    close(column_sums_by_tile_id(x), x.double().sum(0), atol=1e-5)
    close(scaled_residual(x, x * 3), x.double() * 7)


@ts.kernel
def int4_shifts(packed: torch.Tensor) -> torch.Tensor:
    """Signed int4 pairs from int8 bytes (low nibble first), and a few bit identities."""
    n = packed.size(0)
    out = torch.empty([4, n], dtype=torch.int32, device=packed.device)
    for t in ts.tile(n):
        v = packed[t].to(torch.int32)
        out[0, t] = (v << 28) >> 28
        out[1, t] = (v << 24) >> 28
        out[2, t] = torch.bitwise_left_shift(v, 3) ^ torch.bitwise_and(v, 7)
        out[3, t] = torch.bitwise_right_shift(v, 1) | 1
    return out


@pytest.mark.parametrize("mode", MODES)
def test_shifts_unpack_int4(mode: str, request: pytest.FixtureRequest,
                            poison_empty: None) -> None:
    use(mode, request)
    packed = torch.randint(-128, 128, (300,), dtype=torch.int8)
    v = packed.to(torch.int32)
    want = torch.stack([(v << 28) >> 28, (v << 24) >> 28, (v << 3) ^ (v & 7), (v >> 1) | 1])
    assert torch.equal(int4_shifts(packed), want)
    low = want[0]
    assert int(low.min()) >= -8 and int(low.max()) <= 7


@ts.kernel
def shapes_from_tiles(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m, n = x.size()
    out = torch.empty_like(x)
    sums = torch.empty([m], dtype=torch.float32, device=x.device)
    for tm in ts.tile(m):
        out[tm, :] = x[tm, :] + ts.full([tm.block_size, 1], 1.0, dtype=torch.float32)
    for i in ts.grid(m):
        acc = ts.zeros([], dtype=torch.float32)  # a scalar carried through a scalar loop
        for j in range(n):
            acc = acc + x[i, j]
        sums[i] = acc
    return out, sums


@pytest.mark.parametrize("mode", MODES)
def test_block_size_shapes_and_scalar_accumulators(mode: str, request: pytest.FixtureRequest,
                                                   poison_empty: None) -> None:
    """``tm.block_size`` as a shape entry is the tile's (masked) extent in both modes."""
    use(mode, request)
    x = torch.randn(70, 9)
    out, sums = shapes_from_tiles(x)
    close(out, x.double() + 1)
    close(sums, x.double().sum(1))


@ts.kernel
def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on [seq, heads, dim]: the halves are host-code views (device code
    could also slice the block), written back through views of the output."""
    s, h, d = x.size()
    out = torch.empty_like(x)
    xa, xb = x[..., : d // 2], x[..., d // 2:]
    oa, ob = out[..., : d // 2], out[..., d // 2:]
    for t, th in ts.tile([s, h]):
        x1, x2 = xa[t, th, :], xb[t, th, :]
        c, sn = cos[t, :][:, None, :], sin[t, :][:, None, :]
        oa[t, th, :] = x1 * c - x2 * sn
        ob[t, th, :] = x2 * c + x1 * sn
    return out


@pytest.mark.parametrize("mode", MODES)
def test_rotary_embedding_through_host_views(mode: str, request: pytest.FixtureRequest,
                                             poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(40, 3, 64)
    angle = torch.rand(40, 32) * 6
    got = rotary(x, angle.cos(), angle.sin())
    x1, x2 = x[..., :32].double(), x[..., 32:].double()
    c, s = angle.cos().double()[:, None], angle.sin().double()[:, None]
    close(got, torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1), atol=1e-6, rtol=1e-5)
