"""More kernels written as Helion users write them, in both modes against torch eager: a
top-p (nucleus) sampler (sort, cumulative mass, a draw from the kept tokens), rotary
embedding fused into attention (the rotated halves dotted separately: no ``cat`` of blocks),
and a causal variant with the rotated query computed once per tile.

Example:
    pytest -q tests/kernels/test_user_kernels_sweep11_sampling.py
"""

from __future__ import annotations

import math

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use


@ts.kernel
def top_p_sample(probs: torch.Tensor, u: torch.Tensor, top_p: float) -> torch.Tensor:
    """Per row: the smallest set of most likely tokens whose mass reaches ``top_p``; the token
    whose cumulative kept mass first exceeds ``u * kept mass``."""
    b, v = probs.size()
    out = torch.empty([b], dtype=torch.int64, device=probs.device)
    for tb in ts.tile(b, block_size=32):
        p = probs[tb, :]
        sp, si = torch.sort(p, dim=1, descending=True)
        before = torch.cumsum(sp, dim=1) - sp
        kept = torch.where(before < top_p, sp, 0.0)
        goal = u[tb] * kept.sum(dim=1)
        rank = (torch.cumsum(kept, dim=1) <= goal[:, None]).to(torch.int32).sum(dim=1)
        pos = torch.arange(0, v, device=probs.device)
        out[tb] = torch.where(pos[None, :] == rank[:, None], si, 0).sum(dim=1)
    return out


def _top_p_reference(probs: torch.Tensor, u: torch.Tensor, top_p: float) -> torch.Tensor:
    sp, si = probs.double().sort(dim=1, descending=True)
    kept = torch.where(sp.cumsum(1) - sp < top_p, sp, 0.0)
    goal = u.double() * kept.sum(1)
    rank = (kept.cumsum(1) <= goal[:, None]).sum(1)
    return si.gather(1, rank[:, None]).squeeze(1)


@pytest.mark.parametrize("mode", MODES)
def test_top_p_sampler(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    # distinct dyadic probabilities: sums are exact in float32, the sort has no ties
    probs = torch.stack([torch.randperm(64) + 1 for _ in range(40)]).float() / 2048
    u = (torch.randint(0, 1024, (40,)).float() * 2 + 1) / 2048
    got = top_p_sample(probs, u, 0.6)
    want = _top_p_reference(probs, u, 0.6)
    assert torch.equal(got, want)
    kept = probs.gather(1, got[:, None])
    assert bool((kept > 0).all())


@ts.kernel
def rotary_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor,
                     sin: torch.Tensor, causal: bool) -> torch.Tensor:
    """``softmax(rope(q) @ rope(k).T / sqrt(d)) @ v`` per batch-head (rotate-half rotary);
    the halves of the rotated q and k enter the scores as two dots."""
    bh, s, d = q.size()
    half = d // 2
    scale = 1.0 / math.sqrt(d)
    out = torch.empty_like(q)
    for g, tm in ts.tile([bh, s], block_size=[1, 32]):
        c, sn = cos[tm, :], sin[tm, :]
        q1, q2 = q[g, tm, :half], q[g, tm, half:]
        r1 = (q1 * c - q2 * sn) * scale
        r2 = (q2 * c + q1 * sn) * scale
        m_i = ts.full([g, tm], float("-inf"), dtype=torch.float32)
        l_i = ts.zeros([g, tm], dtype=torch.float32)
        acc = ts.zeros([g, tm, d], dtype=torch.float32)
        for tn in ts.tile(s, block_size=32):
            kc, ks = cos[tn, :], sin[tn, :]
            k1, k2 = k[g, tn, :half], k[g, tn, half:]
            kr1 = k1 * kc - k2 * ks
            kr2 = k2 * kc + k1 * ks
            sc = ts.dot(r1, kr1.transpose(-1, -2)) + ts.dot(r2, kr2.transpose(-1, -2))
            ok = tn.index[None, None, :] < s
            if causal:
                ok = ok & (tn.index[None, None, :] <= tm.index[None, :, None])
            sc = torch.where(ok, sc, float("-inf"))
            m_new = torch.maximum(m_i, sc.amax(dim=-1))
            alpha = torch.exp(m_i - m_new)
            p = torch.exp(sc - m_new[:, :, None])
            l_i = l_i * alpha + p.sum(dim=-1)
            acc = acc * alpha[:, :, None] + ts.dot(p, v[g, tn, :])
            m_i = m_new
        out[g, tm, :] = acc / l_i[:, :, None]
    return out


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("causal", [False, True])
def test_rotary_attention(mode: str, causal: bool, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    bh, s, d = 3, 45, 32
    q, k, v = (torch.randn(bh, s, d) for _ in range(3))
    inv = 1.0 / 10000 ** (torch.arange(0, d, 2).double() / d)
    ang = torch.arange(s).double()[:, None] * inv[None, :]
    cos, sin = ang.cos(), ang.sin()
    qr, kr = _rope(q.double(), cos, sin), _rope(k.double(), cos, sin)
    want = torch.nn.functional.scaled_dot_product_attention(qr, kr, v.double(), is_causal=causal)
    close(rotary_attention(q, k, v, cos.float(), sin.float(), causal), want, atol=1e-4)


@ts.kernel
def rotary_cat(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Helion's rotate-half: the block's halves cut at ``d // 2`` of an int argument (folded
    to a compile-time width, the kernel specialised on ``d``) and joined back with ``cat``."""
    s, d = x.size()
    out = torch.empty_like(x)
    for tm in ts.tile(s, block_size=32):
        v = x[tm, :]
        rot = torch.cat([-v[:, d // 2:], v[:, :d // 2]], dim=-1)
        out[tm, :] = v * cos[tm, :] + rot * sin[tm, :]
    return out


@pytest.mark.parametrize("mode", MODES)
def test_rotary_half_slices_of_an_int_argument(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    for d in (64, 32, 64):  # the kernel is specialised on d: a second width must not reuse
        x, cos, sin = (torch.randn(40, d) for _ in range(3))
        xd = x.double()
        want = xd * cos + torch.cat([-xd[:, d // 2:], xd[:, :d // 2]], -1) * sin
        close(rotary_cat(x, cos, sin), want)
