"""Dimension expressions and dtypes of the program format (numpy only).

A dimension is a JSON value: a non-negative integer, a symbol name (a string bound from an
input's shape at call time), or a list ``[op, a, b, ...]`` with ``op`` one of ``"+"``, ``"*"``
(n-ary), ``"//"`` (floor division, 2 args, the divisor a positive integer literal), ``"max"``, ``"min"``
(n-ary). Integer literals are >= 0 except directly inside ``"+"``, so every expression is
non-decreasing in every symbol: evaluating with each symbol at its maximum gives an upper bound.

Example:
    >>> evaluate(["+", ["*", "s0", 2], 1], {"s0": 5})
    11
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

# dtype names are the safetensors ones, so weights and values share one vocabulary. F16 and
# BF16 (ml_dtypes' numpy bfloat16: the raw 2 bytes) are storage types: only cast, copy and the
# data movement ops take them (export computes in F32 and casts back after each op)
DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
FLOATS = ("F32", "F64")
INTS = ("I64", "I32", "I8", "U8")

MAX_DEPTH = 16
_OPS = ("+", "*", "//", "max", "min")


class ProgramError(Exception):
    """A program file or a call that does not satisfy the spec (docs/edge-format.md)."""


def dtype_name(dtype: np.dtype) -> str:
    """The program dtype name of a numpy dtype.

    Example:
        >>> dtype_name(np.dtype("float32"))
        'F32'
    """
    for name, dt in DTYPES.items():
        if dt == dtype:
            return name
    raise ProgramError(f"dtype {dtype} is not supported (expected one of {sorted(DTYPES)})")


def check_dim(dim: Any, symbols: Mapping[str, Any], where: str, depth: int = 0, plus: bool = False) -> None:
    """Validate a dimension expression against the declared symbols; raise ProgramError.

    Example:
        >>> check_dim(["*", "s0", 4], {"s0": {}}, "x")
    """
    if depth > MAX_DEPTH:
        raise ProgramError(f"{where}: dimension expression nested deeper than {MAX_DEPTH}")
    if isinstance(dim, bool):
        raise ProgramError(f"{where}: dimension {dim!r} must be an integer, symbol or expression")
    if isinstance(dim, int):
        lo = 0 if depth == 0 or not plus else -(2**62)
        if dim < lo or dim >= 2**62:
            raise ProgramError(f"{where}: dimension {dim} out of range [{lo}, 2**62)")
        return
    if isinstance(dim, str):
        if dim not in symbols:
            raise ProgramError(f"{where}: unknown symbol {dim!r} (declared: {sorted(symbols)})")
        return
    if isinstance(dim, list) and dim and dim[0] in _OPS:
        args = dim[1:]
        if len(args) < 1 or (dim[0] == "//" and len(args) != 2):
            raise ProgramError(f"{where}: bad arity for {dim[0]!r} in {dim!r}")
        if dim[0] == "//" and (not isinstance(args[1], int) or isinstance(args[1], bool) or args[1] < 1):
            raise ProgramError(f"{where}: divisor in {dim!r} must be a positive integer literal")
        for arg in args:
            check_dim(arg, symbols, where, depth + 1, plus=dim[0] == "+")
        return
    raise ProgramError(f"{where}: dimension {dim!r} must be an integer, symbol or [op, ...] with op in {_OPS}")


def linear_form(dim: Any) -> tuple[str, int, int] | None:
    """``(symbol, a, c)`` when ``dim`` is ``a·symbol + c`` written as an input dimension may be
    (``"s"``, ``["*", a, "s"]``, ``["+", c, "s"]`` or ``["+", c, ["*", a, "s"]]``, a ≥ 1), else None.

    Example:
        >>> linear_form(["+", 1, ["*", 2, "n"]])
        ('n', 2, 1)
    """
    c = 0
    if isinstance(dim, list) and len(dim) == 3 and dim[0] == "+":
        lit = [isinstance(a, int) and not isinstance(a, bool) for a in dim[1:]]
        if lit == [True, False]:
            c, dim = dim[1], dim[2]
        elif lit == [False, True]:
            c, dim = dim[2], dim[1]
    if isinstance(dim, str):
        return dim, 1, c
    if (isinstance(dim, list) and len(dim) == 3 and dim[0] == "*" and isinstance(dim[1], int)
            and not isinstance(dim[1], bool) and dim[1] >= 1 and isinstance(dim[2], str)):
        return dim[2], dim[1], c
    return None


def solve_input_dim(dim: Any, got: int) -> tuple[str, int] | None:
    """The symbol value that makes input dimension ``dim`` (a ``linear_form``) equal ``got``;
    None when no integer does (``got − c`` not a multiple of ``a``).

    Example:
        >>> solve_input_dim(["*", 2, "n"], 10)
        ('n', 5)
    """
    form = linear_form(dim)
    assert form is not None
    sym, a, c = form
    q, r = divmod(got - c, a)
    return None if r else (sym, q)


def evaluate(dim: Any, env: Mapping[str, int]) -> int:
    """Evaluate a (validated) dimension expression with symbol values ``env``.

    Example:
        >>> evaluate(["//", "n", 2], {"n": 7})
        3
    """
    if isinstance(dim, int):
        return dim
    if isinstance(dim, str):
        return int(env[dim])
    op, args = dim[0], [evaluate(a, env) for a in dim[1:]]
    if op == "+":
        return sum(args)
    if op == "*":
        out = 1
        for a in args:
            out *= a
        return out
    if op == "//":
        if args[1] <= 0:
            raise ProgramError(f"dimension {dim!r}: division by {args[1]}")
        return args[0] // args[1]
    return max(args) if op == "max" else min(args)


def evaluate_shape(shape: list[Any], env: Mapping[str, int]) -> tuple[int, ...]:
    """Evaluate every dimension of ``shape``; a negative result is an error.

    Example:
        >>> evaluate_shape([2, "s"], {"s": 3})
        (2, 3)
    """
    out = tuple(evaluate(d, env) for d in shape)
    if any(d < 0 for d in out):
        raise ProgramError(f"shape {shape} evaluates to {out} with {dict(env)}: negative dimension")
    return out


def nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    """Bytes of a contiguous tensor.

    Example:
        >>> nbytes("F32", (2, 3))
        24
    """
    n = DTYPES[dtype].itemsize
    for d in shape:
        n *= d
    return n
