"""The torchship example kernels written in Helion (the peer), for benchmarks/kernels.py.

Written against Helion 1.4.0 (the newest release that imports with torch 2.11 on the GPU
machine). Each kernel computes the same function as ``examples/kernels/<name>.py``; the
benchmark checks every output against the example's ``reference`` before timing.

``make(name, effort)`` returns a fresh ``helion.kernel`` (so each benchmark case autotunes on
its own, with the requested effort). ``KERNELS`` maps a torchship variant name to the Helion
function and how to call it.

Example:
    >>> # k = make("softmax", effort="quick"); k(x)   (needs helion; a GPU, or HELION_INTERPRET=1)
"""

from __future__ import annotations

import math
from typing import Any

import torch

try:  # the peer is optional: this file is only imported by the GPU benchmark
    import helion
    import helion.language as hl
except ImportError:  # pragma: no cover - reported by benchmarks/kernels.py
    helion = hl = None



def add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for tile in hl.tile(out.size()):
        out[tile] = x[tile] + y[tile]
    return out

def softmax(x: torch.Tensor) -> torch.Tensor:
    m, n = x.size()
    out = torch.empty_like(x)
    for tm in hl.tile(m):
        row = x[tm, :].to(torch.float32)
        e = torch.exp(row - torch.amax(row, dim=1, keepdim=True))
        out[tm, :] = (e / e.sum(dim=1, keepdim=True)).to(x.dtype)
    return out

def softmax_two_pass(x: torch.Tensor) -> torch.Tensor:
    m, n = x.size()
    out = torch.empty_like(x)
    bn = hl.register_block_size(n)
    for tm in hl.tile(m):
        mx = hl.full([tm], float("-inf"), dtype=torch.float32)
        den = hl.zeros([tm], dtype=torch.float32)
        for tn in hl.tile(n, block_size=bn):
            c = x[tm, tn].to(torch.float32)
            new = torch.maximum(mx, torch.amax(c, dim=1))
            den = den * torch.exp(mx - new) + torch.exp(c - new[:, None]).sum(dim=1)
            mx = new
        for tn in hl.tile(n, block_size=bn):
            c = x[tm, tn].to(torch.float32)
            out[tm, tn] = (torch.exp(c - mx[:, None]) / den[:, None]).to(x.dtype)
    return out

def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               eps: float = 1e-5) -> torch.Tensor:
    m, n = x.size()
    out = torch.empty_like(x)
    for tm in hl.tile(m):
        row = x[tm, :].to(torch.float32)
        mean = row.mean(dim=1, keepdim=True)
        cen = row - mean
        var = (cen * cen).mean(dim=1, keepdim=True)
        y = cen * torch.rsqrt(var + eps) * weight[None, :].to(torch.float32)
        out[tm, :] = (y + bias[None, :].to(torch.float32)).to(x.dtype)
    return out

def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    m, n = x.size()
    out = torch.empty_like(x)
    for tm in hl.tile(m):
        row = x[tm, :].to(torch.float32)
        inv = torch.rsqrt((row * row).mean(dim=1, keepdim=True) + eps)
        out[tm, :] = (row * inv * weight[None, :].to(torch.float32)).to(x.dtype)
    return out

def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    m, k = a.size()
    _, n = b.size()
    out = torch.empty([m, n], dtype=a.dtype, device=a.device)
    for tm, tn in hl.tile([m, n]):
        acc = hl.zeros([tm, tn], dtype=torch.float32)
        for tk in hl.tile(k):
            acc = hl.dot(a[tm, tk], b[tk, tn], acc=acc)
        out[tm, tn] = acc.to(a.dtype)
    return out

