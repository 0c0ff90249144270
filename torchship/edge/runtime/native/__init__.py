"""Optional native kernels of the numpy runtime (C99 + ctypes; built on first use, see ``build.py``).

Native: the depthwise 2-D convolution (float32, any kernel size, stride, padding and
dilation, with bias and clamp fused; ``depthwise.c``), the row-wise layer norm and the exact
(erf) GELU (``rows.c``), one thread. The binders (``bound_conv.py``, ``mbconv.py``,
``bound.py``) ask :func:`depthwise_step`, :func:`layer_norm_step` or :func:`gelu_step` for a
step and keep their numpy path when it returns None: native kernels disabled (``TORCHSHIP_EDGE_NATIVE=0``), no
compiler, a build failure, another dtype, a non-contiguous operand or a kernel of more than
``MAX_TAPS`` taps.

Example:
    >>> import numpy as np
    >>> x, w = np.ones((1, 2, 4, 4), np.float32), np.ones((2, 1, 3, 3), np.float32)
    >>> out = np.zeros((1, 2, 4, 4), np.float32)
    >>> step = depthwise_step(x, w, None, out, stride=(1, 1), padding=(1, 1), dilation=(1, 1))
    >>> step is None or (step(), out[0, 0, 0].tolist())[1] == [4.0, 6.0, 6.0, 4.0]
    True
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from torchship.edge.runtime.bound import scratch
from torchship.edge.runtime.native.build import library

MAX_TAPS = 1024  # TS_MAX_TAPS of depthwise.c: larger kernels stay on the numpy path
_F32 = np.dtype("float32")
_P, _I, _F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
_ARGS = [_P, ctypes.c_ssize_t, ctypes.c_ssize_t] + [_I] * 7 + [_P, _P] + [_I] * 8 + [_F, _F, _P, _P, _I, _F, _F]


def active() -> bool:
    """True when the native kernels are built and enabled in this process.

    Example:
        >>> isinstance(active(), bool)
        True
    """
    return library() is not None


def _step(name: str, argtypes: list[Any], args: tuple[Any, ...], keep: tuple[Any, ...]) -> Callable[[], None]:
    """A zero-argument step calling the library's ``name`` with ``args`` (pointers into
    ``keep``, which the step holds so the addresses stay valid)."""
    fn = getattr(library(), name)
    fn.argtypes, fn.restype = argtypes, None

    def step() -> None:
        fn(*args)

    step.keep = keep  # type: ignore[attr-defined]
    return step


def _usable(*arrays: np.ndarray | None) -> bool:
    return all(a is None or (a.dtype == _F32 and a.flags.c_contiguous) for a in arrays)


def _clamp_args(bounds: tuple[float | None, float | None] | None) -> tuple[int, float, float]:
    lo, hi = (None, None) if bounds is None else bounds
    if lo is None and hi is None:
        return 0, 0.0, 0.0
    return 1, -np.inf if lo is None else float(lo), np.inf if hi is None else float(hi)


def depthwise_step(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, out: np.ndarray, *,
                   stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                   lo: float | None = None, hi: float | None = None,
                   plane_stride: int | None = None,
                   clamp_input: tuple[float | None, float | None] | None = None) -> Callable[[], None] | None:
    """A step computing ``out = clamp(depthwise_conv2d(x, w) + bias, lo, hi)`` natively, or None.

    ``x`` is ``[N, C, H, W]`` and ``w`` ``[C * M, 1, KH, KW]`` (``M`` outputs per input
    channel), ``out`` ``[N, C * M, OH, OW]``; all float32 and C-contiguous. ``plane_stride``
    (elements) lets the planes of ``x`` lie further apart than ``H * W`` (``x`` is then given
    as the ``[1, C, H, W]`` view of the first ``H * W`` values of each plane, e.g. padded planes
    with slack), in which case ``x`` need not be contiguous. ``clamp_input`` (lo, hi) first
    clamps ``x`` **in place** (fused_mbconv's expand clamp, on its own scratch planes).

    Example:
        >>> x, w = np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 3, 3), np.float32)
        >>> o = np.empty((1, 1, 1, 1), np.float32)
        >>> s = depthwise_step(x, w, None, o, stride=(1, 1), padding=(0, 0), dilation=(1, 1))
        >>> s is None or (s(), float(o[0, 0, 0, 0]))[1] == 9.0
        True
    """
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh, ow = out.shape[2], out.shape[3]
    if plane_stride is None:
        ps, ok = h * wd, _usable(x)
    else:
        ps = plane_stride
        ok = x.dtype == _F32 and x.strides == (c * ps * 4, ps * 4, wd * 4, 4)
    if library() is None or not ok or not _usable(w, bias, out) or o % c or oh * ow == 0 or n * c == 0 or kh * kw > MAX_TAPS:
        return None
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    wps = -(-(wd + 2 * pw) // sw)
    direct = ph == pw == 0 and sw == 1  # planes read in place, no padded copy
    buf = None if direct else scratch(((h + 2 * ph) * sw * wps,), _F32, temp=True)
    args = (x.ctypes.data, ps, wd, n * c, c, h, wd, ph, pw, o // c, w.ctypes.data,
            None if bias is None else bias.ctypes.data, kh, kw, sh, sw, dh, dw, oh, ow,
            -np.inf if lo is None else float(lo), np.inf if hi is None else float(hi),
            out.ctypes.data, None if buf is None else buf.ctypes.data, *_clamp_args(clamp_input))
    return _step("ts_depthwise", _ARGS, args, (x, w, bias, out, buf))


def layer_norm_step(x: np.ndarray, w: np.ndarray | None, b: np.ndarray | None, eps: float,
                    out: np.ndarray) -> Callable[[], None] | None:
    """A step computing the layer norm of each row of the 2-D ``x`` into ``out`` natively
    (mean and variance accumulated in double), or None (see :func:`depthwise_step`). ``b``
    needs ``w``; ``out`` may be ``x``.

    Example:
        >>> x, o = np.array([[1.0, 3.0]], np.float32), np.empty((1, 2), np.float32)
        >>> s = layer_norm_step(x, None, None, 0.0, o)
        >>> s is None or (s(), o.tolist())[1] == [[-1.0, 1.0]]
        True
    """
    if library() is None or x.ndim != 2 or not _usable(x, w, b, out) or (b is not None and w is None):
        return None
    args = (x.ctypes.data, x.shape[0], x.shape[1], None if w is None else w.ctypes.data,
            None if b is None else b.ctypes.data, float(eps), out.ctypes.data)
    return _step("ts_layer_norm", [_P, ctypes.c_ssize_t, ctypes.c_ssize_t, _P, _P, _F, _P], args,
                 (x, w, b, out))


def gelu_step(x: np.ndarray, out: np.ndarray) -> Callable[[], None] | None:
    """A step computing the exact (erf) GELU of ``x`` into ``out`` natively, or None (see
    :func:`depthwise_step`); ``out`` may be ``x``.

    Example:
        >>> x, o = np.array([0.0, 1.0], np.float32), np.empty(2, np.float32)
        >>> s = gelu_step(x, o)
        >>> s is None or (s(), round(float(o[1]), 4))[1] == 0.8413
        True
    """
    if library() is None or not _usable(x, out) or x.shape != out.shape:
        return None
    return _step("ts_gelu_erf", [_P, ctypes.c_ssize_t, _P], (x.ctypes.data, x.size, out.ctypes.data),
                 (x, out))


__all__ = ["MAX_TAPS", "active", "depthwise_step", "gelu_step", "layer_norm_step"]
