"""Flash-style attention ``softmax(q k^T / sqrt(d)) v`` on ``[B, H, S, D]``, causal option.

Each program owns a block of query rows of one (batch, head) and streams key/value blocks,
keeping a running max and normaliser (online softmax), so the ``S x S`` score matrix never
exists in memory.

Example:
    >>> q, k, v = make_inputs("test", seed=0)
    >>> attention(q, k, v, causal=True).shape  # doctest: +SKIP
    torch.Size([2, 3, 67, 32])
"""

from __future__ import annotations

import math

import torch

import torchship as ts
from examples.kernels._common import FLOAT_DTYPES, check_key, generator, nbytes, randn

LOG2E = math.log2(math.e)


def _online_softmax_step(
    scores: torch.Tensor, qk_scale: float, row_max: torch.Tensor, denom: torch.Tensor,
    acc: torch.Tensor, vf: torch.Tensor, bh: int, tn: ts.Tile,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One key block of the online softmax (base 2): ``scores * qk_scale`` are the log2-scaled
    logits (one multiply-add with the max subtraction); rescale the running normaliser and
    output by ``2^(old max - new max)`` and add this block's share (values ``vf[bh, tn, :]``).
    Called from device code, where it is inlined (both key loops of :func:`attention` use it)."""
    new_max = torch.maximum(row_max, scores.amax(dim=1, keepdim=True) * qk_scale)
    p = torch.exp2(scores * qk_scale - new_max)
    alpha = torch.exp2(row_max - new_max)
    denom = denom * alpha + p.sum(dim=1, keepdim=True)
    acc = ts.dot(p.to(vf.dtype), vf[bh, tn, :], acc=acc * alpha)
    return new_max, denom, acc


@ts.kernel
def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False
) -> torch.Tensor:
    """Scaled dot-product attention; ``causal`` masks keys after the query (top-left)."""
    batch, heads, seq_q, head_dim = q.shape
    seq_k = k.size(2)
    qf = q.reshape(batch * heads, seq_q, head_dim)
    kt = k.reshape(batch * heads, seq_k, head_dim).transpose(1, 2)  # [bh, d, s]: a view
    vf = v.reshape(batch * heads, seq_k, head_dim)
    out = torch.empty_like(qf)
    # softmax in base 2: exp(x) = exp2(x * log2(e)), with 1/sqrt(d) * log2(e) applied to the
    # scores. Not folded into q: q straight from memory stays the dot's shared-memory operand
    # on Hopper, while a scaled q is fed from registers (measured 13% slower on an H100)
    qk_scale = LOG2E / math.sqrt(head_dim)
    bn = ts.register_block_size(16, 256)  # one key block size for both key loops
    for tb, tm in ts.tile([batch * heads, seq_q], block_size=[1, None]):
        bh = tb.begin  # one (batch, head) per program: index with the scalar, blocks stay 2-D
        qb = qf[bh, tm, :]
        row_max = ts.full([tm, 1], float("-inf"), dtype=torch.float32)
        denom = ts.zeros([tm, 1], dtype=torch.float32)
        acc = ts.zeros([tm, head_dim], dtype=torch.float32)
        # causal: keys before this query tile are visible to all its rows (no mask), keys in
        # [tm.begin, tm.end) are masked per element (the diagonal blocks), later keys never load
        kv_open = min(tm.begin, seq_k) if causal else seq_k
        for tn in ts.tile(0, kv_open, block_size=bn):
            scores = ts.dot(qb, kt[bh, :, tn])  # fp32
            row_max, denom, acc = _online_softmax_step(scores, qk_scale, row_max, denom, acc,
                                                       vf, bh, tn)
        if causal:
            for tn in ts.tile(kv_open, min(tm.end, seq_k), block_size=bn):
                scores = ts.dot(qb, kt[bh, :, tn])
                visible = tm.index[:, None] >= tn.index[None, :]
                scores = torch.where(visible, scores, float("-inf"))
                row_max, denom, acc = _online_softmax_step(scores, qk_scale, row_max, denom,
                                                           acc, vf, bh, tn)
        out[bh, tm, :] = (acc / denom).to(q.dtype)
    return out.reshape(batch, heads, seq_q, head_dim)


VARIANTS = {"attention": (attention, {}), "attention_causal": (attention, {"causal": True})}
DTYPES = FLOAT_DTYPES
TOLERANCE = {
    torch.float32: {"atol": 1e-4, "rtol": 1e-4},
    torch.float16: {"atol": 5e-3, "rtol": 5e-3},
    torch.bfloat16: {"atol": 3e-2, "rtol": 3e-2},
}
SHAPES = {
    "test": (2, 3, 67, 32),
    "gpu_small": (4, 32, 2048, 64),
    "gpu_large": (4, 32, 4096, 64),
}


def reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False
) -> torch.Tensor:
    """Plain torch, written out (works in float64 on any device).

    Example:
        >>> q = torch.zeros(1, 1, 2, 4); v = torch.arange(8.0).view(1, 1, 2, 4)
        >>> reference(q, q, v, causal=True)[0, 0, 1].tolist()
        [2.0, 3.0, 4.0, 5.0]
    """
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.size(-1))
    if causal:
        visible = torch.ones(q.size(2), k.size(2), dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~visible, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def make_inputs(
    shape_key: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    *, seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of shape ``[B, H, S, D]``.

    Example:
        >>> [tuple(t.shape) for t in make_inputs("test", seed=0)]
        [(2, 3, 67, 32), (2, 3, 67, 32), (2, 3, 67, 32)]
    """
    shape = check_key(shape_key, SHAPES)
    g = generator(device, seed)
    return tuple(randn(shape, device, dtype, gen=g) for _ in range(3))  # type: ignore[return-value]


def BYTES(args: tuple[torch.Tensor, ...], **kwargs: object) -> int:  # noqa: N802
    """Read q, k, v once, write out once.

    Example:
        >>> BYTES(tuple(torch.zeros(1, 1, 2, 2) for _ in range(3)))
        64
    """
    q, k, v = args[:3]
    return nbytes(q, k, v) + nbytes(q)


def FLOPS(args: tuple[torch.Tensor, ...], causal: bool = False, **kwargs: object) -> int:  # noqa: N802
    """``4 B H S_q S_k D`` (two matmuls), halved when causal.

    Example:
        >>> FLOPS(tuple(torch.zeros(1, 1, 2, 2) for _ in range(3)))
        32
    """
    q, k = args[:2]
    b, h, s_q, d = q.shape
    flops = 4 * b * h * s_q * k.shape[2] * d
    return flops // 2 if causal else flops
