"""Complex tensors (Llama/Meta-style rotary embeddings and the complex arithmetic around them),
lowered as (real, imaginary) pairs: export + numpy runtime against torch eager in float64."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from tests.edge.test_ops import check
from torchship.edge import ExportError, export

torch.manual_seed(0)


# ----------------------------------------------------------------------------- Meta's llama code


def precompute_freqs_cis(dim: int, end: int, theta: float = 10000.0) -> torch.Tensor:
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: (dim // 2)].float() / dim))
    t = torch.arange(end, device=freqs.device)
    freqs = torch.outer(t, freqs).float()
    return torch.polar(torch.ones_like(freqs), freqs)


def reshape_for_broadcast(freqs_cis: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    ndim = x.ndim
    shape = [d if i == 1 or i == ndim - 1 else 1 for i, d in enumerate(x.shape)]
    return freqs_cis.view(*shape)


def apply_rotary_emb(xq: torch.Tensor, xk: torch.Tensor, freqs_cis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    xk_ = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
    freqs_cis = reshape_for_broadcast(freqs_cis, xq_)
    xq_out = torch.view_as_real(xq_ * freqs_cis).flatten(3)
    xk_out = torch.view_as_real(xk_ * freqs_cis).flatten(3)
    return xq_out.type_as(xq), xk_out.type_as(xk)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    bs, slen, n_kv_heads, head_dim = x.shape
    if n_rep == 1:
        return x
    return x[:, :, :, None, :].expand(bs, slen, n_kv_heads, n_rep, head_dim).reshape(bs, slen, n_kv_heads * n_rep, head_dim)


class Attention(nn.Module):
    """Meta's llama attention without the KV cache (grouped-query heads, complex RoPE)."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        self.wq = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=False)

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bsz, seqlen, _ = x.shape
        xq, xk, xv = self.wq(x), self.wk(x), self.wv(x)
        xq = xq.view(bsz, seqlen, self.n_heads, self.head_dim)
        xk = xk.view(bsz, seqlen, self.n_kv_heads, self.head_dim)
        xv = xv.view(bsz, seqlen, self.n_kv_heads, self.head_dim)
        xq, xk = apply_rotary_emb(xq, xk, freqs_cis=freqs_cis)
        keys = repeat_kv(xk, self.n_heads // self.n_kv_heads)
        values = repeat_kv(xv, self.n_heads // self.n_kv_heads)
        xq, keys, values = xq.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2)
        scores = torch.matmul(xq, keys.transpose(2, 3)) / math.sqrt(self.head_dim)
        if mask is not None:
            scores = scores + mask
        scores = F.softmax(scores.float(), dim=-1).type_as(xq)
        output = torch.matmul(scores, values)
        return self.wo(output.transpose(1, 2).contiguous().view(bsz, seqlen, -1))


def causal_mask(seqlen: int) -> torch.Tensor:
    return torch.triu(torch.full((seqlen, seqlen), float("-inf")), diagonal=1)


class RopeAttention(nn.Module):
    """The attention with ``freqs_cis`` a buffer (persistent or not), a plain tensor attribute
    (a lifted constant), or computed in forward by ``torch.polar``."""

    def __init__(self, source: str, dim: int = 32, max_len: int = 16) -> None:
        super().__init__()
        self.source, self.head_dim = source, dim // 4
        self.attention = Attention(dim, 4, 2)
        freqs = precompute_freqs_cis(self.head_dim, max_len)
        if source == "attribute":
            self.freqs_cis = freqs
        elif source != "in_forward":
            self.register_buffer("freqs_cis", freqs, persistent=source == "persistent_buffer")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.shape[1]
        if self.source == "in_forward":  # positions 0..s-1
            inv = 1.0 / (10000.0 ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))
            angles = torch.arange(s, dtype=torch.float32)[:, None] * inv[None, :]
            freqs_cis = torch.polar(torch.ones_like(angles), angles)
        else:
            freqs_cis = self.freqs_cis[:s]
        return self.attention(x, freqs_cis, causal_mask(s))


def _check_dynamic(model: nn.Module, ref_model: nn.Module, example: torch.Tensor, spec: dict, inputs: list[torch.Tensor],
                   tol: float) -> None:
    prog = export(model, (example,), spec)
    for x in inputs:
        got = prog.run(x.numpy())
        with torch.no_grad():
            ref = ref_model(x.double() if x.is_floating_point() else x).numpy()
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= tol * np.abs(ref).max()


@pytest.mark.parametrize("source", ["buffer", "persistent_buffer", "attribute", "in_forward"])
def test_llama_attention_complex_rope(source: str) -> None:
    model = RopeAttention(source).eval()
    ref_model = copy.deepcopy(model).double()  # (.double() leaves the complex64 freqs_cis as it is)
    _check_dynamic(model, ref_model, torch.randn(2, 8, 32), {"x": {1: Dim("seq", max=16)}},
                   [torch.randn(2, s, 32) for s in (1, 5, 16)], 2e-6)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim) + 0.1 * torch.randn(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class TransformerBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attention = Attention(dim, 4, 2)
        self.w1, self.w2, self.w3 = nn.Linear(dim, 96, bias=False), nn.Linear(96, dim, bias=False), nn.Linear(dim, 96, bias=False)
        self.attention_norm, self.ffn_norm = RMSNorm(dim), RMSNorm(dim)

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), freqs_cis, mask)
        g = self.ffn_norm(h)
        return h + self.w2(F.silu(self.w1(g)) * self.w3(g))


