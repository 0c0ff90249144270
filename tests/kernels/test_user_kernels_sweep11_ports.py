"""Kernels from Helion's examples written the way a Helion user would, in both modes against
torch eager in float64: a fused linear + cross entropy over chunks of rows (online
log-sum-exp over vocabulary tiles, logits never stored), a grouped GEMM over a list of row
counts (one program per group, row tiles between device-side bounds), a segment sum with
atomics, and a 2-D convolution as an implicit GEMM (the padding lanes masked with
``ts.load(extra_mask=)``).

Example:
    pytest -q tests/kernels/test_user_kernels_sweep11_ports.py
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use


@ts.kernel
def fused_linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor,
                               target: torch.Tensor) -> torch.Tensor:
    """Mean of ``cross_entropy(x @ weight.T, target)`` without the ``[n, vocab]`` logits."""
    n, h = x.size()
    vocab = weight.size(0)
    losses = torch.empty([n], dtype=torch.float32, device=x.device)
    for tm in ts.tile(n, block_size=32):
        t = target[tm]
        m_i = ts.full([tm], float("-inf"), dtype=torch.float32)
        s_i = ts.zeros([tm], dtype=torch.float32)
        picked = ts.zeros([tm], dtype=torch.float32)
        for tv in ts.tile(vocab, block_size=32):
            acc = ts.zeros([tm, tv], dtype=torch.float32)
            for tk in ts.tile(h, block_size=32):
                acc = ts.dot(x[tm, tk], weight[tv, tk].T, acc)
            logits = torch.where(tv.index[None, :] < vocab, acc, float("-inf"))
            m_new = torch.maximum(m_i, logits.amax(dim=1))
            s_i = s_i * torch.exp(m_i - m_new) + torch.exp(logits - m_new[:, None]).sum(dim=1)
            m_i = m_new
            picked = picked + torch.where(tv.index[None, :] == t[:, None], logits, 0.0).sum(1)
        losses[tm] = m_i + torch.log(s_i) - picked
    return losses.mean()


@pytest.mark.parametrize("mode", MODES)
def test_fused_linear_cross_entropy(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    x, w = torch.randn(70, 48), torch.randn(100, 48) * 0.3
    target = torch.randint(0, 100, (70,))
    want = F.cross_entropy(x.double() @ w.double().T, target)
    close(fused_linear_cross_entropy(x, w, target), want, atol=1e-4)


@ts.kernel
def grouped_gemm(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``out[offsets[g]:offsets[g + 1]] = a[offsets[g]:offsets[g + 1]] @ b[g]`` for each group
    (Helion's grouped GEMM over a packed list of row counts)."""
    total, k = a.size()
    groups, _, n = b.size()
    out = torch.empty([total, n], dtype=torch.float32, device=a.device)
    for g in ts.grid(groups):
        start = offsets[g]
        end = offsets[g + 1]
        for tm in ts.tile(start, end, block_size=32):
            for tn in ts.tile(n, block_size=32):
                acc = ts.zeros([tm, tn], dtype=torch.float32)
                for tk in ts.tile(k, block_size=32):
                    acc = ts.dot(a[tm, tk], b[g, tk, tn], acc)
                out[tm, tn] = acc
    return out


@pytest.mark.parametrize("mode", MODES)
def test_grouped_gemm(mode: str, request: pytest.FixtureRequest, poison_empty: None) -> None:
    use(mode, request)
    sizes = [33, 0, 5, 64, 1]
    offsets = torch.tensor([0] + torch.tensor(sizes).cumsum(0).tolist())
    a, b = torch.randn(sum(sizes), 40), torch.randn(len(sizes), 40, 36)
    want = torch.cat([a[s:e].double() @ b[g].double()
                      for g, (s, e) in enumerate(zip(offsets[:-1], offsets[1:]))])
    close(grouped_gemm(a, b, offsets), want, atol=1e-4)


@ts.kernel
def segment_sum(x: torch.Tensor, segment_ids: torch.Tensor, segments: int) -> torch.Tensor:
    """``out[s] = x[segment_ids == s].sum(0)`` by atomic adds (ids in any order)."""
    n, d = x.size()
    out = torch.zeros([segments, d], dtype=torch.float32, device=x.device)
    for tm, tn in ts.tile([n, d], block_size=[32, 32]):
        ts.atomic_add(out, [segment_ids[tm], tn], x[tm, tn].to(torch.float32))
    return out


@pytest.mark.parametrize("mode", MODES)
def test_segment_sum(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    x, ids = torch.randn(150, 40), torch.randint(0, 7, (150,))
    want = torch.zeros(7, 40, dtype=torch.float64).index_add_(0, ids, x.double())
    close(segment_sum(x, ids, 7), want, atol=1e-4)


@ts.kernel
def conv2d_nhwc(x: torch.Tensor, w: torch.Tensor, pad: int) -> torch.Tensor:
    """Stride-1 2-D convolution of an NHWC image with an ``[kh, kw, c, co]`` filter as an
    implicit GEMM: rows are output pixels, the reduction runs over ``kh * kw * c``; the
    input pixel of each (row, k) lane is gathered, the padding lanes masked to 0."""
    nb, hh, ww, c = x.size()
    kh, kw, _, co = w.size()
    oh = hh + 2 * pad - kh + 1
    ow = ww + 2 * pad - kw + 1
    red = kh * kw * c
    x_flat = x.view(-1)
    w_flat = w.view(red, co)
    out = torch.empty([nb * oh * ow, co], dtype=torch.float32, device=x.device)
    for tr, tc in ts.tile([nb * oh * ow, co], block_size=[32, 32]):
        r = tr.index
        img = r // (oh * ow)
        py = (r // ow) % oh
        px = r % ow
        acc = ts.zeros([tr, tc], dtype=torch.float32)
        for tk in ts.tile(red, block_size=32):
            q = tk.index
            iy = py[:, None] + (q // (kw * c))[None, :] - pad
            ix = px[:, None] + ((q // c) % kw)[None, :] - pad
            valid = (iy >= 0) & (iy < hh) & (ix >= 0) & (ix < ww)
            idx = ((img[:, None] * hh + iy) * ww + ix) * c + (q % c)[None, :]
            patch = ts.load(x_flat, [idx], extra_mask=valid, other=0.0)
            acc = ts.dot(patch, w_flat[tk, tc], acc)
        out[tr, tc] = acc
    return out.view(nb, oh, ow, co)


@pytest.mark.parametrize("mode", MODES)
def test_conv2d_implicit_gemm(mode: str, request: pytest.FixtureRequest,
                              poison_empty: None) -> None:
    use(mode, request)
    x, w = torch.randn(2, 9, 7, 5), torch.randn(3, 3, 5, 40)
    want = F.conv2d(x.double().permute(0, 3, 1, 2), w.double().permute(3, 2, 0, 1), padding=1)
    close(conv2d_nhwc(x, w, 1), want.permute(0, 2, 3, 1), atol=1e-4)
