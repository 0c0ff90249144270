"""Load-time binders of the convolution and pooling ops (see ``bound.py`` for binders in general).

- depthwise (``groups == in_channels``): the optional native kernel (``native/``, float32)
  when it is built; otherwise, in numpy, one cache-sized channel block at a time: the block
  is copied into a zero-padded row buffer where each (batch, channel) plane is one flat row of
  ``Hp * Wp`` values. Stride 1 (:func:`_bind_depthwise_rows`): ``kw`` such rows per plane,
  shifted by ``j * dw``, so the taps of one kernel row form one BLAS matrix and the row is one
  batched ``[1, kw] @ [kw, OH * Wp]`` matmul per channel. Other strides
  (:func:`_bind_depthwise`): for stride ``(sh, sw)`` and dilation ``(dh, dw)``, kernel tap
  ``(i, j)`` is the 1-D strided slice ``row[i*dh*Wp + j*dw :: sw]`` of length ``OH * Wq``
  (``Wq = sh * Wp / sw``), so a tap is one long vectorised multiply-add over whole planes.
  Both compute "wide" output rows whose ``Wq - OW`` junk columns are dropped (and bias added) by
  the final copy into the output;
- other convolutions: a padded copy in the temp region, then im2col in chunks of output rows
  (at most ``_COLS`` bytes of columns each), each chunk copied and multiplied while in cache;
- 1x1 stride-1 unpadded: a matmul straight from the input view.

Pooling takes the kernel taps as strided views of a padded copy (temp region). The plain
``conv2d`` kernel (depthwise case) and the pool kernels run these binders once per call.

Example:
    >>> import numpy as np
    >>> from torchship.edge.runtime.registry import OPS, bind_step
    >>> x, o = np.arange(16.0).reshape(1, 1, 4, 4), np.empty((1, 1, 2, 2))
    >>> step = bind_step(OPS["max_pool2d"], [x], [o], {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0], "dilation": [1, 1], "ceil_mode": False})
    >>> _ = step(); o.ravel().tolist()
    [5.0, 7.0, 13.0, 15.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torchship.edge.runtime.bound import chain, const, plus_bias, scratch
from torchship.edge.runtime.native import depthwise_step
from torchship.edge.runtime.nn_ops import _pair, _pool_params, _windows
from torchship.edge.runtime.ops import clamp_step
from torchship.edge.runtime.registry import OPS, Step, binder

Arrays = list[np.ndarray]
_BLOCK = 1 << 15  # elements of one channel block of the depthwise wide buffers (fits in L2)
_COLS = 1 << 15  # bytes of one chunk of im2col columns (built and consumed while in cache)


# --------------------------------------------------------------------------- convolution


def _depthwise_block(product: Any, pairs: list[tuple[np.ndarray, np.ndarray]], acc: np.ndarray,
                     tmp: np.ndarray, valid: np.ndarray, dst: np.ndarray, bias: np.ndarray | None,
                     clamp: Step | None) -> None:
    """One channel block of a depthwise binder: ``acc = Σ product(a, b)`` over the (operand,
    weight) pairs, then its valid part (+ bias) into ``dst``, clamped while still in cache."""
    a0, b0 = pairs[0]
    product(a0, b0, out=acc)
    for a_, b_ in pairs[1:]:
        product(a_, b_, out=tmp)
        np.add(acc, tmp, out=acc)
    if bias is None:
        np.copyto(dst, valid)
    else:
        np.add(valid, bias, out=dst)
    if clamp is not None:
        clamp()


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
        mats = [(wrows[i, r0:r1], buf[:k, :, i * dh * wp : i * dh * wp + span]) for i in range(kh)]
        valid = wide[:k].reshape(k, oh, wp)[:, :, :ow]
        dst3 = out3[r0:r1]
        b = None if brows3 is None else brows3[r0:r1]
        blocks.append((fills, mats, wide[:k], tmp[:k], valid, dst3, b, clamp_step(dst3, a)))
    matmul, copyto = np.matmul, np.copyto
    computed = w.flags.writeable or (bias is not None and bias.flags.writeable)

    def step() -> None:
        if computed:
            refresh()
        for fills, mats, *rest in blocks:
            for f_dst, f_src in fills:
                copyto(f_dst, f_src)
            _depthwise_block(matmul, mats, *rest)

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
        blocks.append((interior, xf[r0 // mult : r1 // mult], list(zip(views, wts)), wide[:k], tmp[:k], valid, dst, b, clamp_step(dst, a)))
    mul, copyto = np.multiply, np.copyto
    computed = w.flags.writeable or (bias is not None and bias.flags.writeable)

    def step() -> None:
        if computed:
            refresh()
        for interior, src, pairs, *rest in blocks:
            copyto(interior, src)
            _depthwise_block(mul, pairs, *rest)

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
    """Depthwise: the native kernel when available (``native/``), else
    :func:`_bind_depthwise_rows` / :func:`_bind_depthwise`; 1x1 stride-1 unpadded:
    one matmul; otherwise im2col in chunks of whole output rows (at most ``_COLS`` bytes of
    columns each), each chunk's columns copied and multiplied while in cache."""
    x, w, out = ins[0], ins[1], outs[0]
    bias = ins[2] if len(ins) == 3 else None
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    oh, ow = out.shape[2], out.shape[3]
    g = a["groups"]
    if g == c and cg == 1:
        step = depthwise_step(x, w, bias, out, stride=a["stride"], padding=a["padding"], dilation=a["dilation"],
                              lo=a.get("clamp_min"), hi=a.get("clamp_max"))
        if step is not None:
            return step
        return (_bind_depthwise_rows if list(a["stride"]) == [1, 1] else _bind_depthwise)(x, w, out, bias, a)
    if g != 1:  # grouped, not depthwise: the plain kernel (clamp included)
        kernel = OPS["conv2d"].kernel
        return lambda: kernel(ins, outs, a)
    wm, o3 = w.reshape(o, c * kh * kw), out.reshape(n, o, oh * ow)
    add_bias = plus_bias(o3, bias, (1, o, 1))
    clamp = clamp_step(o3, a)
    if kh == kw == 1 and list(a["stride"]) == [1, 1] and list(a["padding"]) == [0, 0]:
        x3 = x.reshape(n, c, -1)
        return chain(lambda: np.matmul(wm, x3, out=o3), add_bias, clamp)
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

    return chain(fill, im2col, add_bias, clamp)


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
    return chain(fill, lambda: _window_reduce(taps, out, np.maximum))


@binder("avg_pool2d")
def _bind_avg_pool2d(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    x, out = ins[0], outs[0]
    taps, fill = _pool_taps(x, out, a, 0.0)
    count = avg_pool_count(x, out, a)

    def step() -> None:
        _window_reduce(taps, out, np.add)
        np.divide(out, count, out=out)

    return chain(fill, step)


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


__all__ = ["OPS", "avg_pool_count"]
