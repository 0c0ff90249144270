"""Math that Triton has only in ``libdevice``, written with portable ``tl`` primitives.

``libdevice`` returns None in Triton's interpreter, so inverse trigonometric and hyperbolic
functions (and ``tanh``, whose exp form cancels near 0) are Cephes' single-precision range reductions and minimax polynomials (about 2e-7
relative error in float32; float64 blocks get the same float32-grade accuracy), using only
``tl.exp``/``tl.log``/``tl.sqrt``/``tl.where``. The same generated code runs in the
interpreter and on any Triton 3.6+ GPU. Edge values follow torch: ``atan(±inf) = ±pi/2``,
``asin(2) = nan``, ``acosh(1) = 0``, ``atanh(1) = inf``, signed zeros in ``atan2``, and
``pow`` with a block exponent handles negative bases with integer exponents, ``0 ** 0``,
``(-1) ** inf`` like ``torch.pow``.

Each emitter writes named temporaries with ``cg.line`` (the formulas reuse their operand
many times) and returns the final expression.

Example:
    >>> import torch
    >>> from torchship.kernels.ir import ConstDim, Value
    >>> from torchship.kernels.ops import OPS
    >>> OPS["atan2"].infer([Value((ConstDim(4),), torch.int32), 1.0], {})[1]
    torch.float32
"""

from __future__ import annotations

import math
from typing import Any

import torch

from torchship.kernels.errors import KernelTypeError
from torchship.kernels.ir import Value
from torchship.kernels.ops import OpDef, broadcast_shapes, promote, register, shape_of
from torchship.kernels.ops.pointwise import _HALF, _binary_infer, _bind, _unary

_PI = 3.141592653589793
_PI_2 = 1.5707963267948966
_LN2 = 0.6931471805599453


def _poly(z: str, coeffs: tuple[float, ...]) -> str:
    """Horner form of ``coeffs[0] * z**n + ... + coeffs[n]``.

    Example:
        >>> _poly("z", (2.0, 3.0, 5.0))
        '((2.0 * z + 3.0) * z + 5.0)'
    """
    expr = repr(coeffs[0])
    for c in coeffs[1:]:
        expr = f"({expr} * {z} + {c!r})"
    return expr


def _neg_sign(x: str) -> str:
    """True where ``x`` has its sign bit set (also -0.0, whose reciprocal is -inf)."""
    return f"(({x} < 0) | (1.0 / {x} < 0))"


def atan_abs(cg: Any, t: str) -> str:
    """atan of ``t >= 0`` (Cephes atanf: reduce to |z| <= tan(pi/8), odd polynomial)."""
    big = _bind(cg, f"{t} > 2.414213562373095", "at_big")
    mid = _bind(cg, f"{t} > 0.41421356237309503", "at_mid")
    z = _bind(cg, f"tl.where({big}, -1.0 / {t}, tl.where({mid}, ({t} - 1.0) / ({t} + 1.0), "
                  f"{t}))", "at_z")
    zz = _bind(cg, f"{z} * {z}", "at_zz")
    p = _poly(zz, (8.05374449538e-2, -1.38776856032e-1, 1.99777106478e-1, -3.33329491539e-1))
    y0 = f"tl.where({big}, {_PI_2}, tl.where({mid}, {_PI / 4}, 0.0))"
    return f"({y0} + ({p} * {zz} * {z} + {z}))"


def _atan(cg: Any, a: str) -> str:
    r = _bind(cg, atan_abs(cg, f"tl.abs({a})"), "atan")
    return f"tl.where({a} < 0, -{r}, {r})"


_ASIN_P = (4.2163199048e-2, 2.4181311049e-2, 4.5470025998e-2, 7.4953002686e-2,
           1.6666752422e-1)


def _asin_small(cg: Any, s: str) -> str:
    """asin of ``0 <= s <= 0.5`` (or nan)."""
    z = _bind(cg, f"{s} * {s}", "as_z")
    return f"({_poly(z, _ASIN_P)} * {z} * {s} + {s})"


def _asin(cg: Any, a: str) -> str:
    t = _bind(cg, f"tl.abs({a})", "as_t")
    big = _bind(cg, f"{t} > 0.5", "as_big")
    s = _bind(cg, f"tl.where({big}, tl.sqrt(0.5 * (1.0 - {t})), {t})", "as_s")
    p = _bind(cg, _asin_small(cg, s), "as_p")
    r = _bind(cg, f"tl.where({big}, {_PI_2} - 2.0 * {p}, {p})", "asin")
    return f"tl.where({a} < 0, -{r}, {r})"


