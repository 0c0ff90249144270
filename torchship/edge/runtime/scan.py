"""Core ops along one axis whose results depend on element order: ``cumsum``, ``cumprod``
(running sum / product), ``cummax``/``cummin`` (running extreme or its index),
``logcumsumexp`` (log of the running sum of exp), ``argsort`` (stable; ``sort`` and ``topk`` are an ``argsort`` and a
``gather`` at export) and ``scatter`` (writes, or sums / multiplies / takes the max or min of,
values at indices along an axis).

Example:
    >>> import numpy as np
    >>> out = np.empty(3, np.float32)
    >>> OPS["cumsum"].kernel([np.array([1, 2, 3], np.float32)], [out], {"axis": 0})
    >>> out.tolist()
    [1.0, 3.0, 6.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torchship.edge.runtime.ops import _axis, _fail, _same_dtype
from torchship.edge.runtime.registry import OPS, Shape, register, required

__all__ = ["OPS"]


def _cumsum_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    _axis(a["axis"], len(shapes[0]))
    return [(shapes[0], _same_dtype(dtypes, ("F32", "F64", "I64")))]


@register("cumsum", 1, _cumsum_infer, {"axis": ("int", required())})
def _cumsum(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    np.cumsum(ins[0], axis=a["axis"], out=outs[0])


@register("cumprod", 1, _cumsum_infer, {"axis": ("int", required())})
def _cumprod(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    np.cumprod(ins[0], axis=a["axis"], out=outs[0])


def _cumext_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    _axis(a["axis"], len(shapes[0]))
    dt = _same_dtype(dtypes, ("F32", "F64", "I64", "I32", "I8", "U8"))
    return [(shapes[0], "I64" if a["index"] else dt)]


def _cumext(ufunc: np.ufunc) -> Any:
    def kernel(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
        x, axis = ins[0], a["axis"]
        run = ufunc.accumulate(x, axis=axis)  # maximum / minimum propagate NaN, like torch
        if not a["index"]:
            np.copyto(outs[0], run)
            return
        # the latest position whose element equals the running extreme (or is a NaN)
        pos = np.arange(x.shape[axis]).reshape([-1 if d == axis else 1 for d in range(x.ndim)])
        take = x == run
        if x.dtype.kind == "f":
            take |= np.isnan(x)
        np.maximum.accumulate(np.where(take, pos, 0), axis=axis, out=outs[0])
    return kernel


register("cummax", 1, _cumext_infer, {"axis": ("int", required()), "index": ("bool", False)})(
    _cumext(np.maximum))
register("cummin", 1, _cumext_infer, {"axis": ("int", required()), "index": ("bool", False)})(
    _cumext(np.minimum))


def _float_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    _axis(a["axis"], len(shapes[0]))
    return [(shapes[0], _same_dtype(dtypes, ("F32", "F64")))]


@register("logcumsumexp", 1, _float_infer, {"axis": ("int", required())})
def _logcumsumexp(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    with np.errstate(invalid="ignore"):  # logaddexp(inf, inf) is inf; numpy warns on the way
        np.logaddexp.accumulate(ins[0], axis=a["axis"], out=outs[0])


def _argsort_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    _axis(a["axis"], len(shapes[0]))
    _same_dtype(dtypes, ("F32", "F64", "I64", "I32", "I8", "U8"))
    return [(shapes[0], "I64")]


@register("argsort", 1, _argsort_infer, {"axis": ("int", required()), "descending": ("bool", False)})
def _argsort(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    x, axis = ins[0], a["axis"]
    if not a["descending"]:
        np.copyto(outs[0], np.argsort(x, axis=axis, kind="stable"))
        return
    # stable descending (ties keep index order; NaN first, as the largest): sort the reversed
    # axis ascending, reverse the result and map positions back
    n = x.shape[axis]
    rev = np.flip(np.argsort(np.flip(x, axis), axis=axis, kind="stable"), axis)
    np.subtract(n - 1, rev, out=outs[0])


def _scatter_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    x, idx, src = shapes
    if dtypes[1] not in ("I64", "I32"):
        _fail(f"scatter: indices must be I64 or I32, got {dtypes[1]}")
    dt = _same_dtype([dtypes[0], dtypes[2]])
    if not len(x) == len(idx) == len(src):
        _fail(f"scatter: input {x}, index {idx} and source {src} must have the same rank")
    ax = _axis(a["axis"], len(x))
    if a.get("reduce", "sum") != "sum" and not a.get("accumulate"):
        _fail(f"scatter: reduce={a['reduce']!r} needs accumulate")
    if any(idx[d] > x[d] for d in range(len(x)) if d != ax) or any(i > s for i, s in zip(idx, src)):
        _fail(f"scatter: index {idx} is larger than input {x} outside axis {ax} or than source {src}")
    return [(x, dt)]


#: how ``scatter`` with ``accumulate`` combines each source value into its element
_COMBINE = {"sum": np.add, "prod": np.multiply, "amax": np.maximum, "amin": np.minimum}


@register("scatter", 3, _scatter_infer, {"axis": ("int", required()), "accumulate": ("bool", False),
                                         "reduce": ("str:sum|prod|amax|amin", "sum")})
def _scatter(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    x, idx, src = ins
    out, ax = outs[0], a["axis"] % x.ndim
    if idx.size and (idx.min() < 0 or idx.max() >= x.shape[ax]):
        _fail(f"scatter: index out of range [0, {x.shape[ax]}) along axis {ax}")
    np.copyto(out, x)
    values = src[tuple(slice(0, n) for n in idx.shape)]
    where = list(np.indices(idx.shape, sparse=True))
    where[ax] = idx
    if a["accumulate"]:
        _COMBINE[a["reduce"]].at(out, tuple(where), values)
    else:
        out[tuple(where)] = values
