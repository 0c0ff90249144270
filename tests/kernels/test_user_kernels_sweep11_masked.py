"""Masked loads and stores through integer blocks, written as Helion users write them with
``hl.load(x, [idx], extra_mask=valid)`` / ``hl.store(out, [idx], v, extra_mask=valid)``:
jagged rows padded into a dense batch and written back (the invalid lanes point past their
row, into the next one or out of the tensor, and must be neither read nor written), a
segment max whose dropped lanes read ``-inf``, and the refusals of a bad mask or ``other``.
Both modes, against torch eager.

Example:
    pytest -q tests/kernels/test_user_kernels_sweep11_masked.py
"""

from __future__ import annotations

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use

OFFSETS = [0, 5, 5, 45, 46, 77]


@ts.kernel
def jagged_to_padded(values: torch.Tensor, offsets: torch.Tensor, max_len: int) -> torch.Tensor:
    """Rows ``values[offsets[b]:offsets[b + 1]]`` into ``out[b, :len]``, 0 after them."""
    batch = offsets.size(0) - 1
    d = values.size(1)
    out = torch.empty([batch, max_len, d], dtype=values.dtype, device=values.device)
    for tb, tk, tn in ts.tile([batch, max_len, d], block_size=[1, 32, 32]):
        starts = offsets[tb]
        lens = offsets[tb.index + 1] - starts
        rows = starts[:, None] + tk.index[None, :]
        valid = tk.index[None, :] < lens[:, None]
        out[tb, tk, tn] = ts.load(values, [rows, tn], extra_mask=valid[:, :, None], other=0.0)
    return out


@ts.kernel
def padded_to_jagged(padded: torch.Tensor, offsets: torch.Tensor, total: int) -> torch.Tensor:
    """The inverse: ``out[offsets[b] + k] = 2 * padded[b, k]`` for ``k < len``; the padded
    lanes past a row would land on the next row (or past the end) and are masked off."""
    batch, max_len, d = padded.size()
    out = torch.full([total, d], -7.0, dtype=padded.dtype, device=padded.device)
    for tb, tk, tn in ts.tile([batch, max_len, d], block_size=[1, 32, 32]):
        starts = offsets[tb]
        lens = offsets[tb.index + 1] - starts
        rows = starts[:, None] + tk.index[None, :]
        valid = (tk.index[None, :] < lens[:, None])[:, :, None]
        ts.store(out, [rows, tn], padded[tb, tk, tn] * 2.0, extra_mask=valid)
    return out


def _padded(values: torch.Tensor, max_len: int) -> torch.Tensor:
    rows = [values[s:e] for s, e in zip(OFFSETS[:-1], OFFSETS[1:])]
    out = torch.zeros(len(rows), max_len, values.size(1), dtype=values.dtype)
    for b, r in enumerate(rows):
        out[b, :len(r)] = r
    return out


