"""Special functions written with core ops. ``torch.hypot(a, b)`` is ``m·sqrt(1 + (n/m)²)`` with
``m = max(|a|, |b|)``, ``n = min(|a|, |b|)`` (no overflow of ``a²``; ``m`` itself when it is 0 or
infinite).
``torch.erfinv``: Giles' single-precision approximation ("Approximating
the erfinv function", GPU Computing Gems, 2010: a degree-8 polynomial in ``w = −log(1 − x²)``
for ``w < 5``, in ``√w`` beyond) evaluated in float64: relative error below 4e-7 (a few
float32 ulp; float64 programs get the same, not float64 accuracy); ``±1`` give ``±inf`` and
``|x| > 1`` NaN, as in torch.

Example:
    >>> import torchship.edge.lower_special  # registers the handler
    >>> from torchship.edge.lower import HANDLERS
    >>> torch.ops.aten.erfinv.default in HANDLERS
    True
"""

from __future__ import annotations

import math

import torch

from torchship.edge.lower import Lowering, handles
from torchship.edge.lower_nn import Emit

aten = torch.ops.aten
Node = torch.fx.Node

_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
            -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
         -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)


@handles(aten.erfinv.default)
def _erfinv(lw: Lowering, node: Node) -> int:
    """The inverse error function (float results; integer inputs are promoted as torch does)."""
    dt, shape = lw.out()
    e = Emit(lw, "F64")
    x = lw.tensor(node.args[0], "F64")
    w = e("neg", [e("log", [e("mul", [e("sub", [e.c(1.0), x]), e("add", [e.c(1.0), x])])])])

    def poly(coeffs: tuple[float, ...], t: int) -> int:
        p = e.c(coeffs[0])
        for c in coeffs[1:]:
            p = e("add", [e.c(c), e("mul", [p, t])])
        return p

    central = poly(_CENTRAL, e("sub", [w, e.c(2.5)]))
    tail = poly(_TAIL, e("sub", [e("sqrt", [w]), e.c(3.0)]))
    y = e("mul", [e("where", [e("lt", [w, e.c(5.0)], dtype="BOOL"), central, tail]), x])
    edge = e("eq", [e("abs", [x]), e.c(1.0)], dtype="BOOL")
    y = e("where", [edge, e("mul", [x, e.c(math.inf)]), y])
    return lw.emit("cast", [y], {"dtype": dt}) if dt != "F64" else y


@handles(aten.hypot.default)
def _hypot(lw: Lowering, node: Node) -> int:
    """``sqrt(a² + b²)`` without overflow or underflow of the squares."""
    dt, shape = lw.out()
    e = Emit(lw, dt)
    a, b = (e("abs", [lw.tensor(v, dt)]) for v in node.args[:2])
    big, small = e("maximum", [a, b]), e("minimum", [a, b])
    ratio = e("div", [small, big])
    r = e("mul", [big, e("sqrt", [e("add", [e.c(1.0), e("mul", [ratio, ratio])])])])
    # both 0 (0/0) or an infinity (inf/inf): the result is the larger magnitude itself
    r = e("where", [e("logical_or", [e("eq", [big, e.c(0.0)], dtype="BOOL"),
                                      e("eq", [big, e.c(math.inf)], dtype="BOOL")], dtype="BOOL"), big, r])
    return r if lw.shape_of(r) == shape else lw.emit("reshape", [r], {"shape": shape})
