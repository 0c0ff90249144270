"""Slice bounds as affine forms in device scalars with coefficients known at launch, so a
slice whose start moves on the device has a width the launcher can compute:
``qkv[tm, h * d:(h + 1) * d]`` (``h`` a grid index: width ``d``), ``x[i, s:s + w]`` (``s``
loaded), ``a[tm, 2 * tk.begin:2 * tk.begin + 64]``.

A form maps each device scalar (by value id) to a polynomial coefficient and has a polynomial
constant. Polynomials are sums of integer multiples of products of *atoms*: host expressions
of launch-time ints (``c[1]``, ``c[0].shape[1]``, or a host expression the algebra does not
expand, such as ``(c[1] // 2)``), so ``(h + 1) * d - h * d`` cancels to ``d`` exactly.

Example:
    >>> poly_expr({(): 3, ("c[1]",): -1})
    '(3 - c[1])'
"""

from __future__ import annotations

from typing import Any

import torch

from torchship.kernels.ir import Value

__all__ = ["Form", "difference", "form_of", "poly_expr", "poly_hint"]

Poly = dict[tuple[str, ...], int]
#: (device terms: value key -> (value, coefficient), constant, atom -> traced value)
Form = tuple[dict[Any, tuple[Value, Poly]], Poly, dict[str, Any]]


def _add(a: Poly, b: Poly, sign: int = 1) -> Poly:
    out = dict(a)
    for mono, k in b.items():
        out[mono] = out.get(mono, 0) + sign * k
    return {m: k for m, k in out.items() if k}


def _mul(a: Poly, b: Poly) -> Poly:
    out: Poly = {}
    for ma, ka in a.items():
        for mb, kb in b.items():
            mono = tuple(sorted(ma + mb))
            out[mono] = out.get(mono, 0) + ka * kb
    return {m: k for m, k in out.items() if k}


def poly_expr(p: Poly) -> str:
    """A host expression of a polynomial.

    Example:
        >>> poly_expr({}), poly_expr({("c[0]", "c[1]"): 2})
        ('0', '(2 * c[0] * c[1])')
    """
    terms = []
    for mono, k in sorted(p.items()):
        factors = ([str(abs(k))] if abs(k) != 1 or not mono else []) + list(mono)
        terms.append(("-" if k < 0 else "+", " * ".join(factors)))
    if not terms:
        return "0"
    text = ("-" if terms[0][0] == "-" else "") + terms[0][1]
    for sign, t in terms[1:]:
        text += f" {sign} {t}"
    return f"({text})"


def poly_hint(p: Poly, atoms: dict[str, Any]) -> int:
    """The polynomial's value at the traced atoms."""
    total = 0
    for mono, k in p.items():
        v = k
        for a in mono:
            v *= atoms[a]
        total += v
    return total


def _combine(op: str, parts: list[Form]) -> Form | None:
    """The form of ``op`` over operand forms (None: a product of two device terms)."""
    atoms = {k: v for p in parts for k, v in p[2].items()}
    if op == "neg":
        terms, const, _ = parts[0]
        return {i: (v, _add({}, c, -1)) for i, (v, c) in terms.items()}, _add({}, const, -1), \
            atoms
    (ta, ca, _), (tb, cb, _) = parts
    if op in ("add", "sub"):
        sign = 1 if op == "add" else -1
        terms = dict(ta)
        for i, (v, c) in tb.items():
            terms[i] = (v, _add(terms[i][1] if i in terms else {}, c, sign))
        return terms, _add(ca, cb, sign), atoms
    if ta and tb:
        return None
    (tv, cv), k = ((ta, ca), cb) if ta else ((tb, cb), ca)  # a launch-time factor
    return {i: (v, _mul(c, k)) for i, (v, c) in tv.items()}, _mul(cv, k), atoms


def form_of(b: Any, x: Any, host_bound: Any) -> Form | None:
    """The affine form of an integer scalar operand (None: not an integer scalar).
    ``host_bound(b, x)`` gives a launch-time operand's (host expression, traced value)."""
    node = x.node if isinstance(x, Value) else None
    if node is not None and node.op in ("add", "sub", "mul", "neg"):
        parts = [form_of(b, v, host_bound) for v in node.inputs]
        if all(p is not None for p in parts):
            form = _combine(node.op, parts)
            if form is not None:
                return form
    if isinstance(x, int) and not isinstance(x, bool):
        return {}, ({(): x} if x else {}), {}
    got = host_bound(b, x)
    if got is not None:
        return ({}, {(got[0],): 1}, {got[0]: got[1]}) if isinstance(got[1], int) else None
    if not isinstance(x, Value) or x.ndim or x.dtype.is_floating_point or x.dtype == torch.bool:
        return None
    # a device scalar taken as it is; each `t.begin` is a new value of the same quantity
    key = (id(node.attrs["tile"]), node.attrs["attr"]) if node is not None and \
        node.op == "tile_attr" else x.id
    return {key: (x, {(): 1})}, {}, {}


def difference(hi: Form, lo: Form) -> tuple[str, int] | None:
    """``hi - lo`` as (host expression, traced value) when the device terms cancel."""
    for i in set(hi[0]) | set(lo[0]):
        a = hi[0][i][1] if i in hi[0] else {}
        c = lo[0][i][1] if i in lo[0] else {}
        if _add(a, c, -1):
            return None
    diff = _add(hi[1], lo[1], -1)
    return poly_expr(diff), poly_hint(diff, {**hi[2], **lo[2]})
