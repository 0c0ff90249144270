"""Jagged and gather-heavy kernels written the way a Helion user would: rows of a packed
(values, offsets) tensor reduced with masked multi-dimensional index blocks (``x[idx_2d, tm]``,
``x_flat[idx_3d]``), a jagged softmax, and a 2-D scatter with ``ts.atomic_add``; both modes,
against torch eager in float64.

Example:
    pytest -q tests/kernels/test_user_kernels_jagged.py
"""

from __future__ import annotations

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use

OFFSETS = [0, 3, 3, 40, 41, 90]


@ts.kernel
def jagged_mean(values: torch.Tensor, offsets: torch.Tensor, max_len: int) -> torch.Tensor:
    """Mean of each row's slice ``values[offsets[b]:offsets[b + 1], :]`` (zero when empty)."""
    rows = offsets.size(0) - 1
    m = values.size(1)
    out = torch.empty([rows, m], dtype=values.dtype, device=values.device)
    for tb, tm in ts.tile([rows, m]):
        starts = offsets[tb]
        lens = offsets[tb.index + 1] - starts
        acc = ts.zeros([tb, tm], dtype=torch.float32)
        for tk in ts.tile(max_len):
            valid = tk.index[None, :] < lens[:, None]
            pos = torch.where(valid, starts[:, None] + tk.index[None, :], 0)
            acc += torch.where(valid[:, :, None], values[pos, tm], 0.0).sum(dim=1)
        out[tb, tm] = acc / torch.clamp(lens, min=1).to(torch.float32)[:, None]
    return out


@ts.kernel
def jagged_sum_flat(flat: torch.Tensor, offsets: torch.Tensor, m: int,
                    max_len: int) -> torch.Tensor:
    """The same rows summed from a 1-D view, with a 3-D index block ``[tb, tk, tm]``."""
    rows = offsets.size(0) - 1
    out = torch.empty([rows, m], dtype=flat.dtype, device=flat.device)
    for tb, tm in ts.tile([rows, m]):
        starts = offsets[tb]
        ends = offsets[tb.index + 1]
        acc = ts.zeros([tb, tm], dtype=torch.float32)
        for tk in ts.tile(max_len):
            row = starts[:, None] + tk.index[None, :]
            valid = (row < ends[:, None])[:, :, None] & (tm.index < m)[None, None, :]
            idx = row[:, :, None] * m + tm.index[None, None, :]
            acc += torch.where(valid, flat[torch.where(valid, idx, 0)], 0.0).sum(dim=1)
        out[tb, tm] = acc
    return out


def _rows(values: torch.Tensor, offsets: list[int]) -> list[torch.Tensor]:
    return [values[s:e].double() for s, e in zip(offsets[:-1], offsets[1:])]


@pytest.mark.parametrize("mode", MODES)
def test_jagged_reductions(mode: str, request: pytest.FixtureRequest, poison_empty: None) -> None:
    use(mode, request)
    values = torch.randn(90, 40)
    offsets = torch.tensor(OFFSETS)
    rows = _rows(values, OFFSETS)
    want = torch.stack([r.mean(0) if len(r) else torch.zeros(40, dtype=torch.float64)
                        for r in rows])
    close(jagged_mean(values, offsets, 49), want)
    close(jagged_sum_flat(values.view(-1), offsets, 40, 49), torch.stack([r.sum(0) for r in rows]),
          atol=1e-5)


@ts.kernel
def jagged_softmax(values: torch.Tensor, offsets: torch.Tensor, max_len: int) -> torch.Tensor:
    """Softmax over each row's slice, per column: two passes (max and sum, then write)."""
    rows = offsets.size(0) - 1
    m = values.size(1)
    out = torch.zeros_like(values)  # invalid slots add 0.0 at row 0
    for tb, tm in ts.tile([rows, m]):
        starts = offsets[tb]
        lens = offsets[tb.index + 1] - starts
        mx = ts.full([tb, tm], float("-inf"), dtype=torch.float32)
        total = ts.zeros([tb, tm], dtype=torch.float32)
        for tk in ts.tile(max_len):
            valid = (tk.index[None, :] < lens[:, None])[:, :, None]
            pos = torch.where(valid[:, :, 0], starts[:, None] + tk.index[None, :], 0)
            v = torch.where(valid, values[pos, tm], float("-inf"))
            new_mx = torch.maximum(mx, v.amax(dim=1))
            total = total * torch.exp(mx - new_mx) + torch.where(
                valid, torch.exp(v - new_mx[:, None, :]), 0.0).sum(dim=1)
            mx = new_mx
        for tk in ts.tile(max_len):
            valid = (tk.index[None, :] < lens[:, None])[:, :, None]
            pos = torch.where(valid[:, :, 0], starts[:, None] + tk.index[None, :], 0)
            p = torch.exp(values[pos, tm] - mx[:, None, :]) / total[:, None, :]
            ts.atomic_add(out, [pos, tm], torch.where(valid, p, 0.0))
    return out


@pytest.mark.parametrize("mode", MODES)
def test_jagged_softmax_with_a_2d_scatter(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    values = torch.randn(90, 40)
    offsets = torch.tensor([0, 3, 40, 41, 90])
    want = torch.cat([r.softmax(0) for r in _rows(values, offsets.tolist())])
    out = jagged_softmax(values, offsets, 49)
    close(out, want)


@ts.kernel
def jagged_dense_add(values: torch.Tensor, offsets: torch.Tensor,
                     dense: torch.Tensor) -> torch.Tensor:
    """``dense[b, j, :] + values[offsets[b] + j, :]`` for j below row b's length."""
    b, max_len, d = dense.size()
    out = torch.empty_like(dense)
    for tb, tj, td in ts.tile([b, max_len, d]):
        starts = offsets[tb]
        valid = tj.index[None, :] < (offsets[tb.index + 1] - starts)[:, None]
        pos = torch.where(valid, starts[:, None] + tj.index[None, :], 0)
        out[tb, tj, td] = dense[tb, tj, td] + torch.where(valid[:, :, None], values[pos, td], 0.0)
    return out


@ts.kernel
def embedding_layer_norm(ids: torch.Tensor, table: torch.Tensor, w: torch.Tensor,
                         b: torch.Tensor) -> torch.Tensor:
    out = torch.empty([ids.size(0), table.size(1)], dtype=table.dtype, device=table.device)
    for tn in ts.tile(ids.size(0)):
        rows = table[ids[tn], :]
        var, mean = torch.var_mean(rows, dim=1, keepdim=True, correction=0)
        out[tn, :] = (rows - mean) * torch.rsqrt(var + 1e-5) * w[None, :] + b[None, :]
    return out


@pytest.mark.parametrize("mode", MODES)
def test_jagged_dense_add_and_embedding_norm(mode: str, request: pytest.FixtureRequest,
                                             poison_empty: None) -> None:
    use(mode, request)
    values, dense = torch.randn(90, 40), torch.randn(5, 30, 40)
    want = dense.double().clone()
    for i, row in enumerate(_rows(values, OFFSETS)):
        want[i, :min(len(row), 30)] += row[:30]
    close(jagged_dense_add(values, torch.tensor(OFFSETS), dense), want)
    ids, table, w, b = torch.randint(0, 20, (37,)), torch.randn(20, 70), torch.randn(70), \
        torch.randn(70)
    close(embedding_layer_norm(ids, table, w, b),
          torch.nn.functional.layer_norm(table[ids].double(), (70,), w.double(), b.double()),
          atol=1e-4)
