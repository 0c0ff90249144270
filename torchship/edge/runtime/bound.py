"""Load-time binders: each hot op turned into a zero-argument step with everything pre-resolved.

A binder runs once per (method, symbol values) when the runtime binds a method (see
``registry.bind_step``): it takes the instruction's arena views, weights and attributes and
returns a closure that only calls numpy ufuncs/BLAS with ``out=`` into preallocated arrays —
no dictionary lookups, shape logic or temporaries per call. Results equal the plain kernels
(``ops.py``/``nn_ops.py``) up to float rounding; the tests compare both with torch float64.

Convolutions get the biggest changes:

- depthwise (``groups == in_channels``), one cache-sized channel block at a time: the block
  is copied into a zero-padded row buffer where each (batch, channel) plane is one flat row of
  ``Hp * Wp`` values (stride 1: ``kw`` such rows, shifted, so the taps of a kernel row form one
  BLAS matrix; see :func:`_bind_depthwise_rows`). For stride ``(sh,
  sw)`` and dilation ``(dh, dw)``, kernel tap ``(i, j)`` is then the 1-D strided slice
  ``row[i*dh*Wp + j*dw :: sw]`` of length ``OH * Wq`` (``Wq = sh * Wp / sw``), so a tap is one
  long vectorised multiply-add over whole planes ("wide" output with ``Wq - OW`` junk columns
  per row) instead of one per output row; channels are processed in cache-sized blocks and the
  junk columns dropped (and bias added) by the final copy into the output;
- other convolutions: padded input and im2col column buffers preallocated, one BLAS matmul;
- 1x1 stride-1 unpadded: a matmul straight from the input view.

Pooling takes the kernel taps as strided views of a preallocated padded copy. The plain
``conv2d`` kernel (depthwise case) and the pool kernels run these binders once per call.

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

from torchship.edge.runtime.nn_ops import _pair, _pool_params, _windows
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
_BLOCK = 1 << 15  # elements of one channel block of the depthwise wide buffers (fits in L2)
_GELU_CHUNK = 1 << 13  # elements per gelu block (three temporaries of 32 KiB each)
_COLS = 1 << 15  # bytes of one chunk of im2col columns (built and consumed while in cache)


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


def _plus_bias(out: np.ndarray, bias: np.ndarray | None, shape: tuple[int, ...]) -> Step | None:
    if bias is None:
        return None
    b = bias.reshape(shape)
    return lambda: np.add(out, b, out=out)


def _chain(*steps: Step | None) -> Step:
    live = [s for s in steps if s is not None]
    if len(live) == 1:
        return live[0]

    def run() -> None:
        for s in live:
            s()

    return run


# --------------------------------------------------------------------------- elementwise


def _bind_binary(ufunc: Any) -> Any:
    def bind(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
        x, y, o = ins[0], ins[1], outs[0]
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
    x, y, o = ins[0], ins[1], outs[0]
    return _chain(lambda: np.add(x, y, out=o), clamp_step(o, a))
for _name, _uf in {**_UNARY_FLOAT, "neg": np.negative, "abs": np.abs, "logical_not": np.logical_not}.items():
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


@binder("gelu")
def _bind_gelu(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    """Exact (erf) GELU in 19 ufunc calls per block: ``relu(x) - |x| * erfc(|x|/sqrt 2) / 2``
    with erfc from Abramowitz-Stegun 7.1.26 (absolute error < 1.5e-7), rewritten so every
    constant folds into a 0-d operand: with ``b = -|x|/2``, ``exp(-x^2/2) = exp(b|x|)`` and
    ``t = 1/(1 + P|x|/sqrt 2) = -K/(b - K)`` for ``K = 1/(P sqrt 2)``; the polynomial's
    coefficients carry the final 1/2."""
    x, o = ins[0], outs[0]
    if a["approximate"] == "tanh":
        kernel = OPS["gelu"].kernel
        return lambda: kernel(ins, outs, a)
    c = lambda v: const(v, x.dtype)  # noqa: E731
    k = 1.0 / (_AS_P * np.sqrt(2.0))
    half, neg_k, k_, zero = c(-0.5), c(-k), c(k), c(0.0)
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
            np.maximum(xb, zero, out=ob)
            sub(ob, pb, out=ob)

    return step


@binder("permute")
def _bind_permute(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    src, o = ins[0].transpose(a["perm"]), outs[0]
    return lambda: np.copyto(o, src)


@binder("softmax")
def _bind_softmax(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    x, o = ins[0], outs[0]
    ax = a["axis"] % x.ndim
    red = tuple(1 if i == ax else d for i, d in enumerate(x.shape))
    m, s = scratch(red, x.dtype), scratch(red, x.dtype)  # distinct: both live at once
    if ax == x.ndim - 1 and o.flags.c_contiguous and o.size:  # row sums as one BLAS matmul with ones
        ones = scratch((x.shape[-1], 1), x.dtype, 1.0)
        o2, s2 = o.reshape(-1, x.shape[-1]), s.reshape(-1, 1)
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
        return _chain(lambda: mm(x2, wt, out=o2), clamp)

    def step() -> None:
        mm(x2, wt, out=o2)
        np.add(o2, b, out=o2)

    return _chain(step, clamp)


@binder("layer_norm")
def _bind_layer_norm(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    """Mean as a BLAS product with a ``1/n`` column and variance as per-row dot products
    (faster than ``add.reduce`` plus a scaling pass on short rows, and no squared copy)."""
    x, out = ins[0], outs[0]
    k = a["normalized_ndim"]
    inner = int(np.prod(x.shape[x.ndim - k :], dtype=np.int64))
    x2, o2 = x.reshape(-1, inner), out.reshape(-1, inner)
    w = ins[1].reshape(inner) if len(ins) > 1 else None
    b = ins[2].reshape(inner) if len(ins) > 2 else None
    mean, var = scratch((x2.shape[0], 1), x.dtype), scratch((x2.shape[0], 1), x.dtype)
    inv = scratch((inner, 1), x.dtype, 1.0 / inner if inner else 0.0)
    inv0, eps = const(1.0 / inner if inner else 0.0, x.dtype), const(a["eps"], x.dtype)
    rows_a, rows_b, var3 = o2.reshape(-1, 1, inner), o2.reshape(-1, inner, 1), var.reshape(-1, 1, 1)

    def step() -> None:
        np.dot(x2, inv, out=mean)
        np.subtract(x2, mean, out=o2)
        np.matmul(rows_a, rows_b, out=var3)  # each row's sum of squares, no squared copy
        np.multiply(var, inv0, out=var)
        np.add(var, eps, out=var)
        np.sqrt(var, out=var)
        np.divide(o2, var, out=o2)
        if w is not None:
            np.multiply(o2, w, out=o2)
        if b is not None:
            np.add(o2, b, out=o2)

    return step


# --------------------------------------------------------------------------- convolution


def _bind_depthwise_rows(x: np.ndarray, w: np.ndarray, out: np.ndarray, bias: np.ndarray | None, a: dict[str, Any]) -> Step:
    """Stride-1 depthwise conv as BLAS: ``kw`` zero-padded copies of each plane, copy ``j``
    shifted left by ``j * dw`` elements, so for kernel row ``i`` the ``kw`` taps of a plane are
    the rows of one ``[kw, OH * Wp]`` matrix with a row stride (``i * dh * Wp`` into every copy)
    and the row's contribution is one batched ``[1, kw] @ [kw, OH * Wp]`` matmul per channel
    block ("wide" rows as in :func:`_bind_depthwise`)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh, ow = out.shape[2], out.shape[3]
    (ph, pw), (dh, dw) = a["padding"], a["dilation"]
    mult, rows, hp, wp = o // c, n * o, h + 2 * ph, wd + 2 * pw
    span, plane = oh * wp, hp * wp
    cb = max(1, min(rows, _BLOCK // max(1, span)))
    cb = max(mult, cb // mult * mult)  # whole groups of one input channel's outputs
    buf = scratch((cb, kw, plane), x.dtype, 0.0)  # borders zeroed once, interiors rewritten per block
    xf = x.reshape(n * c, 1, h, wd)
    tw = scratch((kh, n, o, kw), x.dtype)  # [row, batch, channel, tap] weight copies
    wsrc = w.reshape(o, kh, kw).transpose(1, 0, 2)[:, None]
    brows = None if bias is None else scratch((n, o), x.dtype)

    def refresh() -> None:
        np.copyto(tw, wsrc)
        if brows is not None:
            np.copyto(brows, bias)

    refresh()
    wrows = tw.reshape(kh, rows, 1, kw)
    brows3 = None if brows is None else brows.reshape(rows, 1, 1)
    wide, tmp = scratch((cb, 1, span), x.dtype, temp=True), scratch((cb, 1, span), x.dtype, temp=True)
    out3 = out.reshape(rows, oh, ow)
    blocks = []
    for r0 in range(0, rows, cb):
        r1 = min(rows, r0 + cb)
        k = r1 - r0
        src = xf[r0 // mult : r1 // mult]
        fills = []
        for j in range(kw):  # x column q lands at column pw + q - j*dw of copy j (reads never need < 0)
            lo = max(0, j * dw - pw)
            dst = buf[:k, j].reshape(k // mult, mult, hp, wp)[:, :, ph : ph + h, pw + lo - j * dw : pw + wd - j * dw]
            fills.append((dst, src[..., lo:]))
        mats = [(buf[:k, :, i * dh * wp : i * dh * wp + span], wrows[i, r0:r1]) for i in range(kh)]
        valid = wide[:k].reshape(k, oh, wp)[:, :, :ow]
        dst3 = out3[r0:r1]
        b = None if brows3 is None else brows3[r0:r1]
        blocks.append((fills, mats, wide[:k], tmp[:k], valid, dst3, b, clamp_step(dst3, a)))
    matmul, add, copyto = np.matmul, np.add, np.copyto
    computed = w.flags.writeable or (bias is not None and bias.flags.writeable)

    def step() -> None:
        if computed:
            refresh()
        for fills, mats, acc, t, valid, dst, b, clamp in blocks:
            for f_dst, f_src in fills:
                copyto(f_dst, f_src)
            m0, w0 = mats[0]
            matmul(w0, m0, out=acc)
            for m, wt in mats[1:]:
                matmul(wt, m, out=t)
                add(acc, t, out=acc)
            if b is None:
                copyto(dst, valid)
            else:
                add(valid, b, out=dst)
            if clamp is not None:
                clamp()

    return step


def _bind_depthwise(x: np.ndarray, w: np.ndarray, out: np.ndarray, bias: np.ndarray | None, a: dict[str, Any]) -> Step:
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh, ow = out.shape[2], out.shape[3]
    (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
    mult, rows, hp = o // c, n * o, h + 2 * ph
    wp = wd + 2 * pw
    wp += (-wp) % sw  # a multiple of the column stride, so every tap is one strided slice
    wq = sh * wp // sw  # wide-output columns per output row
    span = oh * wq
    offsets = [i * dh * wp + j * dw for i in range(kh) for j in range(kw)]
    # one channel block at a time is padded into ``buf`` (borders zeroed once, interior
    # overwritten per block), so the padded copy is block-sized and still in cache for the taps
    cb = max(1, min(rows, _BLOCK // max(1, span)))
    cb = max(mult, cb // mult * mult)  # whole groups of one input channel's outputs
    buf = scratch((cb, max(hp * wp, max(offsets) + sw * (span - 1) + 1)), x.dtype, 0.0)
    xf = x.reshape(n * c, 1, h, wd)
    # per-row copies of the tap weights and bias ([tap, batch, channel]); refreshed before each
    # call when they are computed values (e.g. dequantized int8 weights) rather than file weights
    tw = scratch((kh * kw, n, o), x.dtype)
    wsrc = w.reshape(o, kh * kw).T[:, None, :]
    brows = None if bias is None else scratch((n, o), x.dtype)

    def refresh() -> None:
        np.copyto(tw, wsrc)
        if brows is not None:
            np.copyto(brows, bias)

    refresh()
    taps = [t.reshape(rows, 1) for t in tw]
    brows3 = None if brows is None else brows.reshape(rows, 1, 1)
    wide, tmp = scratch((cb, span), x.dtype, temp=True), scratch((cb, span), x.dtype, temp=True)
    out3 = out.reshape(rows, oh, ow)
    blocks = []
    for r0 in range(0, rows, cb):
        r1 = min(rows, r0 + cb)
        k = r1 - r0
        interior = buf[:k, : hp * wp].reshape(k // mult, mult, hp, wp)[:, :, ph : ph + h, pw : pw + wd]
        views = [buf[:k, off : off + sw * (span - 1) + 1 : sw] for off in offsets]
        wts = [t[r0:r1] for t in taps]
        valid = wide[:k].reshape(k, oh, wq)[:, :, :ow]
        dst = out3[r0:r1]
        b = None if brows3 is None else brows3[r0:r1]
        blocks.append((interior, xf[r0 // mult : r1 // mult], wide[:k], tmp[:k], list(zip(views, wts)), valid, dst, b, clamp_step(dst, a)))
    mul, add, copyto = np.multiply, np.add, np.copyto
    computed = w.flags.writeable or (bias is not None and bias.flags.writeable)

    def step() -> None:
        if computed:
            refresh()
        for interior, src, acc, t, pairs, valid, dst, b, clamp in blocks:
            copyto(interior, src)
            v0, w0 = pairs[0]
            mul(v0, w0, out=acc)
            for v, wt in pairs[1:]:
                mul(v, wt, out=t)
                add(acc, t, out=acc)
            if b is None:
                copyto(dst, valid)
            else:
                add(valid, b, out=dst)
            if clamp is not None:
                clamp()  # while the block is in cache

    return step


def _padded(x: np.ndarray, ph: int, pw: int, value: float = 0.0, extra_h: int = 0, extra_w: int = 0) -> tuple[np.ndarray, Step | None]:
    """A padded copy of ``x`` in the step's temp region and the step refilling it (border value
    and interior) before each use."""
    if not (ph or pw or extra_h or extra_w):
        return x, None
    n, c, h, w = x.shape
    xp = scratch((n, c, h + 2 * ph + extra_h, w + 2 * pw + extra_w), x.dtype, temp=True)
    inner, border = xp[:, :, ph : ph + h, pw : pw + w], const(value, x.dtype)

    def fill() -> None:
        np.copyto(xp, border)
        np.copyto(inner, x)

    return xp, fill


@binder("conv2d")
def _bind_conv2d(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    """Depthwise: :func:`_bind_depthwise_rows` / :func:`_bind_depthwise`; 1x1 stride-1 unpadded:
    one matmul; otherwise im2col in chunks of whole output rows (at most ``_COLS`` bytes of
    columns each), each chunk's columns copied and multiplied while in cache."""
    x, w, out = ins[0], ins[1], outs[0]
    bias = ins[2] if len(ins) == 3 else None
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    oh, ow = out.shape[2], out.shape[3]
    g = a["groups"]
    if g == c and cg == 1:
        return (_bind_depthwise_rows if list(a["stride"]) == [1, 1] else _bind_depthwise)(x, w, out, bias, a)
    if g != 1:  # grouped, not depthwise: the plain kernel (clamp included)
        kernel = OPS["conv2d"].kernel
        return lambda: kernel(ins, outs, a)
    wm, o3 = w.reshape(o, c * kh * kw), out.reshape(n, o, oh * ow)
    add_bias = _plus_bias(o3, bias, (1, o, 1))
    clamp = clamp_step(o3, a)
    if kh == kw == 1 and list(a["stride"]) == [1, 1] and list(a["padding"]) == [0, 0]:
        x3 = x.reshape(n, c, -1)
        return _chain(lambda: np.matmul(wm, x3, out=o3), add_bias, clamp)
    (sh, sw), (ph, pw), d = a["stride"], a["padding"], tuple(a["dilation"])
    xp, fill = _padded(x, ph, pw)
    win = _windows(xp, kh, kw, (sh, sw), d, oh, ow).transpose(0, 1, 4, 5, 2, 3)
    rows = max(1, min(oh, _COLS // max(1, n * c * kh * kw * ow * x.dtype.itemsize)))
    cols = scratch((n, c * kh * kw, rows * ow), x.dtype, temp=True)
    chunks = []
    for r0 in range(0, oh, rows):
        r1 = min(oh, r0 + rows)
        part = cols[:, :, : (r1 - r0) * ow]
        chunks.append((part.reshape(n, c, kh, kw, r1 - r0, ow), win[:, :, :, :, r0:r1], part, o3[:, :, r0 * ow : r1 * ow]))
    copyto, matmul = np.copyto, np.matmul

    def im2col() -> None:
        for cols6, src, part, dst in chunks:
            copyto(cols6, src)
            matmul(wm, part, out=dst)

    return _chain(fill, im2col, add_bias, clamp)


# --------------------------------------------------------------------------- pooling


def _pool_taps(x: np.ndarray, out: np.ndarray, a: dict[str, Any], value: float) -> tuple[list[np.ndarray], Step | None]:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _pool_params(a)
    oh, ow = out.shape[2], out.shape[3]
    extra_h = max(0, (oh - 1) * sh + (kh - 1) * dh + 1 - (x.shape[2] + 2 * ph))
    extra_w = max(0, (ow - 1) * sw + (kw - 1) * dw + 1 - (x.shape[3] + 2 * pw))
    xp, fill = _padded(x, ph, pw, value, extra_h, extra_w)
    taps = [
        xp[:, :, i * dh : i * dh + (oh - 1) * sh + 1 : sh, j * dw : j * dw + (ow - 1) * sw + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    return taps, fill


def _window_reduce(taps: list[np.ndarray], out: np.ndarray, ufunc: Any) -> None:
    np.copyto(out, taps[0])
    for t in taps[1:]:
        ufunc(out, t, out=out)


def avg_pool_count(x: np.ndarray, out: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    """Divisor of each avg_pool2d window ([1, 1, OH, OW]): ``divisor``, or the number of cells
    inside the padded input (``count_include_pad``) or the input itself.

    Example:
        >>> a = {"kernel": [2, 2], "stride": [2, 2], "padding": [1, 1], "ceil_mode": False,
        ...      "count_include_pad": False, "divisor": 0}
        >>> avg_pool_count(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)), a).ravel().tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    if a["divisor"]:
        return np.full((1, 1, 1, 1), a["divisor"], out.dtype)
    h, w = x.shape[2], x.shape[3]
    ph, pw = _pair(a["padding"], "padding")
    ones = np.zeros((1, 1, h + 2 * ph, w + 2 * pw), out.dtype)
    if a["count_include_pad"]:
        ones[...] = 1
    else:
        ones[:, :, ph : ph + h, pw : pw + w] = 1
    count = np.empty((1, 1, out.shape[2], out.shape[3]), out.dtype)
    taps, fill = _pool_taps(ones, count, {**a, "padding": [0, 0]}, 0.0)
    if fill is not None:  # windows running past the padded input (ceil_mode)
        fill()
    _window_reduce(taps, count, np.add)
    return count


@binder("max_pool2d")
def _bind_max_pool2d(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    out = outs[0]
    taps, fill = _pool_taps(ins[0], out, a, -np.inf)
    return _chain(fill, lambda: _window_reduce(taps, out, np.maximum))


@binder("avg_pool2d")
def _bind_avg_pool2d(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    x, out = ins[0], outs[0]
    taps, fill = _pool_taps(x, out, a, 0.0)
    count = avg_pool_count(x, out, a)

    def step() -> None:
        _window_reduce(taps, out, np.add)
        np.divide(out, count, out=out)

    return _chain(fill, step)


@binder("adaptive_avg_pool2d")
def _bind_adaptive(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    x, out = ins[0], outs[0]
    n, c, h, w = x.shape
    oh, ow = a["output_size"]
    if h % oh or w % ow:
        kernel = OPS["adaptive_avg_pool2d"].kernel
        return lambda: kernel(ins, outs, a)
    x6 = x.reshape(n, c, oh, h // oh, ow, w // ow)
    inv = x.dtype.type(1.0 / ((h // oh) * (w // ow)))

    def step() -> None:
        np.add.reduce(x6, axis=(3, 5), out=out)
        np.multiply(out, inv, out=out)

    return step


__all__ = ["OPS"]
