"""Kernels a user ports from Helion's examples or writes after reading docs/kernels.md, in
both modes against torch eager: fused QKV projection + RoPE + causal attention in one kernel
(slices of the fused row, rotate-half by chunk/cat, online softmax); a KV-cache append
through a slice at an int argument; int4 GEMM (nibbles sign-extended by shifts, the even and
odd columns of A as host views, two dots, bfloat16 — whose int-to-bf16 casts the Triton 3.9
interpreter got wrong); a top-k router with k an int argument; a grouped GEMM over an offsets
tensor; a window at a per-row start gathered with ``start + torch.arange``; a head's columns
through a host view or slices; Helion's causal depthwise conv1d (shifted gathers masked with
``torch.where``); and the refusal a port of Helion's int4 GEMM meets (its
interleave merges a tile), pointing to the host views.

Example:
    pytest -q tests/kernels/test_user_kernels_sweep9_ports.py
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


@ts.kernel
def qkv_rope_attention(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                       d: int) -> torch.Tensor:
    n = qkv.size(0)
    out = torch.empty([n, d], dtype=qkv.dtype, device=qkv.device)
    scale = 1.0 / math.sqrt(d)
    for tm in ts.tile(n, block_size=32):
        q = _rope(qkv[tm, 0:d].float(), cos[tm, :], sin[tm, :])
        m = torch.full([tm], float("-inf"), dtype=torch.float32)
        den = torch.zeros([tm], dtype=torch.float32)
        acc = torch.zeros([tm, d], dtype=torch.float32)
        for tn in ts.tile(n, block_size=32):
            k = _rope(qkv[tn, d:2 * d].float(), cos[tn, :], sin[tn, :])
            v = qkv[tn, 2 * d:3 * d].float()
            s = torch.where(tm.index[:, None] >= tn.index[None, :], (q @ k.T) * scale,
                            float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=1))
            p = torch.exp(s - m_new[:, None])
            alpha = torch.exp(m - m_new)
            den = den * alpha + p.sum(dim=1)
            acc = acc * alpha[:, None] + p @ v
            m = m_new
        out[tm, :] = (acc / den[:, None]).to(out.dtype)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_fused_qkv_rope_causal_attention(mode: str, request: pytest.FixtureRequest,
                                         poison_empty: None) -> None:
    use(mode, request)
    n, d = 70, 32
    qkv = torch.randn(n, 3 * d)
    cos, sin = torch.randn(n, d), torch.randn(n, d)
    q, k, v = qkv.double().split(d, dim=1)
    q, k = _rope(q, cos.double(), sin.double()), _rope(k, cos.double(), sin.double())
    want = F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True)[0]
    close(qkv_rope_attention(qkv, cos, sin, d), want.float(), atol=2e-5, rtol=1e-4)


@ts.kernel
def kv_append(cache: torch.Tensor, new: torch.Tensor, pos: int) -> None:
    n = new.size(1)
    for b in ts.grid(new.size(0)):
        cache[b, pos:pos + n, :] = new[b, :, :]


@pytest.mark.parametrize("mode", MODES)
def test_kv_cache_append_through_a_slice(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    cache = torch.randn(2, 100, 16)
    want = cache.clone()
    for pos, n in [(30, 40), (70, 30)]:
        new = torch.randn(2, n, 16)
        kv_append(cache, new, pos)
        want[:, pos:pos + n] = new
    assert torch.equal(cache, want)


@ts.kernel
def int4_matmul(a: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """a [m, k] bf16 times int4 weights [k, n] packed two rows a byte ([k // 2, n] int8:
    row 2i in the low nibble, 2i + 1 in the high one)."""
    m, n = a.size(0), packed.size(1)
    out = torch.empty([m, n], dtype=torch.bfloat16, device=a.device)
    a_even, a_odd = a[:, 0::2], a[:, 1::2]
    for tm, tn in ts.tile([m, n], block_size=[32, 32]):
        acc = ts.zeros([tm, tn], dtype=torch.float32)
        for tk in ts.tile(packed.size(0), block_size=32):
            b = packed[tk, tn].to(torch.int32)
            lo, hi = (b << 28) >> 28, b >> 4
            acc = ts.dot(a_even[tm, tk], lo.to(a.dtype), acc=acc)
            acc = ts.dot(a_odd[tm, tk], hi.to(a.dtype), acc=acc)
        out[tm, tn] = acc.to(torch.bfloat16)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_int4_gemm_with_host_views(mode: str, request: pytest.FixtureRequest,
                                   poison_empty: None) -> None:
    use(mode, request)
    m, k, n = 40, 128, 48
    a = torch.randn(m, k, dtype=torch.bfloat16)
    w = torch.randint(-8, 8, (k, n), dtype=torch.int8)
    pairs = w.reshape(k // 2, 2, n)
    packed = ((pairs[:, 0] & 0xF) | (pairs[:, 1] << 4)).to(torch.int8)
    want = a.double() @ w.double()
    close(int4_matmul(a, packed), want, atol=0.05, rtol=1e-2)  # bf16 output


@ts.kernel
def topk_router(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = logits.size(0)
    weights = torch.empty([n, k], dtype=torch.float32, device=logits.device)
    experts = torch.empty([n, k], dtype=torch.int64, device=logits.device)
    for tm in ts.tile(n, block_size=32):
        vals, idx = torch.topk(logits[tm, :].float(), k, dim=-1)
        weights[tm, :] = torch.softmax(vals, dim=-1)
        experts[tm, :] = idx
    return weights, experts


@pytest.mark.parametrize("mode", MODES)
def test_topk_router_with_k_an_argument(mode: str, request: pytest.FixtureRequest,
                                        poison_empty: None) -> None:
    use(mode, request)
    logits = torch.randn(50, 8)
    for k in (2, 4):  # one kernel per k
        weights, experts = topk_router(logits, k)
        vals, idx = torch.topk(logits, k, dim=-1)
        assert torch.equal(experts, idx)
        close(weights, torch.softmax(vals.double(), -1).float())


@ts.kernel
def grouped_gemm(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Rows offsets[g]:offsets[g + 1] of a times b[g]."""
    out = torch.empty([a.size(0), b.size(2)], dtype=torch.float32, device=a.device)
    for g in ts.grid(b.size(0)):
        start, end = offsets[g], offsets[g + 1]
        for tm, tn in ts.tile([start, 0], [end, b.size(2)], block_size=[32, 32]):
            acc = torch.zeros([tm, tn], dtype=torch.float32)
            for tk in ts.tile(a.size(1), block_size=32):
                acc = acc + a[tm, tk] @ b[g, tk, tn]
            out[tm, tn] = acc
    return out


@pytest.mark.parametrize("mode", MODES)
def test_grouped_gemm_over_offsets(mode: str, request: pytest.FixtureRequest,
                                   poison_empty: None) -> None:
    use(mode, request)
    sizes = torch.tensor([10, 0, 45, 33])
    offsets = torch.cat((torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)))
    a, b = torch.randn(int(offsets[-1]), 64), torch.randn(4, 64, 48)
    want = torch.cat([a[offsets[g]:offsets[g + 1]].double() @ b[g].double() for g in range(4)])
    close(grouped_gemm(a, b, offsets), want.float(), atol=1e-4)


