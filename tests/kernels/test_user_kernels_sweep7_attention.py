"""Attention variants a new user writes: sliding-window (local) attention, ALiBi bias,
grouped-query heads shared by index arithmetic, decode attention over a KV cache with a
length per batch, paged attention through a block table (a gather of page indices paired
element-wise with in-page slots, as in torch), and flash-decoding split over the key axis
with a second combine kernel; compiled (Triton interpreter) and reference mode against
torch eager in float64.

Example:
    pytest -q tests/kernels/test_user_kernels_sweep7_attention.py
"""

from __future__ import annotations

import math

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use

TOL = {"atol": 1e-4, "rtol": 1e-4}


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              mask: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    s = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(q.size(-1))
    if bias is not None:
        s = s + bias
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, -1) @ v.double()


def online_step(scores: torch.Tensor, m: torch.Tensor, den: torch.Tensor, acc: torch.Tensor,
                vb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One key block of an online softmax (inlined into each kernel that calls it)."""
    m_new = torch.maximum(m, scores.amax(dim=1))
    p = torch.exp(scores - m_new[:, None])
    alpha = torch.exp(m - m_new)
    return m_new, den * alpha + p.sum(dim=1), acc * alpha[:, None] + p @ vb


@ts.kernel
def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    bh, s, d = q.shape
    out = torch.empty_like(q)
    for b, tm in ts.tile([bh, s], block_size=[1, 32]):
        qb = q[b.begin, tm, :]
        m = ts.full([tm], float("-inf"), dtype=torch.float32)
        den = ts.zeros([tm], dtype=torch.float32)
        acc = ts.zeros([tm, d], dtype=torch.float32)
        for tn in ts.tile(max(tm.begin - window + 1, 0), tm.end, block_size=32):
            i, j = tm.index[:, None], tn.index[None, :]
            sc = torch.where((j <= i) & (j > i - window),
                             (qb @ k[b.begin, tn, :].T) / math.sqrt(d), float("-inf"))
            m, den, acc = online_step(sc, m, den, acc, v[b.begin, tn, :])
        out[b.begin, tm, :] = acc / den[:, None]
    return out


@ts.kernel
def alibi_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    slopes: torch.Tensor) -> torch.Tensor:
    b, h, s, d = q.shape
    out = torch.empty_like(q)
    for ib, ih, tm in ts.tile([b, h, s], block_size=[1, 1, 32]):
        qb = q[ib.begin, ih.begin, tm, :]
        slope = slopes[ih.begin]
        m = ts.full([tm], float("-inf"), dtype=torch.float32)
        den = ts.zeros([tm], dtype=torch.float32)
        acc = ts.zeros([tm, d], dtype=torch.float32)
        for tn in ts.tile(s, block_size=32):
            sc = ts.dot(qb, k[ib.begin, ih.begin, tn, :].T) / math.sqrt(d)
            sc = sc + slope * (tn.index[None, :] - tm.index[:, None]).float()
            m, den, acc = online_step(sc, m, den, acc, v[ib.begin, ih.begin, tn, :])
        out[ib.begin, ih.begin, tm, :] = acc / den[:, None]
    return out


@ts.kernel
def gqa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    b, hq, s, d = q.shape
    group = hq // k.size(1)
    out = torch.empty_like(q)
    for ib, ih, tm in ts.tile([b, hq, s], block_size=[1, 1, 32]):
        kh = ih.begin // group  # the kv head this query head shares
        qb = q[ib.begin, ih.begin, tm, :]
        m = ts.full([tm], float("-inf"), dtype=torch.float32)
        den = ts.zeros([tm], dtype=torch.float32)
        acc = ts.zeros([tm, d], dtype=torch.float32)
        for tn in ts.tile(s, block_size=32):
            sc = qb @ k[ib.begin, kh, tn, :].T / math.sqrt(d)
            m, den, acc = online_step(sc, m, den, acc, v[ib.begin, kh, tn, :])
        out[ib.begin, ih.begin, tm, :] = (acc / den[:, None]).to(q.dtype)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_local_alibi_and_grouped_query(mode: str, request: pytest.FixtureRequest,
                                       poison_empty: None) -> None:
    use(mode, request)
    q, k, v = (torch.randn(3, 100, 32) for _ in range(3))
    i = torch.arange(100)
    window = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - 20)
    close(local_attention(q, k, v, 20), reference(q, k, v, window), **TOL)

    q, k, v = (torch.randn(2, 4, 70, 16) for _ in range(3))
    slopes = 2.0 ** (-2.0 * torch.arange(1, 5))
    i = torch.arange(70)
    bias = slopes.double()[:, None, None] * (i[None, :] - i[:, None]).double()
    close(alibi_attention(q, k, v, slopes), reference(q, k, v, bias=bias), **TOL)

    q, k, v = torch.randn(2, 8, 40, 16), torch.randn(2, 2, 40, 16), torch.randn(2, 2, 40, 16)
    want = reference(q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1))
    close(gqa_attention(q, k, v), want, **TOL)


@ts.kernel
def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     lengths: torch.Tensor) -> torch.Tensor:
    """q [B, H, D], caches [B, H, T, D]; batch b sees its first lengths[b] positions."""
    b, h, d = q.shape
    out = torch.empty_like(q)
    for ib, ih in ts.grid([b, h]):
        n = lengths[ib]
        qv = q[ib, ih, :].float()
        m = ts.full([1], float("-inf"), dtype=torch.float32)
        den = ts.zeros([1], dtype=torch.float32)
        acc = ts.zeros([1, d], dtype=torch.float32)
        for tn in ts.tile(k_cache.size(2), block_size=32):
            sc = (k_cache[ib, ih, tn, :].float() * qv[None, :]).sum(dim=1)[None, :]
            sc = torch.where(tn.index[None, :] < n, sc / math.sqrt(d), float("-inf"))
            m, den, acc = online_step(sc, m, den, acc, v_cache[ib, ih, tn, :].float())
        out[ib, ih, :] = (acc / den[:, None])[0, :]
    return out


@ts.kernel
def paged_attention(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor,
                    table: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Pages [P, PAGE, H, D]; table[b, j] is the page holding positions j*PAGE.. of batch b."""
    b, h, d = q.shape
    page = k_pages.size(1)
    out = torch.empty_like(q)
    for ib, ih in ts.grid([b, h]):
        n = lengths[ib]
        qv = q[ib, ih, :]
        m = ts.full([1], float("-inf"), dtype=torch.float32)
        den = ts.zeros([1], dtype=torch.float32)
        acc = ts.zeros([1, d], dtype=torch.float32)
        for tn in ts.tile(table.size(1) * page, block_size=16):
            blk = table[ib, tn.index // page]  # page of each position
            slot = tn.index % page
            sc = (k_pages[blk, slot, ih, :] * qv[None, :]).sum(dim=1)[None, :]
            sc = torch.where(tn.index[None, :] < n, sc / math.sqrt(d), float("-inf"))
            m, den, acc = online_step(sc, m, den, acc, v_pages[blk, slot, ih, :])
        out[ib, ih, :] = (acc / den[:, None])[0, :]
    return out


@ts.kernel
def paged_attention_by_page(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor,
                            table: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The same, one page per step (a scalar loop over the table) and a tile of heads,
    reading flattened [P*PAGE, H, D] views with one row block."""
    b, h, d = q.shape
    n_pages, page = k_pages.size(0), k_pages.size(1)
    k_rows = k_pages.reshape(n_pages * page, h, d)
    v_rows = v_pages.reshape(n_pages * page, h, d)
    out = torch.empty_like(q)
    for ib, th in ts.tile([b, h], block_size=[1, None]):
        n = lengths[ib.begin]
        qv = q[ib.begin, th, :]
        m = ts.full([th], float("-inf"), dtype=torch.float32)
        den = ts.zeros([th], dtype=torch.float32)
        acc = ts.zeros([th, d], dtype=torch.float32)
        for j in range(table.size(1)):
            for tp in ts.tile(page, block_size=page):
                rows = table[ib.begin, j] * page + tp.index
                sc = (k_rows[rows, th, :] * qv[None, :, :]).sum(dim=2).T / math.sqrt(d)
                sc = torch.where((j * page + tp.index)[None, :] < n, sc, float("-inf"))
                m_new = torch.maximum(m, sc.amax(dim=1))
                p = torch.exp(sc - m_new[:, None])
                alpha = torch.exp(m - m_new)
                den = den * alpha + p.sum(dim=1)
                acc = acc * alpha[:, None] + (p.T[:, :, None] * v_rows[rows, th, :]).sum(dim=0)
                m = m_new
        out[ib.begin, th, :] = acc / den[:, None]
    return out


@pytest.mark.parametrize("mode", MODES)
def test_decode_and_paged_attention(mode: str, request: pytest.FixtureRequest,
                                    poison_empty: None) -> None:
    use(mode, request)
    bsz, heads, dim, t_max = 3, 2, 16, 90
    q = torch.randn(bsz, heads, dim)
    k_cache, v_cache = torch.randn(bsz, heads, t_max, dim), torch.randn(bsz, heads, t_max, dim)
    lengths = torch.tensor([90, 17, 1])
    want = torch.stack([reference(q[i][:, None], k_cache[i, :, :n], v_cache[i, :, :n])[:, 0]
                        for i, n in enumerate(lengths.tolist())])
    close(decode_attention(q, k_cache, v_cache, lengths), want, **TOL)

    page, n_pages = 16, 10
    k_pages, v_pages = torch.randn(n_pages, page, heads, dim), torch.randn(n_pages, page, heads, dim)
    table = torch.randint(0, n_pages, (bsz, 4), dtype=torch.int32)
    lengths = torch.tensor([64, 20, 1], dtype=torch.int32)
    want = []
    for i, n in enumerate(lengths.tolist()):
        kk = k_pages[table[i].long()].reshape(-1, heads, dim)[:n].transpose(0, 1)
        vv = v_pages[table[i].long()].reshape(-1, heads, dim)[:n].transpose(0, 1)
        want.append(reference(q[i][:, None], kk, vv)[:, 0])
    close(paged_attention(q, k_pages, v_pages, table, lengths), torch.stack(want), **TOL)
    close(paged_attention_by_page(q, k_pages, v_pages, table, lengths), torch.stack(want), **TOL)


@ts.kernel
def flash_decoding(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   splits: int = 4) -> torch.Tensor:
    """q [BH, D], k/v [BH, T, D]: each (row, split) program writes its partial max, sum
    and output; a second launch rescales and combines them."""
    bh, t, d = k.shape
    chunk = (t + splits - 1) // splits
    part_m = torch.empty([bh, splits], dtype=torch.float32, device=q.device)
    part_l = torch.empty([bh, splits], dtype=torch.float32, device=q.device)
    part_o = torch.empty([bh, splits, d], dtype=torch.float32, device=q.device)
    for ib, isp in ts.grid([bh, splits]):
        qv = q[ib, :].float()
        m = ts.full([1], float("-inf"), dtype=torch.float32)
        den = ts.zeros([1], dtype=torch.float32)
        acc = ts.zeros([1, d], dtype=torch.float32)
        for tn in ts.tile(isp * chunk, min(isp * chunk + chunk, t), block_size=32):
            sc = (k[ib, tn, :].float() * qv[None, :]).sum(dim=1)[None, :] / math.sqrt(d)
            m, den, acc = online_step(sc, m, den, acc, v[ib, tn, :].float())
        part_m[ib, isp] = m[0]
        part_l[ib, isp] = den[0]
        part_o[ib, isp, :] = acc[0, :]
    out = torch.empty_like(q)
    for tb in ts.tile(bh):
        pm = part_m[tb, :]
        w = torch.where(pm == float("-inf"), 0.0, torch.exp(pm - pm.amax(dim=1, keepdim=True)))
        num = (part_o[tb, :, :] * w[:, :, None]).sum(dim=1)
        out[tb, :] = (num / (part_l[tb, :] * w).sum(dim=1)[:, None]).to(q.dtype)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_flash_decoding_with_a_combine_kernel(mode: str, request: pytest.FixtureRequest,
                                              poison_empty: None) -> None:
    use(mode, request)
    q, k, v = torch.randn(6, 16), torch.randn(6, 70, 16), torch.randn(6, 70, 16)
    want = reference(q[:, None], k, v)[:, 0]
    close(flash_decoding(q, k, v), want, **TOL)
    close(flash_decoding(q, k, v, splits=32), want, **TOL)  # empty splits: weight 0


@ts.kernel
def scatter_permuted(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm, tn in ts.tile(x.size(), block_size=[32, 32]):
        r, c = rows[tm], cols[tn]
        out[r[:, None], c[None, :]] = x[tm, tn] * 2 + x[r[:, None], c]
    return out


@ts.kernel
def hist2d(x: torch.Tensor, y: torch.Tensor, bins: int) -> torch.Tensor:
    h = torch.zeros([bins, bins], dtype=torch.int32, device=x.device)
    for t in ts.tile(x.size(0), block_size=64):
        bx = torch.clamp((x[t] * bins).to(torch.int32), 0, bins - 1)
        by = torch.clamp((y[t] * bins).to(torch.int32), 0, bins - 1)
        ts.atomic_add(h, [bx, by], 1)
    return h


@ts.kernel
def gather3(x: torch.Tensor, i: torch.Tensor, j: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    out = torch.empty(i.shape, dtype=x.dtype, device=x.device)
    for t in ts.tile(i.size(0)):
        out[t] = x[i[t], j[t], k[t]]
    return out


@ts.kernel
def separated_blocks(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    out = torch.empty([idx.size(0), x.size(1)], device=x.device)
    for t in ts.tile(idx.size(0), block_size=32):
        i = idx[t]
        out[t, :] = x[i, :, i]
    return out


@pytest.mark.parametrize("mode", MODES)
def test_integer_blocks_pair_up_like_torch(mode: str, request: pytest.FixtureRequest,
                                           poison_empty: None) -> None:
    use(mode, request)
    x, rows, cols = torch.randn(40, 50), torch.randperm(40), torch.randperm(50)
    want = torch.empty_like(x)
    want[rows[:, None], cols[None, :]] = x * 2 + x[rows[:, None], cols]
    assert torch.equal(scatter_permuted(x, rows, cols), want)
    x, y = torch.rand(500), torch.rand(500)
    want = torch.zeros(8, 8, dtype=torch.int32)
    want.index_put_(((x * 8).long().clamp(0, 7), (y * 8).long().clamp(0, 7)),
                    torch.ones(500, dtype=torch.int32), accumulate=True)
    assert torch.equal(hist2d(x, y, 8), want)
    x = torch.randn(5, 6, 7)
    i, j, k = torch.randint(0, 5, (50,)), torch.randint(0, 6, (50,)), torch.randint(0, 7, (50,))
    assert torch.equal(gather3(x, i, j, k), x[i, j, k])


def test_separated_integer_blocks_are_refused(compiled_mode: None) -> None:
    with pytest.raises(ts.KernelTypeError, match="separated by a tile") as info:
        separated_blocks(torch.randn(8, 9, 8), torch.randint(0, 8, (5,)))
    assert "next to each other" in str(info.value) and "x[i, :, i]" in str(info.value)
