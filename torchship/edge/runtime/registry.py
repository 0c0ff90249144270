"""The op registry: each core op declared once with its attributes, shape/dtype rule and kernel.

An op kernel takes the input arrays, the preallocated output arrays (views into the arena) and
the resolved attributes, and writes its results into the outputs (numpy ``out=`` wherever
numpy allows). ``infer`` computes the output shapes and dtypes from the input ones; the loader
uses it to check every instruction of a program before anything runs.

Example:
    >>> from torchship.edge.runtime import ops  # registers the ops
    >>> OPS["relu"].infer([(2, 3)], ["F32"], {})
    [((2, 3), 'F32')]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from torchship.edge.runtime.dims import DTYPES, ProgramError, check_dim, evaluate

Shape = tuple[int, ...]
Infer = Callable[[list[Shape], list[str], dict[str, Any]], list[tuple[Shape, str]]]
Kernel = Callable[[list[np.ndarray], list[np.ndarray], dict[str, Any]], None]
Step = Callable[[], None]
Binder = Callable[[list[np.ndarray], list[np.ndarray], dict[str, Any]], Step]

# attribute kinds: int, float, bool, ints, dim (int or dimension expression), dims, dtype,
# str:<a|b|c> (one of the listed strings); a trailing "?" allows null
_KINDS = ("int", "float", "bool", "ints", "dim", "dims", "dtype", "str", "float?")


@dataclass(frozen=True)
class OpDef:
    """One core op: arity, attribute schema, shape rule, kernel.

    ``alias`` ops (reshape) produce a view of their input and get no arena slot. ``bind`` (optional)
    turns one instruction's arrays and attributes into a zero-argument step with everything
    that does not change between calls (views, weight layouts, scratch buffers) worked out once;
    ops without it run ``kernel`` (see :func:`bind_step`).

    Example:
        >>> OPS["add"].min_inputs
        2
    """

    name: str
    min_inputs: int
    max_inputs: int
    attrs: dict[str, tuple[str, Any]]
    infer: Infer
    kernel: Kernel
    n_outputs: int = 1
    alias: bool = False
    doc: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    bind: Binder | None = None


OPS: dict[str, OpDef] = {}
_REQUIRED = object()


def register(
    name: str,
    inputs: int | tuple[int, int],
    infer: Infer,
    attrs: dict[str, tuple[str, Any]] | None = None,
    *,
    alias: bool = False,
    doc: str = "",
) -> Callable[[Kernel], Kernel]:
    """Decorator registering ``kernel`` as op ``name``; an attr default of REQUIRED means required.

    Example:
        >>> @register("my_identity", 1, lambda s, d, a: [(s[0], d[0])])  # doctest: +SKIP
        ... def _k(ins, outs, a): outs[0][...] = ins[0]
    """
    lo, hi = (inputs, inputs) if isinstance(inputs, int) else inputs

    def wrap(kernel: Kernel) -> Kernel:
        OPS[name] = OpDef(name, lo, hi, dict(attrs or {}), infer, kernel, alias=alias, doc=doc)
        return kernel

    return wrap


def binder(name: str) -> Callable[[Binder], Binder]:
    """Decorator attaching a load-time binder to the registered op ``name``.

    The binder gets the instruction's input arrays, its output arrays (arena views) and resolved
    attributes, and returns a step that recomputes the outputs from the current contents of the
    inputs each time it is called. It must give the same results as the op's kernel.

    Example:
        >>> @binder("relu")  # doctest: +SKIP
        ... def _bind_relu(ins, outs, a):
        ...     x, o = ins[0], outs[0]
        ...     return lambda: np.maximum(x, 0, out=o)
    """

    def wrap(fn: Binder) -> Binder:
        OPS[name] = replace(OPS[name], bind=fn)
        return fn

    return wrap


def bind_step(op: OpDef, ins: list[np.ndarray], outs: list[np.ndarray], attrs: dict[str, Any]) -> Step:
    """The zero-argument step running one instruction: the op's binder, or its kernel.

    Example:
        >>> from torchship.edge.runtime import ops
        >>> x, o = np.array([-1.0, 2.0]), np.empty(2)
        >>> step = bind_step(OPS["relu"], [x], [o], {})
        >>> _ = step(); o.tolist()
        [0.0, 2.0]
    """
    if op.bind is not None:
        return op.bind(ins, outs, attrs)
    kernel = op.kernel
    return lambda: kernel(ins, outs, attrs)


def required() -> Any:
    """Marker default for a required attribute.

    Example:
        >>> required() is required()
        True
    """
    return _REQUIRED


def validate_attrs(op: OpDef, attrs: Any, symbols: dict[str, Any], where: str) -> dict[str, Any]:
    """Check ``attrs`` against the op's schema; fill defaults. Raises ProgramError.

    Example:
        >>> from torchship.edge.runtime import ops
        >>> validate_attrs(OPS["softmax"], {"axis": -1}, {}, "i0")
        {'axis': -1}
    """
    if not isinstance(attrs, dict):
        raise ProgramError(f"{where}: attrs must be an object")
    unknown = set(attrs) - set(op.attrs)
    if unknown:
        raise ProgramError(f"{where}: op {op.name!r} has no attribute(s) {sorted(unknown)} (has {sorted(op.attrs)})")
    out: dict[str, Any] = {}
    for key, (kind, default) in op.attrs.items():
        if key not in attrs:
            if default is _REQUIRED:
                raise ProgramError(f"{where}: op {op.name!r} needs attribute {key!r} ({kind})")
            out[key] = default
            continue
        value = attrs[key]
        _check_attr(kind, value, symbols, f"{where}: attribute {key!r}")
        out[key] = value
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -(2**62) <= v < 2**62


def _check_attr(kind: str, value: Any, symbols: dict[str, Any], where: str) -> None:
    ok: bool
    if kind.endswith("?") and value is None:
        return
    base = kind.rstrip("?")
    if base == "int":
        ok = _is_int(value)
    elif base == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) or value in ("inf", "-inf", "nan")
    elif base == "bool":
        ok = isinstance(value, bool)
    elif base == "ints":
        ok = isinstance(value, list) and len(value) <= 64 and all(_is_int(v) for v in value)
    elif base == "dtype":
        ok = value in DTYPES
    elif base.startswith("str:"):
        ok = value in base[4:].split("|")
    elif base == "dim":
        if _is_int(value):
            return
        check_dim(value, symbols, where)
        return
    elif base == "dims":
        if not isinstance(value, list) or len(value) > 64:
            raise ProgramError(f"{where}: expected a list of dimensions, got {value!r}")
        for v in value:
            if not _is_int(v):
                check_dim(v, symbols, where)
        return
    else:  # pragma: no cover - schema bug
        raise AssertionError(kind)
    if not ok:
        raise ProgramError(f"{where}: expected {kind}, got {value!r}")


def resolve_attrs(op: OpDef, attrs: dict[str, Any], env: dict[str, int]) -> dict[str, Any]:
    """Evaluate dimension-valued attributes with the call's symbol values; floats parsed.

    Example:
        >>> from torchship.edge.runtime import ops
        >>> resolve_attrs(OPS["reshape"], {"shape": ["s", 2]}, {"s": 3})
        {'shape': [3, 2]}
    """
    out = dict(attrs)
    for key, (kind, _) in op.attrs.items():
        v = out[key]
        if v is None:
            continue
        if kind == "dim" and not isinstance(v, int):
            out[key] = evaluate(v, env)
        elif kind == "dims":
            out[key] = [v2 if isinstance(v2, int) else evaluate(v2, env) for v2 in v]
        elif kind.startswith("float") and isinstance(v, str):
            out[key] = float(v)
    return out


def has_symbolic_attrs(op: OpDef, attrs: dict[str, Any]) -> bool:
    """Whether any attribute depends on a symbol (so it must be resolved per call).

    Example:
        >>> from torchship.edge.runtime import ops
        >>> has_symbolic_attrs(OPS["reshape"], {"shape": [1, 2]})
        False
    """
    for key, (kind, _) in op.attrs.items():
        v = attrs.get(key)
        if kind == "dim" and v is not None and not isinstance(v, int):
            return True
        if kind == "dims" and v is not None and any(not isinstance(x, int) for x in v):
            return True
    return False
