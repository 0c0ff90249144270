"""Ops of the tile language: each defined once with its shape/dtype rule and Triton codegen.

An :class:`OpDef` has ``infer(inputs, attrs) -> (shape, dtype)`` (inputs are IR Values or
python constants) and ``emit(cg, node, args) -> str`` (the Triton expression, given the
operands' Triton expressions). The eager semantics are torch's own (and
:mod:`torchship.kernels.language` for the tile-language names). Adding an op touches one file.

Example:
    >>> import torch
    >>> from torchship.kernels.ir import ConstDim, Value
    >>> a = Value((ConstDim(4),), torch.float16, "a")
    >>> OPS["add"].infer([a, 1.5], {})[1]
    torch.float16
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from torchship.kernels.errors import KernelTypeError
from torchship.kernels.ir import ConstDim, Dim, FullDim, TileDim, Value

__all__ = ["OPS", "OpDef", "broadcast_shapes", "promote", "register", "shape_of", "dtype_of"]


@dataclass
class OpDef:
    """One op: ``infer`` gives the result (shape, dtype), ``emit`` writes Triton."""

    name: str
    infer: Callable[[list[Any], dict[str, Any]], tuple[tuple[Dim, ...], torch.dtype]]
    emit: Callable[[Any, Any, list[str]], str]
    kind: str = "pointwise"  # pointwise | reduce | scan | dot | memory | create | view


OPS: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    """Add an op to the registry (name must be new).

    Example:
        >>> "exp" in OPS
        True
    """
    if op.name in OPS:
        raise ValueError(f"op {op.name!r} registered twice")
    OPS[op.name] = op
    return op


def shape_of(x: Any) -> tuple[Dim, ...]:
    return x.shape if isinstance(x, Value) else ()


def _category(dtype: torch.dtype) -> int:
    if dtype == torch.bool:
        return 0
    if dtype.is_floating_point:
        return 2
    return 1


def dtype_of(x: Any) -> tuple[torch.dtype, bool]:
    """(dtype, weak) of an operand; python scalars are weak like in torch.

    Example:
        >>> dtype_of(2.0)
        (torch.float32, True)
    """
    if isinstance(x, Value):
        return x.dtype, x.weak
    if isinstance(x, bool):
        return torch.bool, True
    if isinstance(x, int):
        return torch.int32, True
    if isinstance(x, float):
        return torch.float32, True
    raise KernelTypeError(f"expected a tile value or a python number, got {type(x).__name__}")


def _promote_all(dtypes: list[torch.dtype]) -> torch.dtype:
    res = dtypes[0]
    for d in dtypes[1:]:
        res = torch.promote_types(res, d)
    return res


def promote(operands: list[Any]) -> tuple[torch.dtype, bool]:
    """torch's result-type rule with its three tiers: blocks with dims, 0-d blocks (a loaded
    0-d tensor, a full reduction) and weak python scalars. A lower tier changes the dtype
    only when its category (bool < int < float) is higher: a python float makes an int block
    float32, a 0-d float64 makes it float64, a 0-d float64 leaves a float16 block float16.

    Example:
        >>> from torchship.kernels.ir import ConstDim, Value
        >>> promote([Value((), torch.int32), 0.5])
        (torch.float32, False)
        >>> promote([Value((ConstDim(4),), torch.float16), Value((), torch.float64)])
        (torch.float16, False)
    """
    kinds = [(dtype_of(o), isinstance(o, Value) and o.ndim > 0) for o in operands]
    dimmed = [d for (d, weak), has_dims in kinds if not weak and has_dims]
    zero_d = [d for (d, weak), has_dims in kinds if not weak and not has_dims]
    weak = [d for (d, w), _ in kinds if w]
    if not dimmed and not zero_d:
        return _promote_all(weak), True
    if not zero_d:
        return _lift(_promote_all(dimmed), weak), False
    lower = _lift(_promote_all(zero_d), weak)
    if not dimmed:
        return lower, False
    res = _promote_all(dimmed)
    return (torch.promote_types(res, lower) if _category(lower) > _category(res) else res), False


def _lift(res: torch.dtype, weak: list[torch.dtype]) -> torch.dtype:
    """A strong dtype after weak python scalars: only a higher category changes it."""
    for w in weak:
        if _category(w) > _category(res):
            res = torch.float32 if _category(w) == 2 else torch.int64
    return res


def broadcast_shapes(shapes: list[tuple[Dim, ...]]) -> tuple[Dim, ...]:
    """Right-aligned broadcasting; full dims that meet are unified, tiles must match.

    Example:
        >>> from torchship.kernels.ir import ConstDim
        >>> broadcast_shapes([(ConstDim(1), ConstDim(4)), (ConstDim(3), ConstDim(1))])
        (3, 4)
    """
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for pos in range(rank):
        cur: Dim | None = None
        for s in shapes:
            i = pos - (rank - len(s))
            if i < 0:
                continue
            d = s[i].find()
            if isinstance(d, ConstDim) and d.n == 1:
                if cur is None:
                    cur = d
                continue
            if cur is None or (isinstance(cur, ConstDim) and cur.n == 1):
                cur = d
                continue
            if isinstance(cur, FullDim) and isinstance(d, FullDim):
                cur.union(d)
                cur = cur.find()
                continue
            if isinstance(cur, FullDim) and isinstance(d, ConstDim):
                cur.make_static(d.n)
                continue
            if isinstance(d, FullDim) and isinstance(cur, ConstDim):
                d.make_static(cur.n)
                cur = d
                continue
            if cur.same(d):
                continue
            raise KernelTypeError(
                f"shapes do not broadcast: dimension {pos} is {_dim_desc(cur)} in one operand "
                f"and {_dim_desc(d)} in another"
            )
        out.append(cur if cur is not None else ConstDim(1))
    return tuple(out)


def _dim_desc(d: Dim) -> str:
    if isinstance(d, TileDim):
        return f"tile {d.tile.name!r}"
    if isinstance(d, FullDim):
        return f"the full dimension {d!r}"
    return f"size {d!r}"


# import the op families (they register themselves)
from torchship.kernels.ops import (  # noqa: E402,F401
    combine,
    create,
    gather,
    mathfns,
    matmul,
    memory,
    pieces,
    pointwise,
    random,
    reduce,
    roll,
    scan,
    sort,
    specialfns,
)
