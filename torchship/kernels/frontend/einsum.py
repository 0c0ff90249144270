"""``torch.einsum`` of one or two blocks in device code.

Two operands with one index summed over, one free index on each side and any batch indices
(``"mk,kn->mn"``, ``"bmk,bnk->bmn"``, ``"km,kn->nm"``) become a matrix product (``tl.dot``,
float32 accumulation) after permuting the operands to ``[batch..., m, k]`` and
``[batch..., k, n]``; other contractions (``"ij,ij->i"``, ``"i,j->ij"``, ``"ijk,jk->i"``)
and one-operand forms (``"ij->ji"``, ``"ij->i"``) are permutes, broadcast products and sums.
Ellipses and repeated indices in one operand (traces, diagonals) are refused by name.

Example:
    >>> parse("mk,kn->mn", 2)
    (['mk', 'kn'], 'mn')
    >>> parse("ij,jk", 2)
    (['ij', 'jk'], 'ik')
"""

from __future__ import annotations

import ast
from typing import Any

import torch

from torchship.kernels.errors import KernelTypeError
from torchship.kernels.frontend.pieces import permute
from torchship.kernels.ir import Value


def parse(equation: str, count: int) -> tuple[list[str], str]:
    """The operands' subscripts and the output's (implicit form: indices seen once, sorted).

    Raises ``ValueError`` for a malformed equation.
    """
    eq = equation.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    subs = lhs.split(",")
    if len(subs) != count or "." in eq or not all(s.isalpha() for s in subs) or \
            (arrow and not (out.isalpha() or out == "")):
        raise ValueError(f"einsum equation {equation!r} for {count} operands")
    if not arrow:
        joined = "".join(subs)
        out = "".join(sorted(c for c in set(joined) if joined.count(c) == 1))
    return subs, out


def einsum(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Value:
    """``torch.einsum(equation, *blocks)`` (or a list of blocks)."""
    eq, ops = args[0], list(args[1:])
    if len(ops) == 1 and isinstance(ops[0], (tuple, list)):
        ops = list(ops[0])
    ops = [h.operand(v) for v in ops]
    hint = ("one or two blocks with distinct letters per operand, e.g. 'mk,kn->mn', "
            "'bmk,bkn->bmn', 'ij,ij->i'")
    try:
        subs, out = parse(eq, len(ops)) if isinstance(eq, str) and len(ops) in (1, 2) \
            else parse("?", 0)
    except ValueError:
        raise h.err(KernelTypeError, f"torch.einsum({eq!r}, ...) with {len(ops)} operands is "
                    "not supported", hint=hint, node=node) from None
    for s, v in zip(subs, ops):
        if len(set(s)) != len(s) or len(s) != v.ndim or any(c not in "".join(subs) for c in out):
            raise h.err(KernelTypeError, f"torch.einsum({eq!r}): subscripts {s!r} for a rank-"
                        f"{v.ndim} block (repeated letters, traces and diagonals are not "
                        "supported)", hint=hint, node=node)
    if len(ops) == 2:
        dot = _as_matmul(h, subs, out, ops, node)
        if dot is not None:
            return dot
    summed = "".join(sorted({c for s in subs for c in s} - set(out)))
    full = out + summed
    terms = [_aligned(h, v, s, full, node) for s, v in zip(subs, ops)]
    prod = terms[0] if len(terms) == 1 else h.b.emit("mul", terms)
    for d in reversed(range(len(out), len(full))):
        prod = h.b.emit("reduce", [prod], {"kind": "sum", "dim": d, "keepdim": False})
    return prod if prod.dtype == ops[0].dtype or not ops[0].dtype.is_floating_point else \
        h.b.emit("to", [prod], {"dtype": ops[0].dtype})


def _aligned(h: Any, v: Value, sub: str, full: str, node: ast.AST) -> Value:
    """``v`` permuted to the order of ``full`` with size-1 dims for the indices it lacks."""
    v = permute(h, v, sorted(range(len(sub)), key=lambda i: full.index(sub[i])), node)
    have = sorted(sub, key=full.index)
    for pos, c in enumerate(full):
        if c not in have:
            v = h.method(v, "unsqueeze", [pos], {}, node)
    return v


def _as_matmul(h: Any, subs: list[str], out: str, ops: list[Value],
               node: ast.AST) -> Value | None:
    a, b = subs
    summed = (set(a) | set(b)) - set(out)
    batch = [c for c in out if c in a and c in b]
    free_a = [c for c in a if c not in b]
    free_b = [c for c in b if c not in a]
    if len(summed) != 1 or not summed <= set(a) & set(b) or len(free_a) != 1 or \
            len(free_b) != 1 or len(batch) + 2 != len(out) or len(batch) > 1:
        return None
    (k,) = summed
    left = permute(h, ops[0], [a.index(c) for c in [*batch, free_a[0], k]], node)
    right = permute(h, ops[1], [b.index(c) for c in [*batch, k, free_b[0]]], node)
    res = h.matmul(left, right)
    order = "".join([*batch, free_a[0], free_b[0]])
    return permute(h, res, [order.index(c) for c in out], node)


#: torch callables of device code -> composition name
FUNCTIONS: dict[Any, str] = {torch.einsum: "einsum"}