@pytest.mark.parametrize("mode", MODES)
def test_jagged_padded_round_trip(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    values = torch.randn(OFFSETS[-1], 40)
    offsets = torch.tensor(OFFSETS)
    want = _padded(values, 48)
    close(jagged_to_padded(values, offsets, 48), want, atol=0, rtol=0)
    close(padded_to_jagged(want, offsets, OFFSETS[-1]), values * 2, atol=0, rtol=0)


@ts.kernel
def segment_max(x: torch.Tensor, offsets: torch.Tensor, seg_block: int) -> torch.Tensor:
    """Per segment ``x[offsets[s]:offsets[s + 1], :].amax(0)``; ``-inf`` for an empty one.
    The dropped lanes of the gathered rows read ``other=-inf``."""
    segs = offsets.size(0) - 1
    d = x.size(1)
    out = torch.empty([segs, d], dtype=x.dtype, device=x.device)
    for ts_, tn in ts.tile([segs, d], block_size=[1, 32]):
        starts = offsets[ts_]
        lens = offsets[ts_.index + 1] - starts
        best = ts.full([ts_, tn], float("-inf"), dtype=torch.float32)
        for tk in ts.tile(seg_block, block_size=32):
            valid = tk.index[None, :] < lens[:, None]
            rows = starts[:, None] + tk.index[None, :]
            v = ts.load(x, [rows, tn], extra_mask=valid[:, :, None], other=float("-inf"))
            best = torch.maximum(best, v.amax(dim=1))
        out[ts_, tn] = best
    return out


@pytest.mark.parametrize("mode", MODES)
def test_segment_max_other_inf(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    x = torch.randn(OFFSETS[-1], 48) - 10.0  # all negative: a 0 from a dropped lane would win
    want = torch.stack([x[s:e].amax(0) if e > s else torch.full((48,), float("-inf"))
                        for s, e in zip(OFFSETS[:-1], OFFSETS[1:])])
    close(segment_max(x, torch.tensor(OFFSETS), 64), want, atol=0, rtol=0)


@ts.kernel
def compact_positive(x: torch.Tensor) -> torch.Tensor:
    """Stream compaction: the positive entries of ``x`` (rows of 32) in order, -1 after them.
    One launch counts each row, the host takes a prefix sum, a second launch writes each kept
    element at its row's base plus its rank in the row (a cumsum of the keep mask)."""
    rows, width = x.size()
    out = torch.full([rows * width], -1.0, dtype=x.dtype, device=x.device)
    counts = torch.zeros([rows], dtype=torch.int32, device=x.device)
    for tb in ts.tile(rows, block_size=32):
        counts[tb] = (x[tb, :] > 0).to(torch.int32).sum(dim=1)
    base = (torch.cumsum(counts, 0) - counts).to(torch.int32)
    for tb in ts.tile(rows, block_size=32):
        keep = x[tb, :] > 0
        pos = base[tb][:, None] + torch.cumsum(keep.to(torch.int32), 1) - 1
        ts.store(out, [pos], x[tb, :], extra_mask=keep)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_stream_compaction(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    x = torch.randn(70, 32)
    want = torch.full((70 * 32,), -1.0)
    kept = x[x > 0]
    want[:kept.numel()] = kept
    close(compact_positive(x), want, atol=0, rtol=0)


@ts.kernel
def bad_mask(x: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(x)
    for tm in ts.tile(x.size(0), block_size=32):
        idx = tm.index
        ts.store(out, [idx], x[tm], extra_mask=idx)
    return out


@ts.kernel
def bad_other(x: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(x)
    for tm in ts.tile(x.size(0), block_size=32):
        out[tm] = ts.load(x, [tm.index], extra_mask=tm.index < 3, other=0.5)
    return out


def test_masked_refusals(compiled_mode: None) -> None:
    with pytest.raises(ts.KernelTypeError, match="extra_mask must be a bool block"):
        bad_mask(torch.randn(40))
    with pytest.raises(ts.KernelTypeError, match="must be a Python number of the tensor"):
        bad_other(torch.arange(40, dtype=torch.int32))


def test_ref_checks_kept_lanes() -> None:
    x = torch.arange(4.0)
    idx = torch.tensor([1, 9])
    with pytest.raises(IndexError, match="extra_mask keeps"):
        ts.load(x, [idx], extra_mask=torch.tensor([True, True]))
    assert ts.load(x, [idx], extra_mask=idx < 4, other=-2.0).tolist() == [1.0, -2.0]


@ts.kernel
def lower_copy(x: torch.Tensor) -> torch.Tensor:
    """Tile-indexed masked access: the lower triangle of ``x`` read with ``other=-1`` and
    written where the column is even (the rest keeps the output's zeros)."""
    m, n = x.size()
    out = torch.zeros_like(x)
    for tm, tn in ts.tile([m, n], block_size=[32, 32]):
        tri = tm.index[:, None] >= tn.index[None, :]
        v = ts.load(x, [tm, tn], extra_mask=tri, other=-1.0)
        ts.store(out, [tm, tn], v, extra_mask=(tn.index % 2 == 0)[None, :])
    return out


def test_tile_masked_access_every_indexing(compiled_mode: None) -> None:
    """A tile-indexed masked access takes pointer code under every indexing choice (block
    pointers and tensor descriptors have no per-lane mask)."""
    x = torch.randn(70, 48)
    want = torch.where(torch.ones(70, 48).tril().bool(), x, -1.0)
    want = torch.where(torch.arange(48) % 2 == 0, want, 0.0)
    bound = lower_copy.bind((x,))
    for indexing in bound.config_space.params["indexing"]:
        cfg = bound.config_space.default().replace(indexing=indexing)
        close(bound.compile(cfg)(x), want, atol=0, rtol=0)
    close(lower_copy(x), want, atol=0, rtol=0)


def test_tile_masked_access_ref(ref_mode: None) -> None:
    x = torch.randn(70, 48)
    want = torch.where(torch.ones(70, 48).tril().bool(), x, -1.0)
    close(lower_copy(x), torch.where(torch.arange(48) % 2 == 0, want, 0.0), atol=0, rtol=0)
