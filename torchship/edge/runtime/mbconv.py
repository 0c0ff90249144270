"""The ``fused_mbconv`` op: 1x1 expand -> clamp -> depthwise -> clamp -> 1x1 project [+ x] -> clamp.

Semantics (docs/edge-ops.md) are those of the unfused chain of ``conv2d`` ops; the binder never
materialises the whole expanded or depthwise maps. Per image, it walks the hidden channels in
**blocks of whole padded planes** (``_BAND`` elements) and, per block:

1. expand: one GEMM ``[cb, Cin+1] @ [Cin+1, Hp*Wp]`` from a zero-padded copy of the input that
   carries a row of ones inside the image (so the bias comes out of the GEMM and the padded
   border of the expanded maps is exactly zero), then the expand clamp in place;
2. depthwise: one call of the optional native kernel (``native/``) per block when it is
   built (expand clamp, bias and clamp fused, planes read in place); else, in numpy, in
   smaller channel blocks (``_BLOCK``), on "wide" rows of ``Wp`` columns: stride 1 as ``kw``
   shifted copies plus a row of ones (the bias) and one batched
   ``[1, kw(+1)] @ [kw(+1), OH*Wp]`` BLAS product per kernel row; other strides as one strided
   multiply-add per tap. The valid columns go, clamped, into the block's depthwise maps ``D``;
3. project: ``[Cout, cb] @ D`` into the output (the first block's product also carries the
   bias through a row of ones under ``D``, later blocks add theirs), then the residual add and
   the final clamp.

So the hidden maps cost a block of channels (a few hundred KiB) instead of two full maps. With
the native depthwise the blocks are larger (``_NATIVE_BAND``) and of equal size: its cost does
not grow with the block, while both GEMMs run faster on fewer, fuller blocks (192x56x56 hidden
map: 3 blocks of 64 channels, 1.29 ms for the block vs 1.41 ms with 4 blocks of 48).
Row bands (all channels, a few output rows at a time) were measured as well and were slower on
the 192x56x56 hidden map: each batched depthwise product is one BLAS call per channel, so
bands multiply the number of calls.

Example:
    >>> import numpy as np
    >>> from torchship.edge.runtime.registry import OPS, bind_step
    >>> x = np.ones((1, 2, 3, 3), np.float32)
    >>> w1, b1 = np.ones((4, 2, 1, 1), np.float32), np.zeros(4, np.float32)
    >>> wd, bd = np.ones((4, 1, 3, 3), np.float32), np.zeros(4, np.float32)
    >>> w3, b3 = np.ones((2, 4, 1, 1), np.float32), np.zeros(2, np.float32)
    >>> out = np.empty((1, 2, 3, 3), np.float32)
    >>> a = {**{k: d for k, (_, d) in OPS["fused_mbconv"].attrs.items()}, "padding": [1, 1]}
    >>> bind_step(OPS["fused_mbconv"], [x, w1, b1, wd, bd, w3, b3], [out], a)()
    >>> out[0, 0].tolist()  # each hidden channel is 2; the depthwise sums 4, 6 or 9 cells; 4 channels
    [[32.0, 48.0, 32.0], [48.0, 72.0, 48.0], [32.0, 48.0, 32.0]]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torchship.edge.runtime.bound import const, scratch
from torchship.edge.runtime.dims import FLOATS
from torchship.edge.runtime.native import active as native_active
from torchship.edge.runtime.native import depthwise_step
from torchship.edge.runtime.nn_ops import _conv_out, _pair
from torchship.edge.runtime.ops import _CLIP, _fail, _same_dtype
from torchship.edge.runtime.registry import OPS, Shape, Step, binder, register

Arrays = list[np.ndarray]
_BAND = 1 << 17  # elements of one block of expanded maps (whole padded planes of a few channels)
_BLOCK = 1 << 17  # elements of one depthwise channel block's working copies
_NATIVE_BAND = 1 << 18  # elements of one block of expanded maps when the depthwise is native (split evenly)

MBCONV_ATTRS: dict[str, tuple[str, Any]] = {
    "stride": ("ints", [1, 1]),
    "padding": ("ints", [0, 0]),
    "dilation": ("ints", [1, 1]),
    "expand_min": ("float?", None),
    "expand_max": ("float?", None),
    "depthwise_min": ("float?", None),
    "depthwise_max": ("float?", None),
    "residual": ("bool", False),
    "clamp_min": ("float?", None),
    "clamp_max": ("float?", None),
}


def _bounds(a: dict[str, Any], key: str) -> tuple[float | None, float | None]:
    lo, hi = a[f"{key}_min"], a[f"{key}_max"]
    lo, hi = (None if lo is None else float(lo)), (None if hi is None else float(hi))
    if lo is not None and hi is not None and lo > hi:
        _fail(f"fused_mbconv: {key}_min {lo} > {key}_max {hi}")
    return lo, hi


def _infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    dt = _same_dtype(dtypes, FLOATS)
    x, w1, b1, wd, bd, w3, b3 = shapes
    if len(x) != 4:
        _fail(f"fused_mbconv: input {x} must be 4-D (NCHW)")
    n, c, h, w = x
    ch, co = (w1[0] if w1 else -1), (w3[0] if w3 else -1)
    if w1 != (ch, c, 1, 1) or b1 != (ch,):
        _fail(f"fused_mbconv: expand weight {w1} / bias {b1} must be [Ch, {c}, 1, 1] / [Ch]")
    if len(wd) != 4 or wd[:2] != (ch, 1) or bd != (ch,):
        _fail(f"fused_mbconv: depthwise weight {wd} / bias {bd} must be [{ch}, 1, kh, kw] / [{ch}]")
    if w3 != (co, ch, 1, 1) or b3 != (co,):
        _fail(f"fused_mbconv: project weight {w3} / bias {b3} must be [Cout, {ch}, 1, 1] / [Cout]")
    (sh, sw), (ph, pw), (dh, dw) = (_pair(a[k], k) for k in ("stride", "padding", "dilation"))
    if min(sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        _fail("fused_mbconv: stride and dilation must be >= 1, padding >= 0")
    lo, hi = _bounds(a, "expand")
    if (lo is not None and lo > 0) or (hi is not None and hi < 0):
        _fail(f"fused_mbconv: the expand clamp [{lo}, {hi}] must contain 0")
    _bounds(a, "depthwise")
    _bounds(a, "clamp")
    shape = (n, co, _conv_out(h, wd[2], sh, ph, dh), _conv_out(w, wd[3], sw, pw, dw))
    if a["residual"] and shape != x:
        _fail(f"fused_mbconv: residual needs the output shape {shape} to equal the input's {x}")
    return [(shape, dt)]


@register("fused_mbconv", 7, _infer, MBCONV_ATTRS)
def _fused_mbconv(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> None:
    _bind_mbconv(ins, outs, a)()


def _clip_into(src: np.ndarray, dst: np.ndarray, bounds: tuple[float | None, float | None]) -> Step:
    """``dst = clamp(src)`` (or a copy when both bounds are null) as one ufunc call."""
    lo, hi = bounds
    if lo is None and hi is None:
        return lambda: np.copyto(dst, src)
    lo_, hi_ = const(-np.inf if lo is None else lo, dst.dtype), const(np.inf if hi is None else hi, dst.dtype)
    return lambda: _CLIP(src, lo_, hi_, out=dst)


def _depthwise_rows(e: np.ndarray, wd: np.ndarray, bd: np.ndarray, a: dict[str, Any], wp: int) -> tuple[int, Any, Any]:
    """Stride-1 depthwise over ``e`` ([cb, L]: expanded padded planes): per channel block,
    ``kw`` copies of the block shifted by ``j * dw`` and a row of ones, so kernel row ``i`` is
    one batched ``[1, kw(+1)] @ [kw(+1), span]`` product per channel (the bias rides on the
    ones row of kernel row 0). Returns (block size, weight refresh, block step factory).
    (Letting the expand GEMM write copy 0 directly, with the copies kept beside every expanded
    plane, measured no faster and doubled the scratch.)"""
    ch, (kh, kw), (dh, dw) = wd.shape[0], wd.shape[2:], a["dilation"]
    length = e.shape[1]
    cb = max(1, min(e.shape[0], _BLOCK // ((kw + 1) * length)))
    buf = scratch((cb, kw + 1, length), e.dtype, 0.0)
    buf[:, kw] = 1.0
    w0, wr = scratch((ch, 1, kw + 1), e.dtype), scratch((kh, ch, 1, kw), e.dtype)

    def refresh() -> None:
        np.copyto(wr, wd.reshape(ch, kh, kw).transpose(1, 0, 2)[:, :, None])
        np.copyto(w0[:, 0, :kw], wd[:, 0, 0])
        np.copyto(w0[:, 0, kw], bd)

    def block(rows: np.ndarray, c0: int, c1: int, acc: np.ndarray, tmp: np.ndarray) -> Step:
        k, nlen, span = c1 - c0, rows.shape[1], acc.shape[2]
        fills = [(buf[:k, j, : nlen - j * dw], rows[:, j * dw : nlen]) for j in range(kw)]
        mats = [(wr[i, c0:c1], buf[:k, :kw, i * dh * wp : i * dh * wp + span]) for i in range(1, kh)]
        first = (w0[c0:c1], buf[:k, :, :span])
        matmul, add, copyto = np.matmul, np.add, np.copyto

        def step() -> None:
            for dst, src in fills:
                copyto(dst, src)
            matmul(*first, out=acc)
            for wt, m in mats:
                matmul(wt, m, out=tmp)
                add(acc, tmp, out=acc)

        return step

    return cb, refresh, block


def _depthwise_taps(e: np.ndarray, wd: np.ndarray, a: dict[str, Any], wp: int) -> tuple[Any, Any]:
    """Any stride: tap ``(i, j)`` of output row ``r``, wide column ``q`` reads flat position
    ``sw * (r * Wq + q) + i*dh*Wp + j*dw`` of the band, one strided multiply-add per tap."""
    ch, (kh, kw), (dh, dw), sw = wd.shape[0], wd.shape[2:], a["dilation"], a["stride"][1]
    offsets = [i * dh * wp + j * dw for i in range(kh) for j in range(kw)]
    taps = scratch((kh * kw, ch, 1), e.dtype)

    def refresh() -> None:
        np.copyto(taps, wd.reshape(ch, kh * kw).T[:, :, None])

    def block(rows: np.ndarray, c0: int, c1: int, acc: np.ndarray, tmp: np.ndarray) -> Step:
        span = acc.shape[2]
        pairs = [(rows[:, off : off + sw * (span - 1) + 1 : sw], taps[t, c0:c1]) for t, off in enumerate(offsets)]
        acc2, tmp2, mul, add = acc[:, 0], tmp[:, 0], np.multiply, np.add

        def step() -> None:
            v0, t0 = pairs[0]
            mul(v0, t0, out=acc2)
            for v, t in pairs[1:]:
                mul(v, t, out=tmp2)
                add(acc2, tmp2, out=acc2)

        return step

    return refresh, block


Bounds = tuple[float | None, float | None]
Dims = tuple[int, int, int, int, int]  # hp, wp (padded plane), oh, ow, wq (wide output row)


def _numpy_blocks(e: np.ndarray, wd: np.ndarray, bd: np.ndarray, d: np.ndarray, a: dict[str, Any], cbo: int,
                  dims: Dims, bounds: Bounds) -> tuple[Step, list[list[Step]]]:
    """The numpy depthwise of each block of ``cbo`` hidden channels (``e`` -> ``d``, bias and
    clamp included) as a list of sub-steps per block, and the step refreshing its weight copies."""
    hp, wp, oh, ow, wq = dims
    ch, (sh, sw), span, dt = wd.shape[0], a["stride"], oh * wq, e.dtype
    bias_col = None
    if sh == sw == 1:
        cb, refresh_taps, dw_block = _depthwise_rows(e, wd, bd, a, wp)
    else:
        cb = max(1, min(cbo, _BLOCK // max(1, span)))
        refresh_taps, dw_block = _depthwise_taps(e, wd, a, wp)
        bias_col = scratch((ch, 1, 1), dt)
    acc, tmp = scratch((cb, 1, span), dt, temp=True), scratch((cb, 1, span), dt, temp=True)
    block_subs = []
    for g0 in range(0, ch, cbo):
        k, subs = min(ch, g0 + cbo) - g0, []
        for c0 in range(0, k, cb):
            c1 = min(k, c0 + cb)
            valid = acc[: c1 - c0, 0].reshape(c1 - c0, oh, wq)[:, :, :ow]
            dst = d[c0:c1].reshape(c1 - c0, oh, ow)
            if bias_col is None:
                finish = _clip_into(valid, dst, bounds)
            else:
                bcol, clip = bias_col[g0 + c0 : g0 + c1], _clip_into(dst, dst, bounds)
                finish = lambda v=valid, o=dst, b=bcol, cl=clip: (np.add(v, b, out=o), cl())  # type: ignore[misc]  # noqa: E731
            subs += [dw_block(e[c0:c1], g0 + c0, g0 + c1, acc[: c1 - c0], tmp[: c1 - c0]), finish]
        block_subs.append(subs)

    def refresh() -> None:
        refresh_taps()
        if bias_col is not None:
            np.copyto(bias_col[:, 0, 0], bd)

    return refresh, block_subs


def _native_blocks(e: np.ndarray, wd: np.ndarray, bd: np.ndarray, d: np.ndarray, a: dict[str, Any], cbo: int,
                   dims: Dims, bounds: Bounds, expand: Bounds) -> list[Step] | None:
    """One native depthwise step per block of ``cbo`` hidden channels (expanded padded planes
    ``e`` -> ``d``; expand clamp, bias and depthwise clamp fused), or None when the native
    kernel is off."""
    hp, wp, oh, ow, _ = dims
    ch, steps = wd.shape[0], []
    for g0 in range(0, ch, cbo):
        k = min(ch, g0 + cbo) - g0
        src = e[:k, : hp * wp].reshape(1, k, hp, wp)
        step = depthwise_step(src, wd[g0 : g0 + k], bd[g0 : g0 + k], d[:k].reshape(1, k, oh, ow),
                              stride=a["stride"], padding=(0, 0), dilation=a["dilation"],
                              lo=bounds[0], hi=bounds[1], plane_stride=e.shape[1], clamp_input=expand)
        if step is None:
            return None
        steps.append(step)
    return steps


@binder("fused_mbconv")
def _bind_mbconv(ins: Arrays, outs: Arrays, a: dict[str, Any]) -> Step:
    x, w1, b1, wd, bd, w3, b3 = ins
    out = outs[0]
    n, c, h, wdt = x.shape
    ch, co, (kh, kw) = w1.shape[0], w3.shape[0], wd.shape[2:]
    oh, ow = out.shape[2], out.shape[3]
    (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
    dt = x.dtype
    wp = wdt + 2 * pw
    wp += (-wp) % sw  # every tap of a wide output row is one strided slice
    hp, wq = h + 2 * ph, sh * wp // sw
    span = oh * wq
    # the padded input plus a row of ones inside the image: the expand GEMM adds the bias and
    # leaves the border of the expanded map exactly zero (the expand clamp contains 0)
    plane = max(hp * wp, (kh - 1) * dh * wp + (kw - 1) * dw + sw * (span - 1) + 1)
    xp = scratch((c + 1, plane), dt, 0.0)
    xp[c, : hp * wp].reshape(hp, wp)[ph : ph + h, pw : pw + wdt] = 1.0
    xin = xp[:c, : hp * wp].reshape(c, hp, wp)[:, ph : ph + h, pw : pw + wdt]
    if dt == np.float32 and native_active():  # native depthwise: larger, even blocks (fewer, fuller GEMMs)
        cbo = -(-ch // -(-ch * plane // _NATIVE_BAND))
    else:
        cbo = max(1, min(ch, _BAND // plane))  # hidden channels expanded at a time
    w1a, w3a = scratch((ch, c + 1), dt), scratch((co, ch + 1), dt)  # w3a: [W3[:, :cbo], b3, W3[:, cbo:]]
    e = scratch((cbo, plane), dt, 0.0)  # the block's expanded maps (slack past hp*wp: junk columns only)
    d = scratch((cbo + 1, oh * ow), dt, 0.0)  # the block's depthwise maps + a row of ones (project bias)
    d[cbo] = 1.0
    dw_bounds = _bounds(a, "depthwise")
    dims = (hp, wp, oh, ow, wq)
    lo, hi = _bounds(a, "expand")
    natives = _native_blocks(e, wd, bd, d, a, cbo, dims, dw_bounds, (lo, hi))
    clamp_expand = natives is None and (lo is not None or hi is not None)  # else fused in the native step
    if natives is None:
        refresh_dw, block_subs = _numpy_blocks(e, wd, bd, d, a, cbo, dims, dw_bounds)
    else:  # the native kernel reads the depthwise weights in place: nothing to refresh
        refresh_dw, block_subs = (lambda: None), [[s] for s in natives]
    part = scratch((co, oh * ow), dt, temp=True) if cbo < ch else None  # later blocks' project terms

    def refresh() -> None:
        np.copyto(w1a[:, :c], w1.reshape(ch, c))
        np.copyto(w1a[:, c], b1)
        w3m = w3.reshape(co, ch)
        np.copyto(w3a[:, :cbo], w3m[:, :cbo])
        np.copyto(w3a[:, cbo], b3)
        np.copyto(w3a[:, cbo + 1 :], w3m[:, cbo:])
        refresh_dw()

    refresh()
    lo_, hi_ = const(-np.inf if lo is None else lo, dt), const(np.inf if hi is None else hi, dt)
    blocks = []
    for g0, subs in zip(range(0, ch, cbo), block_subs):
        g1 = min(ch, g0 + cbo)
        k = g1 - g0
        # the first block's project GEMM carries the bias (w3a's column cbo times d's ones row);
        # later blocks accumulate
        proj = (w3a[:, : cbo + 1], d) if g0 == 0 else (w3a[:, g0 + 1 : g1 + 1], d[:k])
        blocks.append((w1a[g0:g1], e[:k, : hp * wp], subs, proj, g0 == 0))
    out3, x3 = out.reshape(n, co, oh * ow), x.reshape(n, c, h * wdt)
    res = a["residual"]
    out_bounds = _bounds(a, "clamp")
    finals = [(x[ni], out3[ni], x3[ni], _clip_into(out3[ni], out3[ni], out_bounds) if any(v is not None for v in out_bounds) else None) for ni in range(n)]
    computed = any(t.flags.writeable for t in (w1, b1, wd, bd, w3, b3))
    matmul, add, copyto, xrows = np.matmul, np.add, np.copyto, xp[:, : hp * wp]

    def step() -> None:
        if computed:
            refresh()
        for xi, o, x2, clamp in finals:
            copyto(xin, xi)
            for w1b, eb, subs, (w3b, db), first in blocks:
                matmul(w1b, xrows, out=eb)
                if clamp_expand:
                    _CLIP(eb, lo_, hi_, out=eb)
                for sub in subs:
                    sub()
                if first:
                    matmul(w3b, db, out=o)
                else:
                    matmul(w3b, db, out=part)
                    add(o, part, out=o)
            if res:
                add(o, x2, out=o)
            if clamp is not None:
                clamp()

    return step


__all__ = ["MBCONV_ATTRS", "OPS"]