def _acos(cg: Any, a: str) -> str:
    lo = _bind(cg, f"{a} < -0.5", "ac_lo")
    hi = _bind(cg, f"{a} > 0.5", "ac_hi")
    s = _bind(cg, f"tl.where({lo}, tl.sqrt(0.5 * (1.0 + {a})), tl.where({hi}, "
                  f"tl.sqrt(0.5 * (1.0 - {a})), {a}))", "ac_s")
    p = _bind(cg, _asin_small(cg, f"tl.abs({s})"), "ac_p")
    p = _bind(cg, f"tl.where({s} < 0, -{p}, {p})", "ac_q")
    return f"tl.where({lo}, {_PI} - 2.0 * {p}, tl.where({hi}, 2.0 * {p}, {_PI_2} - {p}))"


def _exp_big(cg: Any, t: str) -> tuple[str, str]:
    """(exp(t), t > 80): beyond 80 the caller uses exp(t/2)**2 / 2, which cannot overflow
    before the result does."""
    return _bind(cg, f"tl.exp({t})", "e"), _bind(cg, f"{t} > 80.0", "huge")


def _sinh(cg: Any, a: str) -> str:
    t = _bind(cg, f"tl.abs({a})", "sh_t")
    e, huge = _exp_big(cg, t)
    w = _bind(cg, f"tl.exp(0.5 * {t})", "sh_w")
    z = _bind(cg, f"{a} * {a}", "sh_z")
    small = _poly(z, (2.03721912945e-4, 8.33028376239e-3, 1.66667160211e-1))
    r = _bind(cg, f"tl.where({t} <= 1.0, {small} * {z} * {t} + {t}, tl.where({huge}, "
                  f"(0.5 * {w}) * {w}, 0.5 * {e} - 0.5 / {e}))", "sinh")
    return f"tl.where({a} < 0, -{r}, {r})"


def _cosh(cg: Any, a: str) -> str:
    t = _bind(cg, f"tl.abs({a})", "ch_t")
    e, huge = _exp_big(cg, t)
    w = _bind(cg, f"tl.exp(0.5 * {t})", "ch_w")
    return f"tl.where({huge}, (0.5 * {w}) * {w}, 0.5 * {e} + 0.5 / {e})"


def _tanh(cg: Any, a: str) -> str:
    """Cephes tanhf: an odd polynomial below 0.625 (1 - 2/(e^2x + 1) cancels there)."""
    t = _bind(cg, f"tl.abs({a})", "th_t")
    z = _bind(cg, f"{a} * {a}", "th_z")
    small = _poly(z, (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2,
                      1.33314422036e-1, -3.33332819422e-1))
    big = _bind(cg, f"1.0 - 2.0 / (tl.exp(2.0 * {t}) + 1.0)", "th_big")
    return f"tl.where({t} < 0.625, {small} * {z} * {a} + {a}, tl.where({a} < 0, -{big}, {big}))"


def _asinh(cg: Any, a: str) -> str:
    t = _bind(cg, f"tl.abs({a})", "ash_t")
    z = _bind(cg, f"{a} * {a}", "ash_z")
    small = _poly(z, (2.0122003309e-2, -4.2699340972e-2, 7.4847586088e-2, -1.6666288134e-1))
    r = _bind(cg, f"tl.where({t} < 0.5, {small} * {z} * {t} + {t}, tl.where({t} > 1500.0, "
                  f"tl.log({t}) + {_LN2}, tl.log({t} + tl.sqrt({z} + 1.0))))", "asinh")
    return f"tl.where({a} < 0, -{r}, {r})"


def _acosh(cg: Any, a: str) -> str:
    z = _bind(cg, f"{a} - 1.0", "ach_z")
    small = _poly(z, (1.7596881071e-3, -7.5272886713e-3, 2.6454905019e-2, -1.1784741703e-1,
                      1.4142135263e0))
    return (f"tl.where({z} < 0.5, {small} * tl.sqrt({z}), tl.where({a} > 1500.0, "
            f"tl.log({a}) + {_LN2}, tl.log({a} + tl.sqrt({z} * ({a} + 1.0)))))")


def _atanh(cg: Any, a: str) -> str:
    t = _bind(cg, f"tl.abs({a})", "ath_t")
    z = _bind(cg, f"{a} * {a}", "ath_z")
    small = _poly(z, (1.81740078349e-1, 8.24370301058e-2, 1.46691431730e-1, 1.99782164500e-1,
                      3.33337300303e-1))
    r = _bind(cg, f"tl.where({t} < 0.5, {small} * {z} * {t} + {t}, "
                  f"0.5 * tl.log((1.0 + {t}) / (1.0 - {t})))", "atanh")
    return f"tl.where({a} < 0, -{r}, {r})"


for _name, _fn in [("atan", _atan), ("asin", _asin), ("acos", _acos), ("sinh", _sinh),
                   ("cosh", _cosh), ("tanh", _tanh), ("asinh", _asinh), ("acosh", _acosh), ("atanh", _atanh)]:
    _unary(_name, _fn, "float", True)


