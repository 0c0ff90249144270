"""Core ops along one axis whose results depend on element order: ``cumsum``, ``cumprod``
(running sum / product) and ``argsort`` (stable; ``sort`` and ``topk`` are an ``argsort`` and a
``gather`` at export).

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

from torchship.edge.runtime.ops import _axis, _same_dtype
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
