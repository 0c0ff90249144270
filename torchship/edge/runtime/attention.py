"""The ``attention`` op: multi-head scaled dot-product attention on packed ``[B, S, C]`` tensors.

Semantics (docs/edge-ops.md) are those of the unfused subgraph the export pass
(``passes/attention.py``) replaces: per head ``h``, the ``head_dim`` columns starting at
``offset + h * head_dim`` of ``q``, ``k`` and ``v`` are that head's rows;
``p = softmax(q_h @ k_h^T * scale [+ bias])`` and ``p @ v_h`` is written to columns
``h * head_dim ...`` of the ``[B, Sq, heads * head_dim]`` output.

The binder works on strided views of the arena, so the per-head slices, permutes and the final
permute back are never copied: one batched ``matmul`` over ``[B, heads]`` into a scores temp,
one scale multiply, one bias add, an in-place softmax shifted by the block maximum (falling back
to the per-row softmax when a row is far below it, see ``_shifted_softmax``), and one batched
``matmul`` straight into the output's per-head view.

Example:
    >>> import numpy as np
    >>> from torchship.edge.runtime.registry import OPS, bind_step
    >>> qkv = np.zeros((1, 2, 6), np.float32); qkv[0, :, 4:] = [[1, 2], [3, 4]]
    >>> out = np.empty((1, 2, 2), np.float32)
    >>> a = {**{k: d for k, (_, d) in OPS["attention"].attrs.items()}, "heads": 2, "head_dim": 1,
    ...      "scale": 1.0, "k_offset": 2, "v_offset": 4}
    >>> bind_step(OPS["attention"], [qkv, qkv, qkv], [out], a)()
    >>> out[0].tolist()  # all scores 0: each head averages its value column
    [[2.0, 3.0], [2.0, 3.0]]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from torchship.edge.runtime.bound import _SHORT_ROWS, const, scratch
from torchship.edge.runtime.dims import FLOATS
from torchship.edge.runtime.ops import R, _bcast, _fail, _same_dtype
from torchship.edge.runtime.registry import OPS, Shape, Step, bind_step, binder, register

Arrays = list[np.ndarray]

ATTENTION_ATTRS: dict[str, tuple[str, Any]] = {
    "heads": ("int", R),
    "head_dim": ("int", R),
    "scale": ("float", R),
    "q_offset": ("int", 0),
    "k_offset": ("int", 0),
    "v_offset": ("int", 0),
}


def _infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    dt = _same_dtype(dtypes, FLOATS)
    q, k, v = shapes[:3]
    heads, hd = a["heads"], a["head_dim"]
    if heads < 1 or hd < 1:
        _fail(f"attention: heads {heads} and head_dim {hd} must be >= 1")
    if len(q) != 3 or len(k) != 3 or len(v) != 3:
        _fail(f"attention: q {list(q)}, k {list(k)}, v {list(v)} must be 3-D [B, S, C]")
    if not (q[0] == k[0] == v[0]) or k[1] != v[1]:
        _fail(f"attention: q {list(q)}, k {list(k)}, v {list(v)} need one batch and k, v one length")
    for name, shape in (("q", q), ("k", k), ("v", v)):
        off = a[f"{name}_offset"]
        if off < 0 or off + heads * hd > shape[2]:
            _fail(f"attention: {name}_offset {off} + heads * head_dim {heads * hd} must fit in {name}'s {shape[2]} columns")
    scores = (q[0], heads, q[1], k[1])
    if len(shapes) == 4 and (len(shapes[3]) > 4 or _bcast([scores, shapes[3]]) != scores):
        _fail(f"attention: bias {list(shapes[3])} must broadcast to the scores {list(scores)}")
    return [((q[0], q[1], heads * hd), dt)]


@register("attention", (3, 4), _infer, ATTENTION_ATTRS)
def _attention(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> None:
    _bind_attention(ins, outs, a)()


def heads_view(x: np.ndarray, offset: int, heads: int, head_dim: int) -> np.ndarray:
    """``x[..., offset : offset + heads * head_dim]`` as ``[B, heads, S, head_dim]``, a view.

    Example:
        >>> heads_view(np.arange(12.0).reshape(1, 2, 6), 2, 2, 1)[0, :, :, 0].tolist()
        [[2.0, 8.0], [3.0, 9.0]]
    """
    b, s, _ = x.shape
    cols = x[:, :, offset : offset + heads * head_dim]
    st = cols.strides
    shape, strides = (b, heads, s, head_dim), (st[0], head_dim * st[2], st[1], st[2])
    return np.lib.stride_tricks.as_strided(cols, shape, strides, writeable=cols.flags.writeable)


_SCORES = 1 << 16  # most score elements per block of heads (256 KiB of float32 temp)


def _head_block(batch: int, heads: int, rows: int) -> int:
    """Heads per block: the largest divisor of ``heads`` whose scores fit ``_SCORES`` (>= 1)."""
    return max(d for d in range(1, heads + 1) if heads % d == 0 and (d == 1 or batch * d * rows <= _SCORES))


@binder("attention")
def _bind_attention(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    """Blocks of heads (all of them for short sequences) share one scores temp, so long
    sequences (MiniLM: 12 heads x 128 x 128) never hold all heads' scores at once."""
    heads, hd = a["heads"], a["head_dim"]
    q = heads_view(ins[0], a["q_offset"], heads, hd)
    kt = heads_view(ins[1], a["k_offset"], heads, hd).transpose(0, 1, 3, 2)
    v = heads_view(ins[2], a["v_offset"], heads, hd)
    o = heads_view(outs[0], 0, heads, hd)
    bias = None if len(ins) == 3 else ins[3].reshape((1,) * (4 - ins[3].ndim) + ins[3].shape)
    hb = _head_block(q.shape[0], heads, q.shape[2] * kt.shape[3])
    s = scratch((q.shape[0], hb, q.shape[2], kt.shape[3]), outs[0].dtype, temp=True)
    scale, matmul, mul, add = const(a["scale"], s.dtype), np.matmul, np.multiply, np.add
    exact = bind_step(OPS["softmax"], [s], [s], {"axis": -1})
    shifted = _shifted_softmax(s) if s.size else lambda: False
    blocks = []
    for h in range(0, heads, hb):
        part = slice(h, h + hb)
        b = bias if bias is None or bias.shape[1] == 1 else bias[:, part]
        blocks.append((q[:, part], kt[:, part], v[:, part], o[:, part], b))

    def scores(qb: np.ndarray, kb: np.ndarray, bb: np.ndarray | None) -> None:
        matmul(qb, kb, out=s)
        mul(s, scale, out=s)
        if bb is not None:
            add(s, bb, out=s)

    def step() -> None:
        for qb, kb, vb, ob, bb in blocks:
            scores(qb, kb, bb)
            if not shifted():  # a row far below the block maximum (or inf/nan): per-row softmax
                scores(qb, kb, bb)
                exact()
            matmul(s, vb, out=ob)

    return step


