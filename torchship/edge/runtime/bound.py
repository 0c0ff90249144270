"""Load-time binders: each hot op turned into a zero-argument step with everything pre-resolved.

A binder runs once per (method, symbol values) when the runtime binds a method (see
``registry.bind_step``): it takes the instruction's arena views, weights and attributes and
returns a closure that only calls numpy ufuncs/BLAS with ``out=`` into preallocated arrays —
no dictionary lookups, shape logic or temporaries per call. Results equal the plain kernels
(``ops.py``/``nn_ops.py``) up to float rounding; the tests compare both with torch float64.

Scratch: a binder's buffers come from :func:`scratch`; buffers that carry nothing between
calls and serve one step are views into the binding's :class:`TempRegion` (one region per
binding, carved from its start again for each step). Convolution and pooling binders are in
``bound_conv.py``.

Example:
    >>> import numpy as np
    >>> from torchship.edge.runtime import ops, nn_ops, bound  # register ops and binders
    >>> from torchship.edge.runtime.registry import OPS, bind_step
    >>> x, o = np.array([[-1.0, 2.0]], np.float32), np.empty((1, 2), np.float32)
    >>> step = bind_step(OPS["relu"], [x], [o], {})
    >>> _ = step(); o.tolist()
    [[0.0, 2.0]]
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from torchship.edge.runtime import nn_ops  # noqa: F401  (registers matmul before its binder)
from torchship.edge.runtime.dims import ProgramError
from torchship.edge.runtime.ops import (
    _AS,
    _AS_P,
    _BINARY,
    _CLIP,
    _COMPARE,
    _LOGICAL,
    _UNARY_FLOAT,
    _slice_bounds,
    clamp_step,
)
from torchship.edge.runtime.registry import OPS, Step, binder

Arrays = list[np.ndarray]
_GELU_CHUNK = 1 << 13  # elements per gelu block (three temporaries of 32 KiB each)


_COUNTER = threading.local()
_ALIGN = 64


class TempRegion:
    """The temporaries of one binding: every step's temp buffers are views into one shared
    byte region, carved from offset 0 again for each step, so the region is the largest
    step's need (not a sum). A measuring region (``size=None``) hands out fresh arrays and only
    records that need; :meth:`Method._bind` binds once to measure and once for real.

    Example:
        >>> r = TempRegion(None); r.next_step(); _ = r.take((4,), np.dtype("float32")); r.peak
        64
    """

    def __init__(self, size: int | None) -> None:
        self.buf = None if size is None else np.empty(size + _ALIGN, np.uint8)
        self.base = 0 if self.buf is None else (-self.buf.ctypes.data) % _ALIGN
        self.cursor = 0
        self.peak = 0

    def next_step(self) -> None:
        """Start carving for the next step (the previous step's temps are dead).

        Example:
            >>> r = TempRegion(None); r.next_step(); r.cursor
            0
        """
        self.cursor = 0

    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A temp buffer of this step, distinct from the step's other temps.

        Example:
            >>> TempRegion(128).take((2, 3), np.dtype("float32")).shape
            (2, 3)
        """
        dtype = np.dtype(dtype)
        offset = self.cursor
        self.cursor += -(-int(np.prod(shape, dtype=np.int64)) * dtype.itemsize // _ALIGN) * _ALIGN
        self.peak = max(self.peak, self.cursor)
        if self.buf is None:
            return np.empty(shape, dtype)
        return np.ndarray(shape, dtype, self.buf, self.base + offset)

    @property
    def nbytes(self) -> int:
        """Bytes held by the region (0 while measuring).

        Example:
            >>> TempRegion(None).nbytes
            0
        """
        return 0 if self.buf is None else int(self.buf.nbytes)


def scratch(shape: tuple[int, ...], dtype: np.dtype, fill: float | None = None, temp: bool = False) -> np.ndarray:
    """A binder's private buffer (outside the arena), counted by :func:`scratch_bytes`.

    ``temp`` buffers hold nothing from one call to the next (a step overwrites them before
    reading) and are not used by other steps, so they come from the binding's shared
    :class:`TempRegion` (see :func:`binding`) when one is set.

    Example:
        >>> scratch((2, 3), np.dtype("float32"), 0.0).sum()
        np.float32(0.0)
    """
    region = getattr(_COUNTER, "region", None)
    if temp and region is not None and fill is None:
        return region.take(tuple(shape), np.dtype(dtype))
    arr = np.empty(shape, dtype) if fill is None else np.full(shape, fill, dtype)
    _COUNTER.nbytes = getattr(_COUNTER, "nbytes", 0) + arr.nbytes
    return arr


def binding(region: TempRegion | None) -> None:
    """Set the temp region that :func:`scratch` carves temps from on this thread (None: none).

    Example:
        >>> r = TempRegion(None); binding(r); r.next_step()
        >>> a, b = scratch((4,), np.dtype("float32"), temp=True), scratch((4,), np.dtype("float32"), temp=True)
        >>> binding(None); r.peak
        128
    """
    _COUNTER.region = region


def scratch_bytes() -> int:
    """Bytes of binder scratch allocated so far by this thread (a running total).

    Example:
        >>> before = scratch_bytes(); _ = scratch((4,), np.dtype("float64")); scratch_bytes() - before
        32
    """
    return int(getattr(_COUNTER, "nbytes", 0))


def const(value: float, dtype: np.dtype) -> np.ndarray:
    """A 0-d array constant: numpy ufuncs take it ~40% faster than a Python or numpy scalar.

    Example:
        >>> const(0.5, np.dtype("float32")).dtype
        dtype('float32')
    """
    return np.array(value, dtype)


def plus_bias(out: np.ndarray, bias: np.ndarray | None, shape: tuple[int, ...]) -> Step | None:
    if bias is None:
        return None
    b = bias.reshape(shape)
    return lambda: np.add(out, b, out=out)


def chain(*steps: Step | None) -> Step:
    live = [s for s in steps if s is not None]
    if len(live) == 1:
        return live[0]

    def run() -> None:
        for s in live:
            s()

    return run


# --------------------------------------------------------------------------- elementwise


def _scalar_view(x: np.ndarray) -> np.ndarray:
    """A one-element operand as a 0-d view of the same bytes (ufuncs broadcast a 0-d array
    ~2x faster than a ``[1]`` one: 1024-element divide 1.06 -> 0.57 us); others unchanged.

    Example:
        >>> _scalar_view(np.ones((1, 1))).shape
        ()
    """
    return x.reshape(()) if x.size == 1 and x.ndim else x


def _bind_binary(ufunc: Any) -> Any:
    def bind(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
        x, y, o = _scalar_view(ins[0]), _scalar_view(ins[1]), outs[0]
        return lambda: ufunc(x, y, out=o)

    return bind


def _bind_unary(ufunc: Any) -> Any:
    def bind(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
        x, o = ins[0], outs[0]
        return lambda: ufunc(x, out=o)

    return bind


for _name, _uf in {**_BINARY, **_COMPARE, **_LOGICAL, "matmul": np.matmul}.items():
    if _name != "add":
        binder(_name)(_bind_binary(_uf))


@binder("add")
def _bind_add(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    x, y, o = _scalar_view(ins[0]), _scalar_view(ins[1]), outs[0]
    return chain(lambda: np.add(x, y, out=o), clamp_step(o, a))
for _name, _uf in {**_UNARY_FLOAT, "neg": np.negative, "abs": np.abs, "sign": np.sign,
                   "logical_not": np.logical_not}.items():
    binder(_name)(_bind_unary(_uf))


@binder("relu")
def _bind_relu(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    x, o = ins[0], outs[0]
    if o.dtype.kind != "f":
        zero = const(0, o.dtype)
        return lambda: np.maximum(x, zero, out=o)
    lo, hi = const(0.0, o.dtype), const(np.inf, o.dtype)  # the clip ufunc: one pass, faster than np.maximum here
    return lambda: _CLIP(x, lo, hi, out=o)


@binder("clamp")
def _bind_clamp(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    x, o = ins[0], outs[0]
    lo, hi = a["min"], a["max"]
    if o.dtype.kind != "f" or (lo is None and hi is None):
        kernel = OPS["clamp"].kernel
        return lambda: kernel(ins, outs, a)
    lo_, hi_ = const(-np.inf if lo is None else float(lo), o.dtype), const(np.inf if hi is None else float(hi), o.dtype)
    return lambda: _CLIP(x, lo_, hi_, out=o)


@binder("slice")
def _bind_slice(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    x, o = ins[0], outs[0]
    ax = a["axis"] % x.ndim
    start, end, _ = _slice_bounds(x.shape[ax], a["start"], a["end"], a["step"])
    src = x[(slice(None),) * ax + (slice(start, end, a["step"]),)]
    return lambda: np.copyto(o, src)


@binder("embedding")
def _bind_embedding(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    """One range check and one ``take``: the indices viewed as unsigned make every negative
    index huge, so a single max checks ``[0, V)`` (instead of a min and a max)."""
    table, idx, o = ins[0], ins[1], outs[0]
    flat = idx.reshape(-1).view(np.dtype(f"u{idx.dtype.itemsize}"))
    top, n = np.maximum.reduce, table.shape[0]

    def step() -> None:
        if flat.size and top(flat) >= n:
            raise ProgramError(f"embedding: index out of range [0, {n}) (got {idx.min()}..{idx.max()})")
        np.take(table, idx, axis=0, out=o, mode="clip")  # every index checked above

    return step


@binder("gelu")
def _bind_gelu(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    """Exact (erf) GELU in 19 ufunc calls per block: ``relu(x) - |x| * erfc(|x|/sqrt 2) / 2``
    with erfc from Abramowitz-Stegun 7.1.26 (absolute error < 1.5e-7), rewritten so every
    constant folds into a 0-d operand: with ``b = -|x|/2``, ``exp(-x^2/2) = exp(b|x|)`` and
    ``t = 1/(1 + P|x|/sqrt 2) = -K/(b - K)`` for ``K = 1/(P sqrt 2)``; the polynomial's
    coefficients carry the final 1/2. (The polynomial as 4 power multiplies + one BLAS
    ``[1, 5] @ [5, n]`` product saves 4 calls but needs 6 temp rows instead of 3: more scratch
    than the tiny transformer's whole memory budget allows, or smaller, slower blocks.)"""
    x, o = ins[0], outs[0]
    if a["approximate"] == "tanh":
        kernel = OPS["gelu"].kernel
        return lambda: kernel(ins, outs, a)
    from torchship.edge.runtime.native import gelu_step  # (it imports this module)

    step_native = gelu_step(x, o)
    if step_native is not None:  # one vectorised C loop (A-S 7.1.28, no exp) instead of 19 calls
        return step_native
    c = lambda v: const(v, x.dtype)  # noqa: E731
    k = 1.0 / (_AS_P * np.sqrt(2.0))
    half, neg_k, k_, zero, inf = c(-0.5), c(-k), c(k), c(0.0), c(np.inf)
    coef = [c(v / 2) for v in _AS]
    xf, of = x.reshape(-1), o.reshape(-1)
    m = max(1, min(xf.shape[0], _GELU_CHUNK))
    r, t, p = scratch((3, m), x.dtype, temp=True)
    blocks = [(xf[s : s + m], of[s : s + m]) for s in range(0, xf.shape[0], m)]
    blocks = [(xb, ob, r[: len(xb)], t[: len(xb)], p[: len(xb)]) for xb, ob in blocks]
    mul, add, sub = np.multiply, np.add, np.subtract

    def step() -> None:
        for xb, ob, ab, tb, pb in blocks:
            np.abs(xb, out=ab)
            mul(ab, half, out=pb)  # b = -|x|/2
            sub(pb, k_, out=tb)
            np.divide(neg_k, tb, out=tb)  # t
            mul(pb, ab, out=pb)  # -x^2/2
            np.exp(pb, out=pb)
            mul(ab, pb, out=ab)  # |x| exp(-x^2/2)
            mul(tb, coef[4], out=pb)
            for cf in coef[3::-1]:
                add(pb, cf, out=pb)
                mul(pb, tb, out=pb)
            mul(pb, ab, out=pb)  # |x| erfc(|x|/sqrt 2) / 2
            _CLIP(xb, zero, inf, out=ob)  # relu: the clip ufunc is ~2x faster than maximum here
            sub(ob, pb, out=ob)

    return step


@binder("permute")
def _bind_permute(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    src, o = ins[0].transpose(a["perm"]), outs[0]
    return lambda: np.copyto(o, src)


_SHORT_ROWS = 32  # softmax rows this long or shorter: row maxima from a transposed copy


@binder("softmax")
def _bind_softmax(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    """Row maxima: ``maximum.reduce`` along the last axis costs ~70 ns per row in numpy
    whatever the row length, so many short rows (attention scores of a short sequence) are
    transposed into the temp region first and reduced along the leading axis, which is
    ``n - 1`` vectorised passes (tiny transformer [2, 4, 16, 16]: 8.6 -> 3.9 us; with rows of
    128 the transposed copy costs more than it saves). Row sums are one BLAS product with ones."""
    x, o = ins[0], outs[0]
    ax = a["axis"] % x.ndim
    red = tuple(1 if i == ax else d for i, d in enumerate(x.shape))
    m, s = scratch(red, x.dtype), scratch(red, x.dtype)  # distinct: both live at once
    n = x.shape[ax]
    rows = x.size // max(1, n)
    last = ax == x.ndim - 1 and x.flags.c_contiguous and o.flags.c_contiguous and x.size > 0
    if last and n <= _SHORT_ROWS and rows >= _SHORT_ROWS:
        return _softmax_short_rows(x.reshape(rows, n), o.reshape(rows, n), m.reshape(rows, 1), s.reshape(rows, 1))
    if last:  # row sums as one BLAS matmul with ones
        ones = scratch((n, 1), x.dtype, 1.0)
        o2, s2 = o.reshape(-1, n), s.reshape(-1, 1)
        total: Step = lambda: np.dot(o2, ones, out=s2)  # noqa: E731
    else:
        total = lambda: np.add.reduce(o, axis=ax, keepdims=True, out=s)  # noqa: E731

    def step() -> None:
        np.maximum.reduce(x, axis=ax, keepdims=True, out=m)
        np.subtract(x, m, out=o)
        np.exp(o, out=o)
        total()
        np.divide(o, s, out=o)

    return step


def _softmax_short_rows(x: np.ndarray, o: np.ndarray, m: np.ndarray, s: np.ndarray) -> Step:
    """Softmax of many short rows ([rows, n] views) without numpy's per-row broadcasting cost:
    the maxima from a transposed copy reduced along its leading axis, the per-row max and
    ``1 / sum`` spread over the row by BLAS outer products with a row of ones into a temp, then
    plain (non-broadcast) subtract and multiply."""
    rows, n = x.shape
    xt, tile = scratch((n, rows), x.dtype, temp=True), scratch((rows, n), x.dtype, temp=True)
    ones_col, ones_row = scratch((n, 1), x.dtype, 1.0), scratch((1, n), x.dtype, 1.0)
    m1, one = m.reshape(rows), const(1.0, x.dtype)
    dot, copyto = np.dot, np.copyto

    def step() -> None:
        copyto(xt, x.T)
        np.maximum.reduce(xt, axis=0, out=m1)
        dot(m, ones_row, out=tile)
        np.subtract(x, tile, out=o)
        np.exp(o, out=o)
        dot(o, ones_col, out=s)
        np.divide(one, s, out=s)
        dot(s, ones_row, out=tile)
        np.multiply(o, tile, out=o)

    return step


# --------------------------------------------------------------------------- linear, layer norm




@binder("linear")
def _bind_linear(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    x, w, out = ins[0], ins[1], outs[0]
    x2, o2 = x.reshape(-1, x.shape[-1]), out.reshape(-1, out.shape[-1])
    wt = w if a["transposed"] else w.T
    b = ins[2] if len(ins) == 3 else None
    clamp = clamp_step(o2, a)
    # np.dot on 2-D operands dispatches ~0.5 us faster than np.matmul; it needs a C-contiguous
    # output of the exact result dtype
    same = x2.dtype == wt.dtype == o2.dtype and o2.flags.c_contiguous
    mm = np.dot if same else np.matmul
    if b is None:
        return chain(lambda: mm(x2, wt, out=o2), clamp)

    def step() -> None:
        mm(x2, wt, out=o2)
        np.add(o2, b, out=o2)

    return chain(step, clamp)


@binder("layer_norm")
def _bind_layer_norm(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    """Mean and variance as BLAS products with a ``1/n`` column (the variance from a squared
    copy of the centred rows in the temp region). numpy's broadcasting loops pay ~50 ns per
    row, so the scale ``rstd[r] * w[c]`` is one BLAS outer product into that temp and is
    applied by a plain multiply (tiny transformer [32, 64]: 9.1 -> ~7 us). (Bias added from a
    full-size copy would save ~1 us more per step but costs a persistent activation-sized
    buffer per layer norm and linear: over the tiny transformer's memory budget.)"""
    x, out = ins[0], outs[0]
    k = a["normalized_ndim"]
    inner = int(np.prod(x.shape[x.ndim - k :], dtype=np.int64))
    x2, o2 = x.reshape(-1, inner), out.reshape(-1, inner)
    rows = x2.shape[0]
    w = ins[1].reshape(1, inner) if len(ins) > 1 else None
    b = ins[2].reshape(inner) if len(ins) > 2 else None
    from torchship.edge.runtime.native import layer_norm_step  # (it imports this module)

    step_native = layer_norm_step(x2, None if w is None else w.reshape(inner), b, a["eps"], o2)
    if step_native is not None:  # one C call instead of ~9 numpy calls (~6.5 -> ~2 us)
        return step_native
    mean, var = scratch((rows, 1), x.dtype), scratch((rows, 1), x.dtype)
    inv = scratch((inner, 1), x.dtype, 1.0 / inner if inner else 0.0)
    eps, neg_half = const(a["eps"], x.dtype), const(-0.5, x.dtype)
    sq = scratch(o2.shape, x.dtype, temp=True)  # squares, then the scale rstd * w
    same = w is not None and x2.dtype == w.dtype == sq.dtype

    def step() -> None:
        np.dot(x2, inv, out=mean)
        np.subtract(x2, mean, out=o2)
        np.square(o2, out=sq)
        np.dot(sq, inv, out=var)
        np.add(var, eps, out=var)
        np.power(var, neg_half, out=var)  # rstd (one call instead of sqrt + divide; within 1 ulp)
        if same:
            np.dot(var, w, out=sq)
            np.multiply(o2, sq, out=o2)
        else:
            np.multiply(o2, var, out=o2)
            if w is not None:
                np.multiply(o2, w, out=o2)
        if b is not None:
            np.add(o2, b, out=o2)

    return step


__all__ = ["OPS"]
