"""Complex tensors (Llama/Meta-style rotary embeddings and the complex arithmetic around them),
lowered as (real, imaginary) pairs: export + numpy runtime against torch eager in float64."""

from __future__ import annotations

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


class Attention(nn.Module):
    """Llama attention with complex RoPE; ``freqs_cis`` a buffer, or computed in forward."""

    def __init__(self, dim: int, heads: int, max_len: int, buffer: bool, persistent: bool = False) -> None:
        super().__init__()
        self.heads, self.head_dim, self.buffer = heads, dim // heads, buffer
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(dim, dim, bias=False) for _ in range(4))
        if buffer:
            self.register_buffer("freqs_cis", precompute_freqs_cis(self.head_dim, max_len), persistent=persistent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        xq, xk, xv = (w(x).view(b, s, self.heads, self.head_dim) for w in (self.wq, self.wk, self.wv))
        if self.buffer:
            freqs_cis = self.freqs_cis[:s]
        else:  # positions 0..s-1, computed in forward
            inv = 1.0 / (10000.0 ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))
            angles = torch.arange(s, dtype=torch.float32)[:, None] * inv[None, :]
            freqs_cis = torch.polar(torch.ones_like(angles), angles)
        xq, xk = apply_rotary_emb(xq, xk, freqs_cis)
        xq, xk, xv = (t.transpose(1, 2) for t in (xq, xk, xv))
        mask = torch.full((s, s), float("-inf")).triu(1)
        scores = xq @ xk.transpose(2, 3) / math.sqrt(self.head_dim) + mask
        out = F.softmax(scores.float(), dim=-1).type_as(xq) @ xv
        return self.wo(out.transpose(1, 2).reshape(b, s, -1))


@pytest.mark.parametrize("buffer,persistent", [(True, False), (True, True), (False, False)],
                         ids=["buffer", "persistent_buffer", "in_forward"])
def test_llama_attention_complex_rope(buffer: bool, persistent: bool) -> None:
    model = Attention(32, 4, 16, buffer, persistent).eval()
    prog = export(model, (torch.randn(2, 8, 32),), {"x": {1: Dim("seq", max=16)}})
    ref_model = Attention(32, 4, 16, buffer, persistent).double().eval()
    ref_model.load_state_dict(model.state_dict())
    for seq in (1, 5, 16):
        x = torch.randn(2, seq, 32)
        got = prog.run(x.numpy())
        with torch.no_grad():
            ref = ref_model(x.double()).numpy()
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 2e-6 * np.abs(ref).max()


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
    (lambda x: torch.view_as_complex(x).angle(), (torch.randn(3, 2),), "aten.angle.default on complex tensors"),
    (lambda x: torch.view_as_real(torch.view_as_complex(x).sqrt()), (torch.randn(3, 2),), "aten.sqrt.default on complex"),
    (lambda z: torch.view_as_real(z * 2), (torch.randn(3, dtype=torch.complex64),), "is a complex tensor; pass torch.view_as_real"),
    (lambda x: torch.view_as_complex(x) * 2, (torch.randn(3, 2),), "return torch.view_as_real"),
    (lambda x: torch.cat([torch.view_as_complex(x), x[:, 0]]), (torch.randn(3, 2),), "cat of complex and real"),
])
def test_unsupported_complex_is_refused_by_name(fn: object, inputs: tuple[torch.Tensor, ...], message: str) -> None:
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace(".", r"\.")):
        export(_Lambda(fn).eval(), inputs)
