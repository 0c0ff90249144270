"""Compile-time conditions on scalar arguments: ``if beta != 0.0 and ref is not None:``.

A comparison of captured int/float arguments with numbers (or with each other) is a device
value while traced; when such a value is the test of an ``if``, an ``a if c else b`` or an
operand of ``and``/``or``, it is evaluated with the arguments' values instead and the launch is
specialised on them (one kernel per value, as for an int argument of ``ts.static_range``), the
way Helion treats a float argument in a host-side branch. Any other device value there stays
refused (a data-dependent branch: use ``torch.where``).

Example:
    >>> host_truth(None, True)
    True
"""

from __future__ import annotations

import operator
from typing import Any

from torchship.kernels.ir import Value

__all__ = ["host_truth"]

_COMPARE = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
            "eq": operator.eq, "ne": operator.ne}


def _param(b: Any, x: Value) -> Any:
    """The parameter of a captured scalar argument ``x`` (getter ``c[i]``), else None."""
    if x.node is not None or x.id not in b.hints:
        return None
    return next((p for p in b.params if p.value is x and p.getter.startswith("c[")
                 and p.getter.count("[") == 1), None)


def _scalar(b: Any, x: Any, used: list[Any]) -> Any:
    """The host value of ``x`` (a number, a captured argument, a comparison of them) or None."""
    if not isinstance(x, Value):
        return x if isinstance(x, (bool, int, float)) else None
    param = _param(b, x)
    if param is not None:
        used.append(param)
        return b.hints[x.id]
    node = x.node
    if node is None or node.op not in (*_COMPARE, "not_"):
        return None
    args = [_scalar(b, v, used) for v in node.inputs]
    if any(a is None for a in args):
        return None
    return not args[0] if node.op == "not_" else _COMPARE[node.op](*args)


def host_truth(b: Any, cond: Any) -> bool | None:
    """``cond`` as a python bool when it is known on the host (specialising the launch on the
    arguments it reads), else None (a value computed on the device). ``b``: the builder."""
    if not isinstance(cond, Value):
        return bool(cond)
    if cond.shape:
        return None
    used: list[Any] = []
    value = _scalar(b, cond, used)
    if value is None or not isinstance(value, bool):
        return None
    for param in used:
        param.constexpr = True
        b.specialized.add(int(param.getter[2:-1]))
    return value
