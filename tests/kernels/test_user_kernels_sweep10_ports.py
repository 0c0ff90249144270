"""Helion examples ported the way a Helion user would, in both modes against torch eager:
the squeeze-and-excitation block (forward storing two intermediates and reading one back in
the same program, and its three backward kernels as separate launches where Helion puts
``hl.barrier()``), FP8 attention (e4m3 dots with an online exp2 softmax), and the two-pass
RMS-norm backward (per-program partial rows of grad_w over an inner ``ts.tile(mb.begin,
mb.end)``, summed on the host; ``x.new_zeros`` in device code); host arithmetic on a ``ts.register_block_size`` symbol (Helion sizes the
partials by it) is refused with the way around.

Example:
    pytest -q tests/kernels/test_user_kernels_sweep10_ports.py
"""

from __future__ import annotations

import math

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use


@ts.kernel
def se_forward(x: torch.Tensor, a: torch.Tensor,
               b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x * sigmoid(relu(x @ a) @ b)`` with ``c = relu(x @ a)`` and ``d`` kept for backward."""
    m, n = x.size()
    k = a.size(1)
    out = torch.empty([m, n], dtype=x.dtype, device=x.device)
    c = torch.empty([m, k], dtype=x.dtype, device=x.device)
    d = torch.empty([m, n], dtype=x.dtype, device=x.device)
    for tm in ts.tile(m, block_size=32):
        for tk in ts.tile(k, block_size=32):
            c[tm, tk] = torch.relu(x[tm, :] @ a[:, tk])
        for tn in ts.tile(n, block_size=32):
            acc = ts.zeros([tm, tn], dtype=torch.float32)
            for tk in ts.tile(k, block_size=32):
                acc = torch.addmm(acc, c[tm, tk], b[tk, tn])
            d[tm, tn] = torch.sigmoid(acc.to(x.dtype))
            out[tm, tn] = x[tm, tn] * d[tm, tn]
    return out, c, d


@ts.kernel
def se_backward(grad_out: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                c: torch.Tensor,
                d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad_x, grad_a, grad_b; each top-level loop is one launch (Helion's barriers)."""
    m, n = x.size()
    k = a.size(1)
    grad_cb = torch.empty([m, n], dtype=x.dtype, device=x.device)
    grad_c = torch.empty([m, k], dtype=x.dtype, device=x.device)
    grad_x = torch.empty([m, n], dtype=x.dtype, device=x.device)
    grad_a = torch.empty([n, k], dtype=x.dtype, device=x.device)
    grad_b = torch.empty([k, n], dtype=x.dtype, device=x.device)
    for tm, tn in ts.tile([m, n], block_size=32):
        dv = d[tm, tn]
        grad_cb[tm, tn] = grad_out[tm, tn] * x[tm, tn] * dv * (1.0 - dv)
    for tm, tk in ts.tile([m, k], block_size=32):
        acc = ts.zeros([tm, tk], dtype=torch.float32)
        for tn in ts.tile(n, block_size=32):
            acc = torch.addmm(acc, grad_cb[tm, tn], b[tk, tn].T)
        grad_c[tm, tk] = acc.to(x.dtype) * (c[tm, tk] > 0)
    for tm, tn in ts.tile([m, n], block_size=32):
        acc = ts.zeros([tm, tn], dtype=torch.float32)
        for tk in ts.tile(k, block_size=32):
            acc = torch.addmm(acc, grad_c[tm, tk], a[tn, tk].T)
        grad_x[tm, tn] = grad_out[tm, tn] * d[tm, tn] + acc.to(x.dtype)
    for tn, tk in ts.tile([n, k], block_size=32):
        acc = ts.zeros([tn, tk], dtype=torch.float32)
        for tm in ts.tile(m, block_size=32):
            acc = torch.addmm(acc, x[tm, tn].T, grad_c[tm, tk])
        grad_a[tn, tk] = acc
    for tk, tn in ts.tile([k, n], block_size=32):
        acc = ts.zeros([tk, tn], dtype=torch.float32)
        for tm in ts.tile(m, block_size=32):
            acc = torch.addmm(acc, c[tm, tk].T, grad_cb[tm, tn])
        grad_b[tk, tn] = acc
    return grad_x, grad_a, grad_b


@pytest.mark.parametrize("mode", MODES)
def test_squeeze_and_excitation_forward_and_backward(mode: str, request: pytest.FixtureRequest,
                                                     poison_empty: None) -> None:
    use(mode, request)
    x, a, b = torch.randn(70, 48) / 4, torch.randn(48, 40) / 4, torch.randn(40, 48) / 4
    xd, ad, bd = (t.double().requires_grad_() for t in (x, a, b))
    want = xd * torch.sigmoid(torch.relu(xd @ ad) @ bd)
    grad_out = torch.randn(70, 48)
    want.backward(grad_out.double())
    out, c, d = se_forward(x, a, b)
    close(out, want.detach(), atol=1e-5)
    close(c, torch.relu(xd @ ad).detach(), atol=1e-5)
    gx, ga, gb = se_backward(grad_out, x, a, b, c, d)
    for got, ref in ((gx, xd), (ga, ad), (gb, bd)):
        close(got, ref.grad, atol=1e-4)


@ts.kernel
def fp8_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: int,
                  heads: int) -> torch.Tensor:
    """Helion's fp8_attention: q, k ``[bh, s, d]`` and v ``[bh, d, s]`` in e4m3, exp2 softmax."""
    bhs, seq, dim = q.size()
    out = torch.empty([batch, heads, seq, dim], dtype=torch.float8_e4m3fn, device=q.device)
    sm_scale = 1.0 / math.sqrt(float(dim)) * 1.44269504
    for bh in ts.grid(bhs):
        b = bh // heads
        h = bh % heads
        for tm in ts.tile(seq, block_size=32):
            m_i = ts.full([tm], float("-inf"), dtype=torch.float32)
            l_i = ts.full([tm], 0.0, dtype=torch.float32)
            acc = ts.zeros([tm, dim], dtype=torch.float32)
            q_tile = q[bh, tm, :]
            for tn in ts.tile(seq, block_size=32):
                qk = ts.dot(q_tile, k[bh, tn, :].transpose(0, 1)) * sm_scale
                m_new = torch.maximum(m_i, torch.amax(qk, dim=-1))
                p = torch.exp2(qk - m_new[:, None])
                alpha = torch.exp2(m_i - m_new)
                l_i = l_i * alpha + torch.sum(p, dim=-1)
                acc = ts.dot(p.to(v.dtype), v[bh, :, tn].t(), acc=acc * alpha[:, None])
                m_i = m_new
            out[b, h, tm, :] = (acc / l_i[:, None]).to(torch.float8_e4m3fn)
    return out


