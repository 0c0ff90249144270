"""Reductions over one dimension: sum, prod, max, min, argmax, argmin (``mean`` is sum / count).

The node is ``reduce(x, kind=, dim=, keepdim=)``. Padded lanes are re-masked with the
reduction's identity before reducing (element-wise ops on masked lanes make garbage). In a
looped reduction the backend reduces each chunk with ``part`` and folds it into an
accumulator with ``combine``. Triton has no ``tl.prod``: ``prod`` is ``tl.reduce`` with a
module-level ``@triton.jit`` multiply (see :func:`jit_helper`).

Example:
    >>> import torch
    >>> from torchship.kernels.ir import ConstDim, Value
    >>> from torchship.kernels.ops import OPS
    >>> x = Value((ConstDim(4), ConstDim(8)), torch.float16)
    >>> shape, dtype = OPS["reduce"].infer([x], {"kind": "sum", "dim": 1, "keepdim": True})
    >>> shape, dtype
    ((4, 1), torch.float16)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from torchship.kernels.ir import ConstDim
from torchship.kernels.ops import OpDef, register
from torchship.kernels.ops.pointwise import PROPAGATE_NAN


@dataclass(frozen=True)
class ReduceKind:
    """How one reduction reduces a block and folds partial results."""

    fn: str  # tl.sum / tl.max / ... ("" for a tl.reduce with the ``helper`` combine)
    combine: str  # "{acc}", "{part}" -> folded value (not used by arg-reductions)
    index: bool = False  # returns positions (argmax/argmin)
    larger: bool = True  # for max-like: identity is -inf
    helper: tuple[str, str] | None = None  # (name, body of f(a, b)) for tl.reduce
    # float blocks: a NaN-propagating combine (torch.amax/amin return NaN for a row holding
    # one; tl.max/tl.min skip it), reduced by tl.reduce with a helper of that body: the same
    # reduction tree with max.NaN, no extra work
    float_combine: str | None = None


KINDS = {
    "sum": ReduceKind("tl.sum", "{acc} + {part}"),
    "prod": ReduceKind("", "{acc} * {part}", helper=("_ts_mul", "a * b")),
    "max": ReduceKind("tl.max", "tl.maximum({acc}, {part})", larger=True,
                      float_combine=f"tl.maximum({{acc}}, {{part}}, {PROPAGATE_NAN})"),
    "min": ReduceKind("tl.min", "tl.minimum({acc}, {part})", larger=False,
                      float_combine=f"tl.minimum({{acc}}, {{part}}, {PROPAGATE_NAN})"),
    "argmax": ReduceKind("tl.argmax", "", index=True, larger=True),
    "argmin": ReduceKind("tl.argmin", "", index=True, larger=False),
}


def result_dtype(kind: str, dtype: torch.dtype) -> torch.dtype:
    """torch's result dtype of a reduction.

    Example:
        >>> result_dtype("sum", torch.int32), result_dtype("argmax", torch.float16)
        (torch.int64, torch.int64)
    """
    if KINDS[kind].index:
        return torch.int64
    if kind in ("sum", "prod") and not dtype.is_floating_point:
        return torch.int64
    return dtype


def work_dtype(kind: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype a reduction accumulates in (float32 for half types, int64 for int sums).

    Example:
        >>> work_dtype("sum", torch.bfloat16)
        torch.float32
    """
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    if kind in ("sum", "prod") and not dtype.is_floating_point:
        return torch.int64
    if dtype == torch.bool:
        return torch.int32
    return dtype


def identity(kind: str, dtype: torch.dtype) -> str:
    """The identity element as a Triton literal for ``dtype``.

    Example:
        >>> identity("max", torch.float32), identity("min", torch.int32)
        ('float("-inf")', '2147483647')
    """
    if kind in ("sum", "prod"):
        one = "1" if kind == "prod" else "0"
        return f"{one}.0" if dtype.is_floating_point else one
    larger = KINDS[kind].larger
    if dtype.is_floating_point:
        return 'float("-inf")' if larger else 'float("inf")'
    info = torch.iinfo(dtype)
    return str(info.min if larger else info.max)


def _infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    x = inputs[0]
    dim, keep = attrs["dim"], attrs["keepdim"]
    shape = list(x.shape)
    if keep:
        shape[dim] = ConstDim(1)
    else:
        del shape[dim]
    return tuple(shape), result_dtype(attrs["kind"], x.dtype)


def emit_part(cg: Any, node: Any, arg: str) -> str:
    """Triton for reducing one (already masked, work-dtype) block along the node's dim."""
    kind = KINDS[node.attrs["kind"]]
    keep = node.attrs["keepdim"]
    kd = ", keep_dims=True" if keep else ""
    helper = kind.helper
    if kind.float_combine is not None and node.inputs[0].dtype.is_floating_point:
        helper = (f"_ts_{node.attrs['kind']}_nan", kind.float_combine.format(acc="a", part="b"))
    if helper is not None:
        fn = jit_helper(cg, helper[0], "a, b", helper[1])
        return f"tl.reduce({arg}, {node.attrs['dim']}, {fn}{kd})"
    return f"{kind.fn}({arg}, axis={node.attrs['dim']}{kd})"


def combine(kind: str, dtype: Any, acc: str, part: str) -> str:
    """Triton folding a partial reduction ``part`` into ``acc`` (looped reductions), NaN
    propagating for float max/min like :func:`emit_part`.

    Example:
        >>> combine("max", torch.float32, "a", "p")
        'tl.maximum(a, p, propagate_nan=tl.PropagateNan.ALL)'
        >>> combine("sum", torch.int32, "a", "p")
        'a + p'
    """
    k = KINDS[kind]
    form = k.float_combine if k.float_combine is not None and dtype.is_floating_point else \
        k.combine
    return form.format(acc=acc, part=part)


def jit_helper(cg: Any, name: str, params: str, body: str) -> str:
    """Define ``def name(params): return body`` as a module-level ``@triton.jit`` function of
    the generated kernel (a combine function for ``tl.reduce``/``tl.associative_scan``) and
    return its name.

    Example:
        >>> from types import SimpleNamespace
        >>> cg = SimpleNamespace(helpers={}, used=set())
        >>> jit_helper(cg, "_ts_mul", "a, b", "a * b")
        '_ts_mul'
        >>> cg.helpers["_ts_mul"].splitlines()[:2]
        ['@triton.jit', 'def _ts_mul(a, b):']
    """
    cg.helpers[name] = f"@triton.jit\ndef {name}({params}):\n    return {body}\n\n"
    cg.used.add(name)
    return name


register(OpDef("reduce", _infer, lambda cg, node, args: emit_part(cg, node, args[0]), "reduce"))
