"""Helion's jagged examples ported the way a Helion user would, in both modes against torch
eager in float64: a jagged layer norm (three passes over each row's packed values through a
flat view and a 3-D index block), a jagged-dense batched matmul (3-D dots of gathered
rows) and the simplified jagged HSTU attention (SiLU scores, causal, per batch and head). Helion writes a jagged row with ``hl.store(out, [idx], v, extra_mask=valid)``; here the
output starts zeroed and ``ts.atomic_add`` adds 0 at the invalid lanes (pointed at row 0).

Example:
    pytest -q tests/kernels/test_user_kernels_sweep10_jagged.py
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use

OFFSETS = [0, 3, 3, 40, 41, 90]


@ts.kernel
def jagged_layer_norm(x_values: torch.Tensor, x_offsets: torch.Tensor,
                      eps: float = 1e-6) -> torch.Tensor:
    """Each row ``x_values[offsets[b]:offsets[b + 1], :]`` normalised over all its elements."""
    m = x_values.size(1)
    rows = x_offsets.size(0) - 1
    out = torch.zeros_like(x_values)
    x_flat = x_values.view(-1)
    out_flat = out.view(-1)
    for tb in ts.tile(rows):
        starts = x_offsets[tb]
        lens = x_offsets[tb.index + 1] - starts
        max_len = lens.amax()  # a loop bound computed on the device, as in Helion's example
        mean = ts.zeros([tb], dtype=torch.float32)
        var = ts.zeros([tb], dtype=torch.float32)
        for tm in ts.tile(m, block_size=32):
            sums = ts.zeros([tb, tm], dtype=torch.float32)
            for tk in ts.tile(0, max_len, block_size=32):
                valid = (tk.index[None, :] < lens[:, None])[:, :, None]
                idx = (starts[:, None] + tk.index[None, :])[:, :, None] * m + tm.index[None, None, :]
                v = torch.where(valid, x_flat[torch.where(valid, idx, 0)], 0.0)
                sums = sums + v.sum(dim=1)
            mean = mean + sums.sum(dim=1)
        count = (lens * m).to(torch.float32)
        mean = mean / count
        for tm in ts.tile(m, block_size=32):
            sums = ts.zeros([tb, tm], dtype=torch.float32)
            for tk in ts.tile(0, max_len, block_size=32):
                valid = (tk.index[None, :] < lens[:, None])[:, :, None]
                idx = (starts[:, None] + tk.index[None, :])[:, :, None] * m + tm.index[None, None, :]
                v = torch.where(valid, x_flat[torch.where(valid, idx, 0)] - mean[:, None, None],
                                0.0)
                sums = sums + (v * v).sum(dim=1)
            var = var + sums.sum(dim=1)
        rstd = torch.rsqrt(var / count + eps)
        for tm in ts.tile(m, block_size=32):
            for tk in ts.tile(0, max_len, block_size=32):
                valid = (tk.index[None, :] < lens[:, None])[:, :, None]
                idx = torch.where(valid, (starts[:, None] + tk.index[None, :])[:, :, None] * m
                                  + tm.index[None, None, :], 0)
                y = (x_flat[idx] - mean[:, None, None]) * rstd[:, None, None]
                ts.atomic_add(out_flat, [idx], torch.where(valid, y, 0.0))
    return out


@pytest.mark.parametrize("mode", MODES)
def test_jagged_layer_norm(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    values = torch.randn(90, 40) * 3 + 1
    want = torch.cat([F.layer_norm(values[s:e].double(), (e - s, 40), eps=1e-6)
                      for s, e in zip(OFFSETS[:-1], OFFSETS[1:])])
    close(jagged_layer_norm(values, torch.tensor(OFFSETS)), want, atol=1e-4)


@ts.kernel
def jagged_dense_bmm(seq_offsets: torch.Tensor, jagged: torch.Tensor, dense: torch.Tensor,
                     bias: torch.Tensor | None) -> torch.Tensor:
    """Row ``b`` of the jagged ``[L, D]`` tensor times ``dense[b]`` (``[D, K]``), plus ``bias[b]``."""
    length, d = jagged.size()
    b, _, k = dense.size()
    flat = jagged.view(-1)
    out = torch.zeros([length, k], dtype=jagged.dtype, device=jagged.device)
    out_flat = out.view(-1)
    for tb in ts.tile(b, block_size=1):
        starts = seq_offsets[tb]
        lens = seq_offsets[tb.index + 1] - starts
        for tl in ts.tile(0, lens.amax(), block_size=32):  # Helion: hl.vtile(lens)
            valid = tl.index[None, :] < lens[:, None]
            rows = torch.where(valid, starts[:, None] + tl.index[None, :], 0)
            for tk in ts.tile(k, block_size=32):
                acc = ts.zeros([tb, tl, tk], dtype=torch.float32)
                for td in ts.tile(d, block_size=32):
                    tile_valid = valid[:, :, None] & (td.index < d)[None, None, :]
                    idx = torch.where(tile_valid, rows[:, :, None] * d + td.index[None, None, :], 0)
                    acc = acc + torch.matmul(torch.where(tile_valid, flat[idx], 0.0),
                                             dense[tb, td, tk])
                if bias is not None:
                    acc = acc + bias[tb, tk].unsqueeze(1)
                ts.atomic_add(out_flat, [rows[:, :, None] * k + tk.index[None, None, :]],
                              torch.where(valid[:, :, None], acc, 0.0))
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_jagged_dense_bmm(mode: str, with_bias: bool, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    jagged, dense, bias = torch.randn(90, 34), torch.randn(5, 34, 24), torch.randn(5, 24)
    want = torch.cat([jagged[s:e].double() @ dense[i].double()
                      + (bias[i].double() if with_bias else 0.0)
                      for i, (s, e) in enumerate(zip(OFFSETS[:-1], OFFSETS[1:]))])
    got = jagged_dense_bmm(torch.tensor(OFFSETS), jagged, dense, bias if with_bias else None)
    close(got, want, atol=1e-4)


@ts.kernel
def jagged_hstu_attention(max_seq_len: int, alpha: float, q: torch.Tensor, k: torch.Tensor,
                          v: torch.Tensor, seq_offsets: torch.Tensor) -> torch.Tensor:
    """Causal ``silu(q @ k.T * alpha) / max_seq_len @ v`` within each packed sequence;
    q, k, v are ``[total, heads, dim]`` (``dim`` a power of two)."""
    scale = 1.0 / max_seq_len
    heads, dim_v = q.size(1), v.size(2)
    q_flat, k_flat, v_flat = q.view(-1), k.view(-1), v.view(-1)
    out = torch.zeros_like(v)
    out_flat = out.view(-1)
    for tb, th in ts.tile([seq_offsets.size(0) - 1, heads], block_size=[1, 1]):
        starts = seq_offsets[tb]
        lengths = seq_offsets[tb.index + 1] - starts
        longest = lengths.amax()
        dim_idx = torch.arange(0, dim_v)
        for tq in ts.tile(0, longest, block_size=32):
            q_valid = (tq.index[None, :] < lengths[:, None])[:, :, None]
            q_base = (starts[:, None] + tq.index[None, :]) * heads + th.begin
            q_idx = torch.where(q_valid, q_base[:, :, None] * dim_v + dim_idx[None, None, :], 0)
            q_blk = q_flat[q_idx]
            acc = ts.zeros([tb, tq, dim_v], dtype=torch.float32)
            for tkv in ts.tile(0, longest, block_size=32):
                kv_valid = (tkv.index[None, :] < lengths[:, None])[:, :, None]
                kv_base = (starts[:, None] + tkv.index[None, :]) * heads + th.begin
                kv_idx = torch.where(kv_valid, kv_base[:, :, None] * dim_v
                                     + dim_idx[None, None, :], 0)
                k_blk = torch.where(kv_valid, k_flat[kv_idx], 0.0)
                v_blk = torch.where(kv_valid, v_flat[kv_idx], 0.0)
                scores = F.silu(torch.matmul(q_blk, k_blk.transpose(1, 2)) * alpha) * scale
                scores = torch.where(tq.index[:, None] >= tkv.index[None, :], scores, 0.0)
                acc = ts.dot(scores.to(v.dtype), v_blk, acc=acc)
            ts.atomic_add(out_flat, [q_idx], torch.where(q_valid, acc, 0.0).to(out.dtype))
    return out


@pytest.mark.parametrize("mode", MODES)
def test_jagged_hstu_attention(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    heads, dim = 2, 32
    q, k, v = (torch.randn(90, heads, dim) for _ in range(3))
    alpha = 1.0 / dim**2
    want = torch.zeros(90, heads, dim, dtype=torch.float64)
    for s, e in zip(OFFSETS[:-1], OFFSETS[1:]):
        qb, kb, vb = (t[s:e].double().transpose(0, 1) for t in (q, k, v))
        scores = F.silu(qb @ kb.transpose(1, 2) * alpha) / 49
        want[s:e] = (torch.tril(scores) @ vb).transpose(0, 1)
    close(jagged_hstu_attention(49, alpha, q, k, v, torch.tensor(OFFSETS)), want, atol=1e-5)