def _attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """float64 attention of the fp8 inputs (v pre-transposed, as the kernel takes it)."""
    s = q.double() @ k.double().transpose(1, 2) / math.sqrt(q.size(2))
    return torch.softmax(s, dim=-1) @ v.double().transpose(1, 2)


@pytest.mark.parametrize("mode", MODES)
def test_fp8_attention(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    batch, heads, seq, dim = 2, 2, 80, 32
    q, k, v = (torch.randn(batch * heads, seq, dim) for _ in range(3))
    q8, k8 = q.to(torch.float8_e4m3fn), k.to(torch.float8_e4m3fn)
    v8 = v.transpose(1, 2).contiguous().to(torch.float8_e4m3fn)
    got = fp8_attention(q8, k8, v8, batch, heads)
    assert got.dtype == torch.float8_e4m3fn
    want = _attention_reference(q8, k8, v8).view(batch, heads, seq, dim)
    # P and the output are rounded to e4m3 (3 mantissa bits: steps of 6.25% relative)
    close(got.double(), want, atol=0.05, rtol=0.1)


@ts.kernel
def rms_norm_backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                      inv_rms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Helion's two-pass RMS-norm backward: each program sums grad_w over a block of rows
    (an inner tile loop from the outer tile's begin to its end) into its own partial row
    ``grad_weight[mb_cta.id, :]``; the host adds the partials."""
    m, n = x.size()
    m_block = 64  # Helion: hl.register_block_size(m); host arithmetic needs an int here
    grad_x = torch.empty_like(x)
    grad_weight = x.new_empty([(m + m_block - 1) // m_block, n], dtype=torch.float32)
    for mb_cta in ts.tile(m, block_size=m_block):
        grad_w_m = x.new_zeros(n, dtype=torch.float32)
        for mb in ts.tile(mb_cta.begin, mb_cta.end, block_size=32):
            x_m = x[mb, :].to(torch.float32)
            do_m = grad_out[mb, :].to(torch.float32)
            r = inv_rms[mb].to(torch.float32)[:, None]
            grad_w_m += (x_m * do_m * r).sum(0)
            w_do = weight[None, :].to(torch.float32) * do_m
            grad_x[mb, :] = (w_do * r - x_m * r * r * r * (w_do * x_m).mean(-1)[:, None]
                             ).to(x.dtype)
        grad_weight[mb_cta.id, :] = grad_w_m
    return grad_x, grad_weight.sum(0).to(weight.dtype)


@pytest.mark.parametrize("mode", MODES)
def test_rms_norm_backward_with_partial_rows(mode: str, request: pytest.FixtureRequest,
                                            poison_empty: None) -> None:
    use(mode, request)
    x, w = torch.randn(150, 48), torch.randn(48)
    inv_rms = torch.rsqrt(x.double().pow(2).mean(-1) + 1e-5).float()
    xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
    y = xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-5) * wd
    grad_out = torch.randn(150, 48)
    y.backward(grad_out.double())
    grad_x, grad_w = rms_norm_backward(grad_out, x, w, inv_rms)
    close(grad_x, xd.grad, atol=1e-4)
    close(grad_w, wd.grad, atol=1e-4)


@ts.kernel
def partials_sized_by_a_symbol(x: torch.Tensor) -> torch.Tensor:
    m = x.size(0)
    block = ts.register_block_size(32, 64)
    partial = torch.zeros([(m + block - 1) // block], dtype=torch.float32, device=x.device)
    for tm in ts.tile(m, block_size=block):
        partial[tm.id] = x[tm].sum()
    return partial.sum()


def test_host_arithmetic_on_a_block_size_symbol_is_refused(compiled_mode: None) -> None:
    with pytest.raises(ts.KernelError, match=r"(?s)register_block_size\(32, 64\).*block = 64"):
        partials_sized_by_a_symbol(torch.randn(100))


@ts.kernel
def new_blocks(x: torch.Tensor) -> torch.Tensor:
    """``x.new_full/new_ones`` with a tile in the shape: ``x``'s dtype unless ``dtype=``."""
    m, n = x.size()
    out = torch.empty([m, n], dtype=torch.float32, device=x.device)
    for tm in ts.tile(m, block_size=32):
        base = x.new_full([tm, n], 2)  # float16 like x
        out[tm, :] = (base * x[tm, :]).float() + x.new_ones([tm, n], dtype=torch.float32)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_new_factories_of_a_tensor_argument(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    x = torch.randn(50, 24).half()
    close(new_blocks(x), (2 * x).double() + 1)