_MIN_SUM = 2.0**-20  # smallest row sum of exp(x - block max) taken as exact (see _shifted_softmax)


def _shifted_softmax(s: np.ndarray) -> Callable[[], bool]:
    """In-place softmax of the rows of ``s`` shifted by the maximum of the whole block instead
    of each row's: one reduction instead of one per row (numpy's per-row reductions and
    row-broadcast subtracts cost ~70 ns a row: MiniLM's 1536 rows of 128 take 980 -> 570 us
    per layer, the tiny transformer's 64 rows of 16 12.9 -> 11.4 us). Returns False, with
    ``s`` clobbered, unless every row sum is at least ``_MIN_SUM`` (so each row's maximum is
    within ~14 + ln(n) of the block's, its largest terms are normal floats, and only terms below
    e^-67 of the row's maximum can round differently from the per-row softmax); any inf or nan
    also fails. Short rows get ``1 / sum`` spread by a BLAS outer product (no row broadcast)."""
    n = s.shape[-1]
    s2, s1 = s.reshape(-1, n), s.reshape(-1)
    rows = s2.shape[0]
    top, rs = scratch((), s.dtype), scratch((rows, 1), s.dtype)
    ones_col, one = scratch((n, 1), s.dtype, 1.0), const(1.0, s.dtype)
    rs1, sub, exp, dot, div = rs.reshape(-1), np.subtract, np.exp, np.dot, np.divide
    maximum, minimum, mul = np.maximum.reduce, np.minimum.reduce, np.multiply
    if n <= _SHORT_ROWS <= rows:
        tile, ones_row = scratch((rows, n), s.dtype, temp=True), scratch((1, n), s.dtype, 1.0)

        def spread() -> None:
            dot(rs, ones_row, out=tile)
            mul(s2, tile, out=s2)

    else:

        def spread() -> None:
            mul(s2, rs, out=s2)

    def step() -> bool:
        maximum(s1, out=top)
        sub(s1, top, out=s1)
        exp(s1, out=s1)
        dot(s2, ones_col, out=rs)
        if not minimum(rs1) >= _MIN_SUM:
            return False
        div(one, rs, out=rs)
        spread()
        return True

    return step
