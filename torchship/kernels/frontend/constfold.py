"""Compile-time ints from int arguments: ``d // 2`` of a captured ``d`` folds to a number.

A slice bound, a reshape size or a block width must be known when the kernel is compiled. A
captured int argument is (the kernel is then specialised on its value); so is an expression
of such arguments and literals through ``+ - * // %`` (``v[:, :d // 2]`` of a ``[tm, d]``
block, Helion's rotate-half). Folding either succeeds as a whole, specialising the arguments
it read, or changes nothing.

Example:
    >>> _fold_op("floordiv", [64, 2])
    32
"""

from __future__ import annotations

import operator
from typing import Any

import torch

from torchship.kernels.ir import Value

__all__ = ["fold_int"]

_OPS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
        "floordiv": operator.floordiv, "mod": operator.mod}


def _fold_op(op: str, values: list[int]) -> int | None:
    """``op`` applied to two ints (None for a division by zero)."""
    if op in ("floordiv", "mod") and values[1] == 0:
        return None
    return int(_OPS[op](*values))


def _captured(b: Any, x: Value) -> tuple[Any, int] | None:
    """(the parameter, its traced value) of a captured int argument."""
    if x.id not in b.hints:
        return None
    for p in b.params:
        if p.value is x and p.getter.startswith("c[") and p.getter.count("[") == 1:
            return p, int(b.hints[x.id])
    return None


def _fold(b: Any, x: Any, used: list[Any]) -> int | None:
    if isinstance(x, int) and not isinstance(x, bool):
        return x
    if not isinstance(x, Value) or x.dtype.is_floating_point or x.dtype == torch.bool:
        return None
    if x.node is None:
        found = _captured(b, x)
        if found is None:
            return None
        used.append(found[0])
        return found[1]
    if x.node.op not in _OPS or len(x.node.inputs) != 2 or x.node.attrs:
        return None
    values = [_fold(b, i, used) for i in x.node.inputs]
    if any(v is None for v in values):
        return None
    return _fold_op(x.node.op, values)  # type: ignore[arg-type]


def fold_int(b: Any, x: Any) -> int | None:
    """``x`` as a compile-time int, or None; the captured ints it reads become constexpr and
    part of the specialisation key (``b``: the device builder)."""
    used: list[Any] = []
    value = _fold(b, x, used)
    if value is None:
        return None
    for p in used:
        b.specialized.add(int(p.getter[2:-1]))
        p.constexpr = True
    return value
