"""Element-wise ops: arithmetic, comparisons, math functions, activations, casts, ``where``.

Transcendental functions avoid ``libdevice`` (it returns None in Triton's interpreter):
``sigmoid`` is ``1/(1+exp(-x))``, ``erf`` is ``tl.math.erf`` (``tanh`` and the inverse and
hyperbolic functions are in :mod:`torchship.kernels.ops.mathfns`).
Half-precision inputs compute in float32 and round back, like torch's CUDA kernels.

Example:
    >>> import torch
    >>> from torchship.kernels.ir import ConstDim, Value
    >>> from torchship.kernels.ops import OPS
    >>> x = Value((ConstDim(8),), torch.int32)
    >>> OPS["exp"].infer([x], {})[1]   # torch.exp(int) is float32
    torch.float32
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from torchship.kernels.errors import KernelTypeError
from torchship.kernels.ops import OpDef, broadcast_shapes, promote, register, shape_of

_HALF = (torch.float16, torch.bfloat16)


_FP8 = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                                         "float8_e5m2fnuz") if hasattr(torch, n))


def no_fp8(dtype: torch.dtype) -> None:
    """Refuse arithmetic on float8 blocks (Triton has none; torch not even ``add``).

    Example:
        >>> no_fp8(torch.float16)
    """
    if dtype in _FP8:
        raise KernelTypeError(f"arithmetic on {dtype} blocks is not supported",
                              hint="compute in float32: x[t].float(), then store "
                              f"result.to({dtype}) (casts round to nearest even like torch)")


def _binary_infer(result: str) -> Any:
    def infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
        shape = broadcast_shapes([shape_of(i) for i in inputs])
        dtype, _ = promote(inputs)
        no_fp8(dtype)
        if result == "bool":
            return shape, torch.bool
        if result == "float" and not dtype.is_floating_point:
            return shape, torch.float32
        return shape, dtype

    return infer


def _compute_dtype(inputs: list[Any], result: str) -> torch.dtype:
    dtype, _ = promote(inputs)
    if result == "float" and not dtype.is_floating_point:
        return torch.float32
    return dtype


# torch's bool arithmetic is logical (True + True is True); Triton's int1 would wrap to False
_BOOL_FORMS = {"add": "{a} | {b}", "mul": "{a} & {b}", "maximum": "{a} | {b}",
               "minimum": "{a} & {b}"}
# torch.maximum/minimum/clamp/relu propagate NaN; Triton's default drops it (fmax)
PROPAGATE_NAN = "propagate_nan=tl.PropagateNan.ALL"
_FLOAT_FORMS = {"maximum": f"tl.maximum({{a}}, {{b}}, {PROPAGATE_NAN})",
                "minimum": f"tl.minimum({{a}}, {{b}}, {PROPAGATE_NAN})"}


def _binary(name: str, fmt: str, result: str = "same") -> None:
    infer_result = _binary_infer(result)

    def infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
        shape, dtype = infer_result(inputs, attrs)
        if name == "sub" and dtype == torch.bool:
            raise KernelTypeError("`-` of two bools is not defined (torch refuses it too)",
                                  hint="use `a ^ b` (or `a & ~b`) for bools, or cast to int")
        return shape, dtype

    def emit(cg: Any, node: Any, args: list[str]) -> str:
        work = _compute_dtype(node.inputs, result)
        a, b = (cg.coerce(x, e, work) for x, e in zip(node.inputs, args))
        form = _BOOL_FORMS.get(name, fmt) if work == torch.bool else \
            _FLOAT_FORMS.get(name, fmt) if work.is_floating_point else fmt
        return form.format(a=a, b=b)

    register(OpDef(name, infer, emit))


for _name, _fmt in [("add", "{a} + {b}"), ("sub", "{a} - {b}"), ("mul", "{a} * {b}"),
                    ("maximum", "tl.maximum({a}, {b})"), ("minimum", "tl.minimum({a}, {b})")]:
    _binary(_name, _fmt)
_binary("truediv", "{a} / {b}", "float")


def fmod_expr(cg: Any, a: str, b: str, dtype: torch.dtype) -> str:
    """C's ``fmod(a, b)`` of two float expressions of ``dtype``, exact. The interpreter's ``%``
    is numpy's fmod; on a GPU Triton's ``%`` computes ``a - b * trunc(a / b)`` (``1e30 % 7``
    came out as -2.8e22 on an H100, ``-0.0 % 1`` as +0.0), so it calls libdevice's ``fmod``
    there (float32 for half operands: the remainder is exact in the operands' dtype)."""
    if cg.interpret:
        return f"{a} % {b}"
    cg.helpers.setdefault("_ts_libdevice", "from triton.language.extra import libdevice as "
                                           "_ts_libdevice\n")
    # (both operands cast: libdevice wants one dtype, and either may be a Python number)
    t = cg.tl(torch.float32 if dtype in _HALF else dtype)
    r = f"_ts_libdevice.fmod(tl.cast({a}, {t}), tl.cast({b}, {t}))"
    return f"{r}.to({cg.tl(dtype)})" if dtype in _HALF else r


def div_rn_expr(cg: Any, a: str, b: str, dtype: torch.dtype) -> str:
    """``a / b`` correctly rounded, as torch divides. Triton's ``/`` of float32 is
    ``div.full.f32`` on a GPU (within 2 ulp: -3e37 / 7 came out one ulp off on an H100); that
    is fine for a true division but not where the quotient is rounded to an integer next."""
    if dtype == torch.float64:
        return f"({a}) / ({b})"  # div.rn.f64 already (div_rn takes float32 only)
    q = f"tl.math.div_rn(tl.cast({a}, tl.float32), tl.cast({b}, tl.float32))"
    return f"{q}.to({cg.tl(dtype)})" if dtype in _HALF else q


def _floor_quotient(cg: Any, node: Any, args: list[str]) -> tuple[str, str, str, torch.dtype]:
    """(a, b, floor(a / b), dtype). Floats follow torch's ``div_floor_floating``: the quotient
    of ``a - fmod(a, b)`` (exact), one less where the remainder's sign is not the divisor's,
    so ``inf // x`` is nan, ``1 // -inf`` is -1 and a zero quotient keeps the sign of ``a / b``;
    ``x // 0`` is ``x / 0``. Integers divide in float64 (exact below 2**53), so the rounding is
    torch's (toward -inf) in the interpreter and on the GPU alike."""
    work = _compute_dtype(node.inputs, "same")
    a, b = (cg.coerce(x, e, work) for x, e in zip(node.inputs, args))
    if work.is_floating_point:
        a, b = _bind(cg, a, "fa"), _bind(cg, b, "fb")
        r = _bind(cg, fmod_expr(cg, a, b, work), "fmod")
        off = _bind(cg, f"({r} != 0) & (({b} < 0) != ({r} < 0))", "fd_off")
        quotient = div_rn_expr(cg, f"{a} - {r}", b, work)
        div = _bind(cg, f"{quotient} - tl.where({off}, 1.0, 0.0)", "fd_div")
        fl = _bind(cg, f"tl.floor({div})", "fd_floor")
        fl = f"tl.where({div} - {fl} > 0.5, {fl} + 1.0, {fl})"
        zero = f"0.0 * ({a} / {b})"  # copysign(0, a / b): a / b is finite here
        q = f"tl.where({b} == 0, {a} / {b}, tl.where({div} != 0, {fl}, {zero}))"
        return a, b, q, work
    q = f"tl.floor(tl.cast({a}, tl.float64) / tl.cast({b}, tl.float64)).to({cg.tl(work)})"
    return a, b, q, work


def _bind(cg: Any, expr: str, hint: str) -> str:
    """A fresh name for ``expr`` (written as a statement now)."""
    name = cg.fresh(hint)
    cg.line(f"{name} = {expr}")
    return name


def _floordiv(cg: Any, node: Any, args: list[str]) -> str:
    return _floor_quotient(cg, node, args)[2]


def _mod(cg: Any, node: Any, args: list[str]) -> str:
    """torch.remainder / Python ``%``: the sign of the divisor. Floats as torch: ``fmod`` plus
    the divisor where the signs differ (``1 % -inf`` is -inf, ``-0.0 % 1`` is -0.0)."""
    work = _compute_dtype(node.inputs, "same")
    if work.is_floating_point:
        a, b = (cg.coerce(x, e, work) for x, e in zip(node.inputs, args))
        b = _bind(cg, b, "fb")
        r = _bind(cg, fmod_expr(cg, a, b, work), "fmod")
        return f"tl.where(({r} != 0) & (({b} < 0) != ({r} < 0)), {r} + {b}, {r})"
    a, b, q, _ = _floor_quotient(cg, node, args)
    return f"{a} - ({q}) * {b}"


def _fmod(cg: Any, node: Any, args: list[str]) -> str:
    """torch.fmod: C's ``fmod`` (Triton's ``%`` is ``frem`` / ``srem``), the dividend's sign."""
    work = _compute_dtype(node.inputs, "same")
    a, b = (cg.coerce(x, e, work) for x, e in zip(node.inputs, args))
    return fmod_expr(cg, a, b, work) if work.is_floating_point else f"{a} % {b}"


def _truediv_rn(cg: Any, node: Any, args: list[str]) -> str:
    work = _compute_dtype(node.inputs, "float")
    a, b = (cg.coerce(x, e, work) for x, e in zip(node.inputs, args))
    return div_rn_expr(cg, a, b, work)


register(OpDef("floordiv", _binary_infer("same"), _floordiv))
register(OpDef("mod", _binary_infer("same"), _mod))
register(OpDef("fmod", _binary_infer("same"), _fmod))
# a / b correctly rounded (the quotient of a rounding division; see div_rn_expr)
register(OpDef("truediv_rn", _binary_infer("float"), _truediv_rn))
for _name, _op in [("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">="), ("eq", "=="),
                   ("ne", "!=")]:
    _binary(_name, "{a} " + _op + " {b}", "bool")


def _bitwise(name: str, op: str) -> None:
    def infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
        shape = broadcast_shapes([shape_of(i) for i in inputs])
        dtype, _ = promote(inputs)
        if dtype.is_floating_point:
            raise KernelTypeError(
                f"`{op}` needs bool or integer operands, got {dtype}",
                hint="compare first (a > 0) & (b > 0), or use torch.where",
            )
        return shape, dtype

    def emit(cg: Any, node: Any, args: list[str]) -> str:
        work, _ = promote(node.inputs)
        a, b = (cg.coerce(x, e, work) for x, e in zip(node.inputs, args))
        return f"{a} {op} {b}"

    register(OpDef(name, infer, emit))


_bitwise("and_", "&")
_bitwise("or_", "|")
_bitwise("xor", "^")
_bitwise("lshift", "<<")  # wraps like torch's fixed-width integers
_bitwise("rshift", ">>")  # arithmetic on signed integers, like torch


def _unary(name: str, body: str | Callable[[Any, str], str], result: str = "same",
           needs_f32: bool = False) -> None:
    """``body`` uses ``{a}`` (the operand, already in the compute dtype) and ``{t}`` (that
    dtype in Triton), or is ``body(cg, a) -> expr`` (it may write statements first)."""

    def infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
        dtype, _ = promote(inputs)
        no_fp8(dtype)
        if result == "float" and not dtype.is_floating_point:
            dtype = torch.float32
        if result == "bool":
            dtype = torch.bool
        return shape_of(inputs[0]), dtype

    def emit(cg: Any, node: Any, args: list[str]) -> str:
        out_dtype = node.out.dtype
        work = out_dtype
        if needs_f32 and (out_dtype in _HALF):
            work = torch.float32
        a = cg.coerce(node.inputs[0], args[0], work if result != "bool" else None)
        expr = body(cg, a) if callable(body) else body.format(a=a, t=cg.tl(work))
        if work != out_dtype and result != "bool":
            expr = f"({expr}).to({cg.tl(out_dtype)})"
        return expr

    register(OpDef(name, infer, emit))


_unary("neg", "-{a}")
_unary("abs", "tl.abs({a})")
_unary("relu", "tl.where({a} < 0, 0, {a})")  # nan stays nan, like torch
_unary("not_", "{a} == 0", "bool")
_unary("exp", "tl.exp({a})", "float", True)
_unary("exp2", "tl.exp2({a})", "float", True)
_unary("log", "tl.log({a})", "float", True)
_unary("log2", "tl.log2({a})", "float", True)
_unary("sqrt", "tl.sqrt({a})", "float", True)
_unary("rsqrt", "tl.rsqrt({a})", "float", True)
_unary("sin", "tl.sin({a})", "float", True)
_unary("cos", "tl.cos({a})", "float", True)
_unary("floor", "tl.floor({a})", "same", True)
_unary("ceil", "tl.ceil({a})", "same", True)
_unary("log10", "tl.log2({a}) * 0.30102999566398120", "float", True)
# accurate near 0 without libdevice: log1p(x) = log(u) * x / (u - 1) with u = 1 + x (Goldberg),
# expm1(x) = (u - 1) * x / log(u) with u = exp(x) (Kahan); exact x where u rounds to 1
_unary("log1p", "tl.where(1.0 + {a} == 1.0, {a}, tl.log(1.0 + {a}) * {a} / (1.0 + {a} - 1.0))",
       "float", True)
_unary("expm1", "tl.where(tl.exp({a}) == 1.0, {a}, tl.where(tl.abs({a}) < 1.0, "
       "(tl.exp({a}) - 1.0) * {a} / tl.log(tl.exp({a})), tl.exp({a}) - 1.0))", "float", True)
_unary("tan", "tl.sin({a}) / tl.cos({a})", "float", True)
# half to even like torch, exact: floor plus 1 above .5, and at .5 only from an odd floor
_unary("round", "tl.floor({a}) + tl.where({a} - tl.floor({a}) > 0.5, 1.0, tl.where({a} - "
       "tl.floor({a}) == 0.5, tl.floor({a}) - 2.0 * tl.floor(tl.floor({a}) * 0.5), 0.0))",
       "same", True)
_unary("trunc", "tl.where({a} >= 0, tl.floor({a}), tl.ceil({a}))", "same", True)
_unary("sign", "tl.where({a} > 0, 1, tl.where({a} < 0, -1, 0)).to({t})")
_unary("reciprocal", "1.0 / {a}", "float", True)
_unary("sigmoid", "1.0 / (1.0 + tl.exp(-{a}))", "float", True)
_unary("erf", "tl.math.erf({a})", "float", True)
_unary("silu", "{a} / (1.0 + tl.exp(-{a}))", "float", True)
_unary("gelu", "0.5 * {a} * (1.0 + tl.math.erf({a} * 0.7071067811865476))", "float", True)
_unary(
    "gelu_tanh",
    "0.5 * {a} * (2.0 - 2.0 / (tl.exp(1.5957691216057308 * ({a} + 0.044715 * {a} * {a} * {a}))"
    " + 1.0))",
    "float",
    True,
)


#: element-wise math a kernel may call as ``torch.<name>(x)`` or ``x.<name>()``
TORCH_UNARY = ("exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt",
               "sigmoid", "tanh", "abs", "erf", "relu", "silu", "neg", "sin", "cos", "tan",
               "floor", "ceil", "round", "trunc", "sign", "reciprocal", "atan", "asin", "acos",
               "sinh", "cosh", "asinh", "acosh", "atanh", "erfc", "erfinv", "lgamma", "digamma", "ndtr", "ndtri",
               "log_ndtr", "i0", "i0e", "i1", "i1e")


def _cast_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    return shape_of(inputs[0]), attrs["dtype"]


def _cast_emit(cg: Any, node: Any, args: list[str]) -> str:
    x, dtype = node.inputs[0], node.attrs["dtype"]
    if cg.interpret and dtype == torch.bfloat16 and getattr(x, "shape", ()) and \
            not x.dtype.is_floating_point:
        # Triton 3.9's interpreter turns ints into garbage bf16 (5 -> 0, -7 -> nan): go
        # through float32, exact for ints below 2**24 (the GPU converts directly)
        return f"{cg.coerce(x, args[0], torch.float32, force=True)}.to(tl.bfloat16)"
    return cg.coerce(x, args[0], dtype, force=True)


register(OpDef("to", _cast_infer, _cast_emit))


def _where_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    cond, a, b = inputs
    shape = broadcast_shapes([shape_of(cond), shape_of(a), shape_of(b)])
    return shape, promote([a, b])[0]


def _where_emit(cg: Any, node: Any, args: list[str]) -> str:
    work = node.out.dtype
    a = cg.coerce(node.inputs[1], args[1], work)
    b = cg.coerce(node.inputs[2], args[2], work)
    return f"tl.where({args[0]}, {a}, {b})"


register(OpDef("where", _where_infer, _where_emit))


def _bitcast_emit(cg: Any, node: Any, args: list[str]) -> str:
    return f"{args[0]}.to({cg.tl_dtype(node.attrs['dtype'])}, bitcast=True)"


#: ``v.view(torch.int32)`` of a float32 block: the same bits read as another dtype of that width
register(OpDef("bitcast", _cast_infer, _bitcast_emit))
