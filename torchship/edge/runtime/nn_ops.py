"""Core ops, part 2: linear algebra, convolution, pooling and normalisation (numpy kernels).

``linear``/``matmul`` go to BLAS through ``np.matmul``; ``conv2d`` is a direct matmul for 1x1
and im2col (``sliding_window_view``) + matmul otherwise — no Python loop over pixels anywhere.
Depthwise conv2d and the pools run through their load-time binders (``bound.py``); these plain
kernels serve constant folding and ops without a binder.

Example:
    >>> import numpy as np
    >>> out = np.empty((2, 3), np.float32)
    >>> OPS["linear"].kernel([np.ones((2, 4), np.float32), np.ones((3, 4), np.float32)], [out], {"transposed": False})
    >>> out[0].tolist()
    [4.0, 4.0, 4.0]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from torchship.edge.runtime.dims import FLOATS, ProgramError
from torchship.edge.runtime.ops import (
    CLAMP_ATTRS,
    _bcast,
    _fail,
    _same_dtype,
    apply_clamp,
    check_clamp,
)
from torchship.edge.runtime.registry import OPS, Shape, register, required

R = required()


def _linear_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    dt = _same_dtype(dtypes, FLOATS)
    x, w = shapes[0], shapes[1]
    if len(w) == 2 and a["transposed"]:
        w = (w[1], w[0])
    if len(w) != 2 or not x or x[-1] != w[1]:
        want = "[K, N]" if a["transposed"] else "[N, K]"
        _fail(f"linear: input {x} and weight {shapes[1]} (expected [..., K] and {want})")
    if len(shapes) == 3 and shapes[2] != (w[0],):
        _fail(f"linear: bias {shapes[2]} must be [{w[0]}]")
    check_clamp(a, dt)
    return [((*x[:-1], w[0]), dt)]


@register("linear", (2, 3), _linear_infer, {"transposed": ("bool", False), **CLAMP_ATTRS})
def _linear(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    x, w = ins[0], ins[1]
    out = outs[0]
    x2 = x.reshape(-1, x.shape[-1])
    o2 = out.reshape(-1, out.shape[-1])
    np.matmul(x2, w if a["transposed"] else w.T, out=o2)
    if len(ins) == 3:
        np.add(o2, ins[2], out=o2)
    apply_clamp(out, a)


def _matmul_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    dt = _same_dtype(dtypes, FLOATS)
    x, y = shapes
    if len(x) < 2 or len(y) < 2 or x[-1] != y[-2]:
        _fail(f"matmul: shapes {x} and {y} (expected [..., M, K] and [..., K, N])")
    return [((*_bcast([x[:-2], y[:-2]]), x[-2], y[-1]), dt)]


@register("matmul", 2, _matmul_infer)
def _matmul(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    np.matmul(ins[0], ins[1], out=outs[0])


# --------------------------------------------------------------------------- convolution


def _pair(v: list[int], what: str) -> tuple[int, int]:
    if len(v) != 2:
        _fail(f"{what} must have 2 values, got {v}")
    return v[0], v[1]


def _conv_out(size: int, k: int, s: int, p: int, d: int, ceil: bool = False) -> int:
    span = d * (k - 1) + 1
    num = size + 2 * p - span
    if num < 0:
        _fail(f"window of {span} (kernel {k}, dilation {d}) is larger than the padded input {size + 2 * p}")
    out = (-(-num // s) if ceil else num // s) + 1
    if ceil and (out - 1) * s >= size + p:  # last window must start inside input or left padding
        out -= 1
    return out


def _conv_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    dt = _same_dtype(dtypes, FLOATS)
    x, w = shapes[0], shapes[1]
    g = a["groups"]
    if len(x) != 4 or len(w) != 4:
        _fail(f"conv2d: input {x} and weight {w} must be 4-D (NCHW, OIHW)")
    if g < 1 or x[1] != w[1] * g or w[0] % g:
        _fail(f"conv2d: {x[1]} input channels, weight {w}, groups {g} are inconsistent")
    if len(shapes) == 3 and shapes[2] != (w[0],):
        _fail(f"conv2d: bias {shapes[2]} must be [{w[0]}]")
    (sh, sw), (ph, pw), (dh, dw) = (_pair(a[k], k) for k in ("stride", "padding", "dilation"))
    if min(sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        _fail("conv2d: stride and dilation must be >= 1, padding >= 0")
    check_clamp(a, dt)
    oh = _conv_out(x[2], w[2], sh, ph, dh)
    ow = _conv_out(x[3], w[3], sw, pw, dw)
    return [((x[0], w[0], oh, ow), dt)]


def _pad(x: np.ndarray, ph: int, pw: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x


def _windows(xp: np.ndarray, kh: int, kw: int, s: tuple[int, int], d: tuple[int, int], oh: int, ow: int) -> np.ndarray:
    """[N, C, OH, OW, kh, kw] strided view of the padded input (no copy)."""
    win = sliding_window_view(xp, ((kh - 1) * d[0] + 1, (kw - 1) * d[1] + 1), axis=(2, 3))
    return win[:, :, : (oh - 1) * s[0] + 1 : s[0], : (ow - 1) * s[1] + 1 : s[1], :: d[0], :: d[1]]


def _run_bound(name: str, ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    """Run op ``name`` once through its load-time binder (``bound_conv.py``, which imports this module)."""
    from torchship.edge.runtime import bound_conv  # noqa: F401  (registers the binders)

    bind = OPS[name].bind
    assert bind is not None, name
    bind(ins, outs, a)()


@register(
    "conv2d",
    (2, 3),
    _conv_infer,
    {"stride": ("ints", [1, 1]), "padding": ("ints", [0, 0]), "dilation": ("ints", [1, 1]), "groups": ("int", 1), **CLAMP_ATTRS},
)
def _conv2d(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    x, w = ins[0], ins[1]
    out = outs[0]
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    _, _, oh, ow = out.shape
    g = a["groups"]
    if g == c and cg == 1:  # depthwise (channel multiplier o // c): see bound_conv._bind_depthwise
        _run_bound("conv2d", ins, outs, a)
        return
    s, p, d = tuple(a["stride"]), tuple(a["padding"]), tuple(a["dilation"])
    if kh == kw == 1 and s == (1, 1) and p == (0, 0) and g == 1:
        np.matmul(w.reshape(o, c), x.reshape(n, c, -1), out=out.reshape(n, o, -1))
    else:
        win = _windows(_pad(x, *p), kh, kw, s, d, oh, ow)
        og = o // g
        for gi in range(g):
            cols = win[:, gi * cg : (gi + 1) * cg].transpose(0, 1, 4, 5, 2, 3).reshape(n, cg * kh * kw, oh * ow)
            res = np.matmul(w[gi * og : (gi + 1) * og].reshape(og, -1), cols)
            out[:, gi * og : (gi + 1) * og] = res.reshape(n, og, oh, ow)
    if len(ins) == 3:
        out += ins[2].reshape(1, o, 1, 1)
    apply_clamp(out, a)


# --------------------------------------------------------------------------- pooling


def _pool_params(a: dict[str, Any]) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    k = _pair(a["kernel"], "kernel")
    s = _pair(a["stride"] or a["kernel"], "stride")
    p = _pair(a["padding"], "padding")
    d = _pair(a.get("dilation", [1, 1]), "dilation")
    if min(*k, *s, *d) < 1 or min(p) < 0:
        _fail("pool: kernel, stride and dilation must be >= 1, padding >= 0")
    if p[0] * 2 > k[0] or p[1] * 2 > k[1]:
        _fail(f"pool: padding {list(p)} must be at most half the kernel {list(k)}")
    return k, s, p, d


def _pool_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    dt = _same_dtype(dtypes, FLOATS)
    x = shapes[0]
    if len(x) != 4:
        _fail(f"pool: input {x} must be 4-D NCHW")
    k, s, p, d = _pool_params(a)
    oh = _conv_out(x[2], k[0], s[0], p[0], d[0], a["ceil_mode"])
    ow = _conv_out(x[3], k[1], s[1], p[1], d[1], a["ceil_mode"])
    return [((x[0], x[1], oh, ow), dt)]


_POOL_ATTRS = {"kernel": ("ints", R), "stride": ("ints", []), "padding": ("ints", [0, 0]), "ceil_mode": ("bool", False)}


@register("max_pool2d", 1, _pool_infer, {**_POOL_ATTRS, "dilation": ("ints", [1, 1])})
def _max_pool2d(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    _run_bound("max_pool2d", ins, outs, a)  # taps over a padded copy: bound_conv._bind_max_pool2d


@register("avg_pool2d", 1, _pool_infer, {**_POOL_ATTRS, "count_include_pad": ("bool", True), "divisor": ("int", 0)})
def _avg_pool2d(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    _run_bound("avg_pool2d", ins, outs, a)  # bound_conv._bind_avg_pool2d


def _adaptive_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    dt = _same_dtype(dtypes, FLOATS)
    x = shapes[0]
    oh, ow = _pair(a["output_size"], "output_size")
    if len(x) != 4 or oh < 1 or ow < 1 or x[2] < 1 or x[3] < 1:
        _fail(f"adaptive_avg_pool2d: input {x} (4-D, non-empty) and output size {[oh, ow]} (>= 1)")
    return [((x[0], x[1], oh, ow), dt)]


def _bins(size: int, out: int, dtype: np.dtype) -> np.ndarray:
    """[out, size] averaging matrix with bins [floor(i*size/out), ceil((i+1)*size/out))."""
    m = np.zeros((out, size), dtype)
    for i in range(out):
        lo, hi = (i * size) // out, -(-((i + 1) * size) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


@register("adaptive_avg_pool2d", 1, _adaptive_infer, {"output_size": ("ints", R)})
def _adaptive_avg_pool2d(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    x, out = ins[0], outs[0]
    oh, ow = a["output_size"]
    h, w = x.shape[2], x.shape[3]
    if h % oh == 0 and w % ow == 0:
        n, c = x.shape[:2]
        np.mean(x.reshape(n, c, oh, h // oh, ow, w // ow), axis=(3, 5), out=out)
        return
    np.matmul(np.matmul(_bins(h, oh, x.dtype), x), _bins(w, ow, x.dtype).T, out=out)


# --------------------------------------------------------------------------- normalisation


def _ln_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    dt = _same_dtype(dtypes, FLOATS)
    x, k = shapes[0], a["normalized_ndim"]
    if not 1 <= k <= len(x):
        _fail(f"layer_norm: normalized_ndim {k} out of range for input {x}")
    for s in shapes[1:]:
        if s != x[-k:]:
            _fail(f"layer_norm: weight/bias {s} must have shape {x[-k:]}")
    return [(x, dt)]


@register("layer_norm", (1, 3), _ln_infer, {"normalized_ndim": ("int", 1), "eps": ("float", 1e-5)})
def _layer_norm(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    x, out = ins[0], outs[0]
    axes = tuple(range(x.ndim - a["normalized_ndim"], x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    np.subtract(x, mean, out=out)
    var = np.mean(np.square(out), axis=axes, keepdims=True)
    var += np.asarray(a["eps"], x.dtype)
    np.sqrt(var, out=var)
    out /= var
    if len(ins) > 1:
        out *= ins[1]
    if len(ins) > 2:
        out += ins[2]


def check_finite_eps(eps: float) -> None:
    """Reject a non-finite or negative epsilon.

    Example:
        >>> check_finite_eps(1e-5)
    """
    if not math.isfinite(eps) or eps < 0:
        raise ProgramError(f"eps must be a finite non-negative number, got {eps}")


__all__ = ["OPS"]