def matmul_bias_relu(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    m, k = a.size()
    _, n = b.size()
    out = torch.empty([m, n], dtype=a.dtype, device=a.device)
    for tm, tn in hl.tile([m, n]):
        acc = hl.zeros([tm, tn], dtype=torch.float32)
        for tk in hl.tile(k):
            acc = hl.dot(a[tm, tk], b[tk, tn], acc=acc)
        acc = acc + bias[tn].to(torch.float32)
        out[tm, tn] = torch.relu(acc).to(a.dtype)
    return out

def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    nb, m, k = a.size()
    _, _, n = b.size()
    out = torch.empty([nb, m, n], dtype=a.dtype, device=a.device)
    for tb, tm, tn in hl.tile([nb, m, n]):
        acc = hl.zeros([tb, tm, tn], dtype=torch.float32)
        for tk in hl.tile(k):
            acc = hl.dot(a[tb, tm, tk], b[tb, tk, tn], acc=acc)
        out[tb, tm, tn] = acc.to(a.dtype)
    return out

def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Written as the torchship example is (one (batch, head) per program indexed by the
    tile's begin, so blocks stay 2-D; exp2 with log2(e)/sqrt(d) applied to the scores), so both
    compilers get the same algorithm."""
    b, h, s, d = q.shape
    d = hl.specialize(d)
    sk = k.size(2)
    qf = q.reshape(-1, s, d)
    kt = k.reshape(-1, sk, d).transpose(1, 2)
    vf = v.reshape(-1, sk, d)
    out = torch.empty_like(qf)
    qk_scale = 1.4426950408889634 / math.sqrt(d)
    for tb, tm in hl.tile([qf.size(0), s], block_size=[1, None]):
        bh = tb.begin
        mx = hl.full([tm], float("-inf"), dtype=torch.float32)
        den = hl.zeros([tm], dtype=torch.float32)
        acc = hl.zeros([tm, d], dtype=torch.float32)
        qb = qf[bh, tm, :]
        for tn in hl.tile(sk):
            sc = hl.dot(qb, kt[bh, :, tn])
            new = torch.maximum(mx, torch.amax(sc, -1) * qk_scale)
            p = torch.exp2(sc * qk_scale - new[:, None])
            alpha = torch.exp2(mx - new)
            den = den * alpha + p.sum(-1)
            acc = hl.dot(p.to(v.dtype), vf[bh, tn, :], acc=acc * alpha[:, None])
            mx = new
        out[bh, tm, :] = (acc / den[:, None]).to(q.dtype)
    return out.view(b, h, s, d)

def attention_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Written as the torchship example is (one (batch, head) per program indexed by the
    tile's begin, so blocks stay 2-D; exp2 with log2(e)/sqrt(d) applied to the scores), so both
    compilers get the same algorithm; the key loop stops at the query tile's end
    (seq_q == seq_k)."""
    b, h, s, d = q.shape
    d = hl.specialize(d)
    sk = k.size(2)
    if s != sk:
        raise ValueError("the Helion causal attention assumes seq_q == seq_k")
    qf = q.reshape(-1, s, d)
    kt = k.reshape(-1, sk, d).transpose(1, 2)
    vf = v.reshape(-1, sk, d)
    out = torch.empty_like(qf)
    qk_scale = 1.4426950408889634 / math.sqrt(d)
    for tb, tm in hl.tile([qf.size(0), s], block_size=[1, None]):
        bh = tb.begin
        mx = hl.full([tm], float("-inf"), dtype=torch.float32)
        den = hl.zeros([tm], dtype=torch.float32)
        acc = hl.zeros([tm, d], dtype=torch.float32)
        qb = qf[bh, tm, :]
        for tn in hl.tile(0, tm.end):
            sc = hl.dot(qb, kt[bh, :, tn])
            sc = torch.where(tm.index[:, None] >= tn.index[None, :], sc, float("-inf"))
            new = torch.maximum(mx, torch.amax(sc, -1) * qk_scale)
            p = torch.exp2(sc * qk_scale - new[:, None])
            alpha = torch.exp2(mx - new)
            den = den * alpha + p.sum(-1)
            acc = hl.dot(p.to(v.dtype), vf[bh, tn, :], acc=acc * alpha[:, None])
            mx = new
        out[bh, tm, :] = (acc / den[:, None]).to(q.dtype)
    return out.view(b, h, s, d)

def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    n, vocab = logits.size()
    flat = logits.view(-1)
    loss = torch.empty([n], dtype=torch.float32, device=logits.device)
    for tm in hl.tile(n):
        picked = hl.load(flat, [tm.index * vocab + labels[tm]]).to(torch.float32)
        mx = hl.full([tm], float("-inf"), dtype=torch.float32)
        den = hl.zeros([tm], dtype=torch.float32)
        for tv in hl.tile(vocab):
            c = logits[tm, tv].to(torch.float32)
            new = torch.maximum(mx, torch.amax(c, dim=1))
            den = den * torch.exp(mx - new) + torch.exp(c - new[:, None]).sum(dim=1)
            mx = new
        loss[tm] = torch.log(den) + mx - picked
    return loss

def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(a)
    for tile in hl.tile(out.size()):
        g = a[tile].to(torch.float32)
        out[tile] = (g * torch.sigmoid(g) * b[tile].to(torch.float32)).to(a.dtype)
    return out

def geglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(a)
    for tile in hl.tile(out.size()):
        g = a[tile].to(torch.float32)
        gelu = 0.5 * g * (1.0 + torch.erf(g * 0.7071067811865476))
        out[tile] = (gelu * b[tile].to(torch.float32)).to(a.dtype)
    return out

def embedding(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    n = ids.size(0)
    dim = weight.size(1)
    out = torch.empty([n, dim], dtype=weight.dtype, device=weight.device)
    for tn, td in hl.tile([n, dim]):
        out[tn, td] = weight[ids[tn], td]
    return out

def row_sum(x: torch.Tensor) -> torch.Tensor:
    m, n = x.size()
    out = torch.empty([m], dtype=x.dtype, device=x.device)
    for tm in hl.tile(m):
        out[tm] = x[tm, :].to(torch.float32).sum(dim=1).to(x.dtype)
    return out

def long_sum(x: torch.Tensor) -> torch.Tensor:
    m, n = x.size()
    out = torch.empty([m], dtype=x.dtype, device=x.device)
    for tm in hl.tile(m):
        acc = hl.zeros([tm], dtype=torch.float32)
        for tn in hl.tile(n):
            acc = acc + x[tm, tn].to(torch.float32).sum(dim=1)
        out[tm] = acc.to(x.dtype)
    return out

def var_mean(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # two streaming passes (sum, then centred squares): numerically safe, 2 reads of x
    m, n = x.size()
    var = torch.empty([m], dtype=x.dtype, device=x.device)
    mean_out = torch.empty([m], dtype=x.dtype, device=x.device)
    for tm in hl.tile(m):
        s = hl.zeros([tm], dtype=torch.float32)
        for tn in hl.tile(n):
            s = s + x[tm, tn].to(torch.float32).sum(dim=1)
        mean = s / n
        q = hl.zeros([tm], dtype=torch.float32)
        for tn in hl.tile(n):
            dev = x[tm, tn].to(torch.float32) - mean[:, None]
            q = q + (dev * dev).sum(dim=1)
        var[tm] = (q / (n - 1)).to(x.dtype)
        mean_out[tm] = mean.to(x.dtype)
    return var, mean_out


#: torchship variant name -> (helion body name, which kwargs of the variant it bakes in)
KERNELS: dict[str, str] = {
    "add": "add",
    "softmax": "softmax",
    "softmax_two_pass": "softmax_two_pass",
    "layer_norm": "layer_norm",
    "rms_norm": "rms_norm",
    "matmul": "matmul",
    "matmul_bias_relu": "matmul_bias_relu",
    "bmm": "bmm",
    "attention": "attention",
    "attention_causal": "attention_causal",
    "cross_entropy": "cross_entropy",
    "swiglu": "swiglu",
    "geglu": "geglu",
    "embedding": "embedding",
    "sum": "row_sum",
    "long_sum": "long_sum",
    "var_mean": "var_mean",
}


def make(variant: str, effort: str = "quick", config: Any = None, budget_s: float | None = None) -> Any:
    """A fresh ``helion.kernel`` for a torchship variant name, autotuned at ``effort``
    (``"none"``: Helion's default config), with an optional autotune time cap.

    Example:
        >>> # make("rms_norm", effort="quick", budget_s=60)(x, w)
    """
    if helion is None:
        raise ImportError("helion is not installed")
    body = globals()[KERNELS[variant]]
    settings: dict[str, Any] = {"static_shapes": True, "autotune_progress_bar": False}
    if config is not None:
        return helion.kernel(config=config, **settings)(body)
    settings["autotune_effort"] = effort
    if effort != "none" and budget_s is not None:
        settings["autotune_budget_seconds"] = int(budget_s)
    return helion.kernel(**settings)(body)
