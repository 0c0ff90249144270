"""torch's smaller element-wise functions, written in device code as compositions of core
ops: predicates (``isnan``/``isinf``/``isfinite``/``signbit``, ``logical_*``, the function
forms of comparisons), division with ``rounding_mode``, ``fmod``/``remainder``, optimizer
arithmetic (``lerp``, ``addcmul``, ``addcdiv``), losses (``xlogy``, ``xlog1py``, ``entr``,
``logit``), ``nan_to_num``, ``hypot``, ``copysign``, ``frac``, ``sinc``,
``heaviside``, ``float_power``, the shrink/threshold activations, the identity methods
(``clone``, ``contiguous``, ``detach``) and ``.item()`` of a 0-d value. Each follows torch's formula and special values.

Each entry of :data:`COMPOSED` takes ``(handler, name, args, kwargs, node)`` like
:func:`torchship.kernels.frontend.funcs.call`; :data:`FUNCTIONS` and :data:`METHODS` name
them for :mod:`torchship.kernels.frontend.calls`.

Example:
    >>> FUNCTIONS[torch.lerp], METHODS["isnan"]
    ('lerp', 'isnan')
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from torchship.kernels.errors import KernelTypeError
from torchship.kernels.frontend.compose import _arg, _back, _float_block
from torchship.kernels.ir import Value
from torchship.kernels.ops import promote
from torchship.kernels.ops.specialfns import POLYGAMMA_MAX

_INF = float("inf")


def _block(h: Any, name: str, x: Any, node: ast.AST) -> Value:
    if not isinstance(x, Value):
        raise h.err(KernelTypeError, f"{name}() needs a block in device code", node=node,
                    hint="compute on python numbers in host code")
    return x


def _isnan(h: Any, x: Value) -> Value:
    return h.b.emit("ne", [x, x])


def _is_inf(h: Any, x: Value) -> Value:
    return h.b.emit("eq", [h.b.emit("abs", [x]), _INF])


def _signbit(h: Any, x: Value) -> Value:
    """Negative or -0.0 (whose reciprocal is -inf)."""
    b = h.b
    if not x.dtype.is_floating_point:
        return b.emit("lt", [x, 0])
    return b.emit("or_", [b.emit("lt", [x, 0.0]),
                          b.emit("lt", [b.emit("truediv", [1.0, x]), 0.0])])


def predicate(h: Any, name: str, args: list[Any], kwargs: dict[str, Any],
              node: ast.AST) -> Value:
    """isnan/isinf/isposinf/isneginf/isfinite/signbit: bool blocks (integers are finite)."""
    b = h.b
    x = _block(h, name, args[0], node)
    if not x.dtype.is_floating_point and name != "signbit":
        same = b.emit("eq", [x, x])  # all True
        return same if name == "isfinite" else b.emit("not_", [same])
    if name == "isnan":
        return _isnan(h, x)
    if name == "isinf":
        return _is_inf(h, x)
    if name in ("isposinf", "isneginf"):
        return b.emit("eq", [x, _INF if name == "isposinf" else -_INF])
    if name == "signbit":
        return _signbit(h, x)
    return b.emit("and_", [b.emit("eq", [x, x]), b.emit("not_", [_is_inf(h, x)])])


def logical(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Value:
    b = h.b
    truth = [b.emit("ne", [h.operand(a), 0]) for a in args[:1 if name == "logical_not" else 2]]
    if name == "logical_not":
        return b.emit("not_", truth)
    return b.emit({"logical_and": "and_", "logical_or": "or_", "logical_xor": "xor"}[name], truth)


def _trunc_div(h: Any, a: Any, d: Any) -> Value:
    """Quotient rounded toward zero: float division truncated, or for integers the floor
    quotient plus 1 where a division with a remainder had operands of opposite signs."""
    b = h.b
    if promote([a, d])[0].is_floating_point:
        return b.emit("trunc", [b.emit("truediv_rn", [a, d])])
    floor = b.emit("floordiv", [a, d])
    inexact = b.emit("ne", [b.emit("mod", [a, d]), 0])
    opposite = b.emit("ne", [b.emit("lt", [a, 0]), b.emit("lt", [d, 0])])
    return b.emit("add", [floor, b.emit("to", [b.emit("and_", [inexact, opposite])],
                                        {"dtype": floor.dtype})])


def division(h: Any, name: str, args: list[Any], kwargs: dict[str, Any],
             node: ast.AST) -> Value:
    """div/divide (``rounding_mode`` None, "floor" or "trunc"), true_divide, floor_divide,
    remainder (sign of the divisor) and fmod (sign of the dividend)."""
    a, d = (h.operand(v) for v in (args[0], _arg(args, kwargs, 1, "other", None)))
    mode = kwargs.get("rounding_mode") if name == "div" else \
        {"true_divide": None, "floor_divide": "floor"}.get(name, "rem")
    if name in ("remainder", "fmod"):
        if name == "fmod" and promote([a, d])[0].is_floating_point:
            return h.b.emit("fmod", [a, d])
        r = h.b.emit("mod", [a, d])
        if name == "remainder":
            return r
        b = h.b
        flip = b.emit("and_", [b.emit("ne", [r, 0]),
                               b.emit("ne", [b.emit("lt", [a, 0]), b.emit("lt", [d, 0])])])
        return b.emit("where", [flip, b.emit("sub", [r, d]), r])
    if mode is None:
        return h.b.emit("truediv", [a, d])
    if mode == "floor":
        return h.b.emit("floordiv", [a, d])
    if mode != "trunc":
        raise h.err(KernelTypeError, f"rounding_mode={mode!r} is not a torch rounding mode",
                    hint='use None, "floor" or "trunc"', node=node)
    return _trunc_div(h, a, d)


def optim(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Value:
    """lerp (torch's two-sided formula, exact at both ends), addcmul, addcdiv."""
    b = h.b
    if name == "lerp":
        start, end = h.operand(args[0]), h.operand(_arg(args, kwargs, 1, "end", None))
        weight = h.operand(_arg(args, kwargs, 2, "weight", None))
        diff = b.emit("sub", [end, start])
        low = b.emit("add", [start, b.emit("mul", [weight, diff])])
        high = b.emit("sub", [end, b.emit("mul", [diff, b.emit("sub", [1.0, weight])])])
        small = b.emit("lt", [b.emit("abs", [weight]), 0.5]) if isinstance(weight, Value) \
            else abs(weight) < 0.5
        if not isinstance(small, Value):
            return low if small else high
        return b.emit("where", [small, low, high])
    x, t1, t2 = (h.operand(v) for v in (args[0], _arg(args, kwargs, 1, "tensor1", None),
                                        _arg(args, kwargs, 2, "tensor2", None)))
    value = kwargs.get("value", args[3] if len(args) > 3 else 1)
    term = b.emit("mul" if name == "addcmul" else "truediv", [t1, t2])
    if value != 1:
        term = b.emit("mul", [h.operand(value), term])
    return b.emit("add", [x, term])


def logs(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Value:
    """xlogy / xlog1py (0 where x is 0, nan where y is nan), entr, logit (``eps`` clamps)."""
    b = h.b
    x = h.operand(args[0])
    if name == "kl_div":
        return _kl_div(h, x, args, kwargs, node)
    if name in ("xlogy", "xlog1py"):
        y = _block(h, name, _arg(args, kwargs, 1, "other", None), node)
        prod = b.emit("mul", [x, b.emit("log" if name == "xlogy" else "log1p", [y])])
        out = b.emit("where", [b.emit("eq", [x, 0]), 0.0, prod]) if isinstance(x, Value) \
            else (b.emit("mul", [prod, 0.0]) if x == 0 else prod)
        return b.emit("where", [_isnan(h, y), y, out])
    work = _float_block(h, name, _block(h, name, x, node), node)
    if name == "entr":
        inner = b.emit("where", [b.emit("eq", [work, 0.0]), 0.0, -_INF])
        out = b.emit("where", [b.emit("gt", [work, 0.0]),
                               b.emit("neg", [b.emit("mul", [work, b.emit("log", [work])])]),
                               b.emit("where", [_isnan(h, work), work, inner])])
        return _back(h, out, x.dtype)
    eps = _arg(args, kwargs, 1, "eps", None)
    if eps is not None:
        work = b.emit("minimum", [b.emit("maximum", [work, eps]), 1.0 - eps])
    return _back(h, b.emit("log", [b.emit("truediv", [work, b.emit("sub", [1.0, work])])]),
                 x.dtype)


def _kl_div(h: Any, x: Any, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Value:
    """``F.kl_div(input, target, reduction="none", log_target=)``: torch's pointwise loss,
    ``xlogy(t, t) - t * input`` (``exp(t) * (t - input)`` for a log target)."""
    reduction = _arg(args, kwargs, 4, "reduction", "mean")
    if reduction != "none" or len(args) > 2 and args[2] is not None:
        raise h.err(KernelTypeError, f"F.kl_div(reduction={reduction!r}) in device code would "
                    "reduce each block on its own", hint="pass reduction=\"none\" and reduce "
                    "the block yourself (loss.sum(dim=1), then / n on the host for batchmean)",
                    node=node)
    t = h.operand(_arg(args, kwargs, 1, "target", None))
    if _arg(args, kwargs, 5, "log_target", False):
        return h.b.emit("mul", [h.b.emit("exp", [t]), h.b.emit("sub", [t, x])])
    return h.b.emit("sub", [logs(h, "xlogy", [t, t], {}, node), h.b.emit("mul", [t, x])])


def misc(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Any:
    """nan_to_num, hypot, copysign, frac, sgn, sinc, heaviside, float_power, rad2deg,
    deg2rad."""
    b = h.b
    x = h.operand(args[0])
    if name == "heaviside":
        values = h.operand(_arg(args, kwargs, 1, "values", None))
        step = b.emit("to", [b.emit("gt", [x, 0])], {"dtype": x.dtype})
        return b.emit("where", [b.emit("eq", [x, 0]), values, step])
    if name == "float_power":
        exp = _arg(args, kwargs, 1, "exponent", None)
        return b.emit("pow", [b.emit("to", [x], {"dtype": torch.float64}),
                              exp if not isinstance(exp, Value)
                              else b.emit("to", [exp], {"dtype": torch.float64})])
    if name == "sgn":
        return b.emit("sign", [x])
    x = _block(h, name, x, node)
    if name == "nan_to_num":
        if not x.dtype.is_floating_point:
            return x
        fmax = torch.finfo(x.dtype).max
        nan = _arg(args, kwargs, 1, "nan", 0.0)
        pos = _arg(args, kwargs, 2, "posinf", None)
        neg = _arg(args, kwargs, 3, "neginf", None)
        out = b.emit("where", [b.emit("eq", [x, _INF]), fmax if pos is None else pos, x])
        out = b.emit("where", [b.emit("eq", [x, -_INF]), -fmax if neg is None else neg, out])
        return b.emit("where", [_isnan(h, x), nan, out])
    work = _float_block(h, name, x, node) if x.dtype.is_floating_point else \
        b.emit("to", [x], {"dtype": torch.float32})
    if name == "hypot":
        y = _block(h, name, _arg(args, kwargs, 1, "other", None), node)
        out = _hypot(h, work, b.emit("to", [y], {"dtype": work.dtype}))
    elif name == "copysign":
        sign_of = h.operand(_arg(args, kwargs, 1, "other", None))
        mag = b.emit("abs", [work])
        neg = _signbit(h, sign_of) if isinstance(sign_of, Value) else \
            math.copysign(1.0, sign_of) < 0
        out = (b.emit("where", [neg, b.emit("neg", [mag]), mag]) if isinstance(neg, Value)
               else (b.emit("neg", [mag]) if neg else mag))
    elif name == "frac":
        out = b.emit("sub", [work, b.emit("trunc", [work])])
    elif name == "sinc":
        px = b.emit("mul", [work, math.pi])
        out = b.emit("where", [b.emit("eq", [work, 0.0]), 1.0,
                               b.emit("truediv", [b.emit("sin", [px]), px])])
    else:
        assert name in ("rad2deg", "deg2rad"), name
        out = b.emit("mul", [work, 180.0 / math.pi if name == "rad2deg" else math.pi / 180.0])
    return _back(h, out, x.dtype) if x.dtype.is_floating_point else out


def _hypot(h: Any, x: Value, y: Value) -> Value:
    """sqrt(x^2 + y^2) without overflow: big * sqrt(1 + (small / big)^2); inf wins over nan."""
    b = h.b
    ax, ay = b.emit("abs", [x]), b.emit("abs", [y])
    big = b.emit("where", [b.emit("gt", [ax, ay]), ax, ay])
    small = b.emit("where", [b.emit("gt", [ax, ay]), ay, ax])
    ratio = b.emit("truediv", [small, big])
    scaled = b.emit("mul", [big, b.emit("sqrt", [b.emit("add", [
        b.emit("mul", [ratio, ratio]), 1.0])])])
    out = b.emit("where", [b.emit("eq", [big, 0.0]), 0.0, scaled])
    out = b.emit("where", [b.emit("or_", [_isnan(h, x), _isnan(h, y)]), float("nan"), out])
    return b.emit("where", [b.emit("or_", [_is_inf(h, x), _is_inf(h, y)]), _INF, out])


def shrink(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Value:
    """softshrink / hardshrink (``lambd``), tanhshrink, threshold(x, threshold, value)."""
    b = h.b
    x = _block(h, name, args[0], node)
    if name == "tanhshrink":
        work = _float_block(h, name, x, node)
        return _back(h, b.emit("sub", [work, b.emit("tanh", [work])]), x.dtype)
    if name == "threshold":  # torch: x <= threshold ? value : x (nan stays)
        th, value = _arg(args, kwargs, 1, "threshold", None), _arg(args, kwargs, 2, "value", None)
        return _back(h, b.emit("where", [b.emit("le", [x, th]), value, x]), x.dtype)
    lambd = _arg(args, kwargs, 1, "lambd", 0.5)
    if name == "hardshrink":  # torch: -lambd <= x <= lambd ? 0 : x
        inside = b.emit("le", [b.emit("abs", [x]), lambd])
        return _back(h, b.emit("where", [inside, 0, x]), x.dtype)
    out = b.emit("where", [b.emit("gt", [x, lambd]), b.emit("sub", [x, lambd]),
                           b.emit("where", [b.emit("lt", [x, -lambd]),
                                            b.emit("add", [x, lambd]), b.emit("mul", [x, 0])])])
    return _back(h, out, x.dtype)  # (x * 0: nan stays nan, like torch)


def identity(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Any:
    """clone / contiguous / detach: a block is a value, these change nothing."""
    return args[0]


def item(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Value:
    """``v.item()`` of a 0-d value (``lengths[i].item()``, a 0-d tensor argument): the value
    as a python number would be, weak in type promotion (a float16 block times
    ``s.item()`` stays float16, an int block becomes float32)."""
    v = args[0]
    if v.ndim:
        raise h.err(KernelTypeError, f"item() of the block {v.shape_str()}: only a 0-d value "
                    "is one number", hint="index one element first (lengths[i].item()), or "
                    "reduce the block", node=node)
    out = h.b.emit("to", [v], {"dtype": v.dtype})
    out.weak = True
    return out


def polygamma(h: Any, name: str, args: list[Any], kwargs: dict[str, Any],
              node: ast.AST) -> Any:
    """``torch.polygamma(n, x)`` / ``x.polygamma(n)``: digamma for ``n = 0``, the compiled
    series of :mod:`torchship.kernels.ops.specialfns` up to ``POLYGAMMA_MAX``."""
    first = args[0] if args else None  # torch.polygamma(n, x) or x.polygamma(n)
    n_first = isinstance(first, int) or (isinstance(first, Value) and first.weak and
                                         not first.shape and not first.dtype.is_floating_point)
    n, x = (args[1], args[0]) if len(args) > 1 and not n_first else (_arg(args, kwargs, 0, "n", None),
                                               _arg(args, kwargs, 1, "input", None))
    if isinstance(n, Value):  # an int argument: compiled in
        n = h.b.const_int(n, "polygamma's n")
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= POLYGAMMA_MAX:
        raise h.err(KernelTypeError, f"polygamma(n, x) needs n a python int from 0 to "
                    f"{POLYGAMMA_MAX}, got {n!r}", hint="pass n as a literal or an int argument "
                    "(polygamma(1, x) is the trigamma function)", node=node)
    x = h.operand(x)
    return h.b.emit("digamma" if n == 0 else f"polygamma{n}", [x])


def comparison(h: Any, name: str, args: list[Any], kwargs: dict[str, Any],
               node: ast.AST) -> Value:
    """torch.gt/ge/lt/le/eq/ne (and greater, less_equal, ...) as functions and methods."""
    return h.b.emit(name, [h.operand(args[0]), h.operand(_arg(args, kwargs, 1, "other", None))])


_GROUPS: dict[Callable[..., Any], tuple[str, ...]] = {
    predicate: ("isnan", "isinf", "isposinf", "isneginf", "isfinite", "signbit"),
    logical: ("logical_and", "logical_or", "logical_xor", "logical_not"),
    division: ("div", "true_divide", "floor_divide", "remainder", "fmod"),
    optim: ("lerp", "addcmul", "addcdiv"),
    logs: ("xlogy", "xlog1py", "entr", "logit", "kl_div"),
    misc: ("nan_to_num", "hypot", "copysign", "frac", "sgn", "sinc", "heaviside",
           "float_power", "rad2deg", "deg2rad"),
    shrink: ("softshrink", "hardshrink", "tanhshrink", "threshold"),
    identity: ("clone", "contiguous", "detach"),
    item: ("item",),
    comparison: ("gt", "ge", "lt", "le", "eq", "ne"),
    polygamma: ("polygamma",),
}
COMPOSED: dict[str, Callable[..., Any]] = {n: fn for fn, names in _GROUPS.items() for n in names}

_ALIASES = {"divide": "div", "greater": "gt", "greater_equal": "ge", "less": "lt",
            "less_equal": "le", "not_equal": "ne", "negative": "neg"}
#: torch callables of device code -> op or composition name
FUNCTIONS: dict[Any, str] = {
    **{getattr(torch, n): n for n in COMPOSED if hasattr(torch, n) and n not in
       ("contiguous", "detach", "item", "kl_div")},
    **{getattr(torch, a): n for a, n in _ALIASES.items()},
    torch.special.xlogy: "xlogy", torch.special.xlog1py: "xlog1py", torch.special.entr: "entr",
    torch.special.logit: "logit", torch.special.ndtr: "ndtr", torch.special.sinc: "sinc",
    torch.special.ndtri: "ndtri", torch.special.log_ndtr: "log_ndtr",
    **{getattr(torch.special, n): n for n in ("i0", "i0e", "i1", "i1e", "polygamma")},
    F.softshrink: "softshrink", F.hardshrink: "hardshrink", F.tanhshrink: "tanhshrink",
    F.threshold: "threshold", F.kl_div: "kl_div",
}
#: tensor methods of device code -> op or composition name
METHODS: dict[str, str] = {
    **{n: n for n in COMPOSED if hasattr(torch.Tensor, n)},
    **{a: n for a, n in _ALIASES.items() if hasattr(torch.Tensor, a)},
}