class Transformer(nn.Module):
    """Meta's llama Transformer (no KV cache): tokens -> logits, ``freqs_cis`` a plain attribute."""

    def __init__(self, vocab: int = 50, dim: int = 32, n_layers: int = 2, max_len: int = 32) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(TransformerBlock(dim) for _ in range(n_layers))
        self.norm, self.output = RMSNorm(dim), nn.Linear(dim, vocab, bias=False)
        self.freqs_cis = precompute_freqs_cis(dim // 4, max_len)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _bsz, seqlen = tokens.shape
        h = self.tok_embeddings(tokens)
        self.freqs_cis = self.freqs_cis.to(h.device)
        freqs_cis = self.freqs_cis[0:seqlen]
        mask = torch.hstack([torch.zeros((seqlen, 0)), causal_mask(seqlen)]).type_as(h)
        for layer in self.layers:
            h = layer(h, freqs_cis, mask)
        return self.output(self.norm(h)).float()


def test_llama_transformer_tokens_to_logits() -> None:
    model = Transformer().eval()
    ref_model = copy.deepcopy(model).double()
    _check_dynamic(model, ref_model, torch.randint(0, 50, (2, 6)), {"tokens": {1: Dim("seq", min=2, max=32)}},
                   [torch.randint(0, 50, (b, s)) for b, s in ((2, 2), (2, 11), (2, 32))], 2e-6)


def gemma_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """gemma_pytorch's apply_rotary_emb (halves, not interleaved pairs, as the complex parts)."""
    x_ = torch.view_as_complex(torch.stack(torch.chunk(x.transpose(1, 2).float(), 2, dim=-1), dim=-1))
    x_out = torch.view_as_real(x_ * freqs_cis).type_as(x)
    x_out = torch.cat(torch.chunk(x_out, 2, dim=-1), dim=-2)
    return x_out.reshape(x_out.shape[0], x_out.shape[1], x_out.shape[2], -1).transpose(1, 2)


class PositionRope(nn.Module):
    """freqs_cis rows picked by a positions input (``index_select`` and ``[]`` on a complex buffer)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("freqs_cis", precompute_freqs_cis(8, 32))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return gemma_rotary_emb(x, self.freqs_cis.index_select(0, pos)) - gemma_rotary_emb(x, self.freqs_cis[pos] * 2)


def test_rope_at_input_positions() -> None:
    model = PositionRope().eval()
    seq = Dim("seq", max=16)
    prog = export(model, (torch.randn(2, 5, 3, 8), torch.arange(5)), {"x": {1: seq}, "pos": {0: seq}})
    for n in (1, 9):
        x, pos = torch.randn(2, n, 3, 8), torch.randint(0, 32, (n,))
        ref = model(x.double(), pos).double().numpy()  # (.float() inside: float32 rotation)
        np.testing.assert_allclose(prog.run(x.numpy(), pos.numpy()), ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- complex ops


def _mixed(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Every supported complex op once: creation, arithmetic with tensors and numbers of both
    kinds, conj, reciprocal, casts, shape ops on complex values, real/imag/abs back to real."""
    fc = torch.polar(torch.ones_like(f) * 1.5, f)
    e = torch.exp(1j * f + 0.25)
    c = torch.complex(torch.cos(f), torch.sin(f))
    z = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
    w = z * fc + z * e - c * 2 + z * f + z.conj() * 0.5 + z / c + z * (1 + 2j) - (3 - z) / (1 - 2j)
    w = -(w + 1j / c - f + 2 - f / z)
    w = w.to(torch.complex128).to(torch.complex64)
    parts = [torch.view_as_real(w).flatten(-2), z.real, z.imag, z.abs(), w.transpose(0, 1).real.T,
             w[..., 1:].imag, w.unsqueeze(1).expand(-1, 2, -1)[:, 1].real,
             torch.view_as_real(torch.cat([w, z], -1)).sum(-1), w.to(torch.float32)]
    return torch.cat(parts, -1)


@pytest.mark.filterwarnings("ignore:Casting complex values to real")
@pytest.mark.parametrize("rows", [1, 3])
def test_complex_ops_match_torch(rows: int) -> None:
    check(_mixed, [torch.randn(rows, 8), torch.randn(rows, 4)], tol=1e-6)


def test_complex_constant_and_double_precision() -> None:
    # a complex128 parameter (a lifted constant), the program in float64
    def fn(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        z = torch.view_as_complex(x)
        return torch.view_as_real(z * w + w.conj())

    x = torch.randn(2, 3, 5, 2, dtype=torch.float64)
    w = torch.randn(5, dtype=torch.complex128)
    model = _Fn(fn, w).eval()
    got = export(model, (x,)).run(x.numpy())
    with torch.no_grad():
        ref = model(x).numpy()
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-13)


class _Fn(nn.Module):
    def __init__(self, fn: object, w: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        self.register_buffer("w", w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, self.w)


# ----------------------------------------------------------------------------- refused


class _Lambda(nn.Module):
    def __init__(self, fn: object) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs)


@pytest.mark.parametrize("fn,inputs,message", [
    (lambda x: torch.view_as_real(torch.view_as_complex(x).log()), (torch.randn(3, 2),), "aten.log.default on complex tensors"),
    (lambda x: torch.view_as_real(torch.view_as_complex(x).sqrt()), (torch.randn(3, 2),), "aten.sqrt.default on complex"),
    (lambda z: torch.view_as_real(z * 2), (torch.randn(3, dtype=torch.complex64),), "is a complex tensor; pass torch.view_as_real"),
    (lambda x: torch.view_as_complex(x) * 2, (torch.randn(3, 2),), "return torch.view_as_real"),
    (lambda x: torch.cat([torch.view_as_complex(x), x[:, 0]]), (torch.randn(3, 2),), "cat of complex and real"),
])
def test_unsupported_complex_is_refused_by_name(fn: object, inputs: tuple[torch.Tensor, ...], message: str) -> None:
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace(".", r"\.")):
        export(_Lambda(fn).eval(), inputs)