def _float_operands(cg: Any, node: Any, args: list[str]) -> tuple[str, str, torch.dtype]:
    out = node.out.dtype
    work = torch.float32 if out in _HALF else out
    a, b = (cg.coerce(x, e, work, force=True) for x, e in zip(node.inputs, args))
    # a scalar argument is a plain Python number in the interpreter: make it a tensor
    a, b = (f"tl.cast({e}, {cg.tl(work)})" if isinstance(x, Value) and not x.shape and
            x.dtype == work else e for x, e in zip(node.inputs, (a, b)))
    lhs, rhs = cg.fresh("lhs"), cg.fresh("rhs")
    # one shape for both: the interpreter cannot `|` a 0-d bool with a block of bools
    cg.line(f"{lhs}, {rhs} = tl.broadcast({a}, {b})")
    return lhs, rhs, work


def _finish(cg: Any, node: Any, expr: str, work: torch.dtype) -> str:
    out = node.out.dtype
    return expr if work == out else f"({expr}).to({cg.tl(out)})"


def _atan2(cg: Any, node: Any, args: list[str]) -> str:
    y, x, work = _float_operands(cg, node, args)
    ax = _bind(cg, f"tl.abs({x})", "ax")
    ay = _bind(cg, f"tl.abs({y})", "ay")
    lo = _bind(cg, f"tl.minimum({ax}, {ay})", "lo")
    hi = _bind(cg, f"tl.maximum({ax}, {ay})", "hi")
    # 0/0 -> 0 and inf/inf -> 1 (atan2(±inf, ±inf) is an odd multiple of pi/4)
    q = _bind(cg, f"tl.where({hi} == 0, 0.0, tl.where({lo} == float('inf'), 1.0, "
                  f"{lo} / {hi}))", "ratio")
    r = _bind(cg, atan_abs(cg, q), "at")
    r = _bind(cg, f"tl.where({ay} > {ax}, {_PI_2} - {r}, {r})", "at_q1")
    r = _bind(cg, f"tl.where({_neg_sign(x)}, {_PI} - {r}, {r})", "at_q2")
    r = _bind(cg, f"tl.where({_neg_sign(y)}, -{r}, {r})", "atan2")
    return _finish(cg, node, f"tl.where(({x} != {x}) | ({y} != {y}), {x} + {y}, {r})", work)


register(OpDef("atan2", _binary_infer("float"), _atan2))


def _pow_tensor(cg: Any, node: Any, args: list[str]) -> str:
    """``torch.pow`` of float operands through exp(b * log|a|), with torch's special cases."""
    a, b, work = _float_operands(cg, node, args)
    mag = _bind(cg, f"tl.exp({b} * tl.log(tl.abs({a})))", "pw_mag")
    whole = _bind(cg, f"tl.floor({b}) == {b}", "pw_int")
    odd = _bind(cg, f"{whole} & (({b} - 2.0 * tl.floor({b} * 0.5)) == 1.0)", "pw_odd")
    # a negative base: real only for an integer exponent, negative for an odd one
    r = _bind(cg, f"tl.where({_neg_sign(a)}, tl.where({odd}, -{mag}, tl.where({whole} | "
                  f"({a} == 0) | (tl.abs({a}) == float('inf')), {mag}, float('nan'))), {mag})", "pw")
    one = f"({b} == 0) | ({a} == 1.0) | ((tl.abs({a}) == 1.0) & (tl.abs({b}) == float('inf')))"
    return _finish(cg, node, f"tl.where({one}, 1.0, {r})", work)


def _pow_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    shape = broadcast_shapes([shape_of(i) for i in inputs])
    return shape, promote(inputs)[0]


def _pow_emit(cg: Any, node: Any, args: list[str]) -> str:
    """Small integer constant exponents multiply, 0.5 is a square root, a positive Python
    base takes its log on the host; the rest is :func:`_pow_tensor`."""
    base, exp = node.inputs
    out = node.out.dtype
    work = torch.float32 if out in _HALF else out
    a = cg.coerce(base, args[0], work)
    if isinstance(exp, (int, float)) and not isinstance(exp, bool) and float(exp).is_integer() \
            and abs(exp) <= 8:
        n = int(exp)
        expr = "1" if n == 0 else " * ".join([a] * abs(n))
        if n < 0:
            expr = f"1.0 / ({expr})"
    elif isinstance(exp, float) and exp == 0.5:
        expr = f"tl.sqrt({a})"
    elif not work.is_floating_point:
        raise KernelTypeError("pow with a non-integer-constant exponent needs float operands",
                              hint="convert with .to(torch.float32) first")
    elif isinstance(base, (int, float)) and base > 0:  # a Python number: log on the host
        expr = f"tl.exp({cg.coerce(exp, args[1], work)} * {cg.literal(math.log(base))})"
    else:
        return _pow_tensor(cg, node, args)
    return expr if work == out else f"({expr}).to({cg.tl(out)})"


register(OpDef("pow", _pow_infer, _pow_emit))