@ts.kernel
def windows(x: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """32 values of each row from a start read on the device (not a slice: a gather)."""
    out = torch.empty([x.size(0), 32], dtype=x.dtype, device=x.device)
    for i in ts.grid(x.size(0)):
        out[i, :] = x[i, starts[i] + torch.arange(0, 32)]
    return out


@pytest.mark.parametrize("mode", MODES)
def test_window_at_a_device_start_is_a_gather(mode: str, request: pytest.FixtureRequest,
                                              poison_empty: None) -> None:
    use(mode, request)
    x, starts = torch.randn(5, 100), torch.tensor([0, 3, 50, 68, 10])
    want = torch.stack([x[i, starts[i]:starts[i] + 32] for i in range(5)])
    assert torch.equal(windows(x, starts), want)


@ts.kernel
def helion_int4(a: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """Helion's int4 GEMM as written there: the widened slice of a loads (its start moves on
    the device, its width 64 is known), the interleave that merges a tile is refused."""
    m, n = a.size(0), packed.size(1)
    out = torch.zeros([m, n], dtype=torch.float32, device=a.device)
    for tm, tn in ts.tile([m, n], block_size=[32, 32]):
        acc = ts.zeros([tm, tn], dtype=torch.float32)
        for tk in ts.tile(packed.size(0), block_size=32):
            b = packed[tk, tn].to(torch.float32)
            both = torch.stack([b, b], dim=1).reshape(tk.block_size * 2, tn.block_size)
            acc = ts.dot(a[tm, tk.begin * 2:tk.begin * 2 + 64], both, acc=acc)
        out[tm, tn] = acc
    return out


def test_helion_int4_interleave_points_to_host_views(compiled_mode: None) -> None:
    with pytest.raises(ts.KernelError) as info:
        helion_int4(torch.randn(32, 64), torch.zeros(32, 32, dtype=torch.int8))
    text = str(info.value)
    assert "a size of `torch.stack([b, b], dim=1).reshape(tk.block_size * 2" in text, text
    assert "A[:, 0::2], A[:, 1::2]" in text and "test_user_kernels_sweep9_ports.py" in text


@ts.kernel
def head_slices(qkv: torch.Tensor, d: int, which: str) -> torch.Tensor:
    """q * k + v per head of a fused [n, 3 * heads * d] projection, through the host view
    [n, 3, heads, d] indexed by the head or through slices at the head's columns."""
    n, heads = qkv.size(0), qkv.size(1) // (3 * d)
    out = torch.empty([n, heads, d], dtype=qkv.dtype, device=qkv.device)
    q = qkv.view(n, 3, heads, d)
    for h, tm in ts.tile([heads, n], block_size=[1, 32]):
        if which == "slice":
            c = h.begin * d
            out[tm, h.begin, :] = qkv[tm, c:c + d] * qkv[tm, heads * d + c:(heads + 1) * d + c] \
                + qkv[tm, 2 * heads * d + c:(2 * heads + 1) * d + c]
        else:
            out[tm, h, :] = q[tm, 0, h, :] * q[tm, 1, h, :] + q[tm, 2, h, :]
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("which", ["view", "slice"])
def test_heads_of_a_fused_projection(mode: str, request: pytest.FixtureRequest, which: str,
                                     poison_empty: None) -> None:
    use(mode, request)
    qkv = torch.randn(40, 3 * 4 * 16)
    q = qkv.view(40, 3, 4, 16)
    assert torch.equal(head_slices(qkv, 16, which), q[:, 0] * q[:, 1] + q[:, 2])


@ts.kernel
def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Helion's causal depthwise conv1d: each tap a gather at shifted positions, clamped and
    masked with torch.where (Helion's hl.load(..., extra_mask=))."""
    batch, channels, seqlen = x.shape
    width = weight.size(1)
    out = torch.empty_like(x)
    for b, td, tt in ts.tile([batch, channels, seqlen], block_size=[1, 32, 32]):
        acc = torch.zeros([td, tt], dtype=torch.float32) + bias[td][:, None]
        for tap in ts.static_range(width):
            pos = tt.index - (width - 1 - tap)
            v = x[b.begin, td, torch.clamp(pos, min=0)].float()
            acc = acc + torch.where(pos[None, :] >= 0, v, 0.0) * weight[td, tap][:, None]
        out[b, td, tt] = acc[None, :, :].to(out.dtype)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_causal_conv1d_port(mode: str, request: pytest.FixtureRequest,
                            poison_empty: None) -> None:
    use(mode, request)
    x, w, bias = torch.randn(2, 40, 70), torch.randn(40, 4), torch.randn(40)
    want = F.conv1d(F.pad(x.double(), (3, 0)), w.double().unsqueeze(1), bias.double(),
                    groups=40)
    close(causal_conv1d(x, w, bias), want.float(), atol=1e-5)
