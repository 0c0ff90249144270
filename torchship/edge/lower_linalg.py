"""ATen -> core op handlers for small dense linear algebra: ``torch.linalg.inv``, ``det``,
``slogdet`` (``logdet``) and ``solve`` on (batched) matrices of a static size ``n``, written
as an unrolled Gauss-Jordan elimination with partial pivoting in ``F64`` (the result cast back
to the model's dtype). Each of the ``n`` steps is a few whole-tensor ops: ``argmax`` of the
column's magnitudes below the diagonal, a row swap by ``gather``, a division by the pivot and a
rank-1 update, so the batch may be dynamic. ``torch.linalg``'s run-time error checks (a
singular matrix) are dropped, as every run-time assertion is: ``inv``/``solve`` of a singular
matrix give inf/NaN, ``det`` gives 0 and ``slogdet`` ``(0, -inf)`` as torch does.

Example:
    >>> import torchship.edge.lower_linalg  # registers the handlers
    >>> from torchship.edge.lower import HANDLERS
    >>> torch.ops.aten.linalg_inv_ex.default in HANDLERS
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from torchship.edge.lower import Lowering, handles, sym_to_dim, torch_dtype
from torchship.edge.lower_nn import Emit, _broadcast

aten = torch.ops.aten
Node = torch.fx.Node

#: the largest matrix the unrolled elimination is written out for (about 20 instructions a step)
MAX_N = 64


def _readers_of(lw: Lowering, node: Node, allowed: set[int], what: str) -> None:
    """Fail at the first reader of an output of ``node`` other than ``allowed`` (the LU
    factors, pivots and error codes are not exported; torch's own error check is dropped)."""
    for user in node.users:
        if user.args[1] in allowed:
            continue
        if any(u.target is not torch.ops.higher_order.with_effects for u in user.users):
            lw.node = user
            raise lw.fail(f"the LU factors, pivots and info outputs of {what} are not supported "
                          "(only its result)")


def eliminate(lw: Lowering, a: int, b: int | None, safe: bool) -> tuple[int | None, list[int], int]:
    """Gauss-Jordan elimination of ``[a | b]`` (``a`` ``[..., n, n]``, ``b`` ``[..., n, k]`` or
    None, both ``F64`` with one batch shape), pivoting on the largest magnitude in each column.
    Returns (``a⁻¹ b`` or None, the ``n`` pivots ``[..., 1, 1]``, the permutation's sign
    ``[..., 1, 1]``). ``safe``: divide by 1 where a pivot is 0 (determinants of singular
    matrices: the zero pivot makes the product 0, the rest stays finite).

    Example:
        >>> # x, pivots, sign = eliminate(lw, a64, b64, safe=False)
    """
    e = Emit(lw, "F64")
    shape = lw.shape_of(a)
    batch, n = shape[:-2], shape[-1]
    m = n if b is None else n + lw.shape_of(b)[-1]
    mat = a if b is None else e("concat", [a, b], batch + [n, m], {"axis": -1})
    rows = lw.g.add_const(f"{lw.g.name}.rows", np.arange(n, dtype=np.int64).reshape(n, 1))
    sign = e.c(1.0)
    pivots = []
    for k in range(n):
        col = e("slice", [mat], batch + [n, 1], {"axis": -1, "start": k, "end": k + 1})
        above = lw.g.add_const(f"{lw.g.name}.above", (np.arange(n) < k).reshape(n, 1))
        mag = e("where", [above, e.c(-1.0), e("abs", [col])])
        p = e("argmax", [mag], batch + [1, 1], {"axis": -2, "keepdim": True}, dtype="I64")
        is_k = lw.g.add_const(f"{lw.g.name}.is_row", (np.arange(n) == k).reshape(n, 1))
        kk = lw.const(k, "I64")
        swap = e("where", [e("eq", [rows, p], dtype="BOOL"), kk, rows], dtype="I64")
        order = e("where", [is_k, p, swap], batch + [n, 1], dtype="I64")
        order = e("expand", [order], batch + [n, m], {"shape": batch + [n, m]}, dtype="I64")
        mat = e("gather", [mat, order], batch + [n, m], {"axis": -2})
        sign = e("where", [e("ne", [p, kk], dtype="BOOL"), e("neg", [sign]), sign])
        row = e("slice", [mat], batch + [1, m], {"axis": -2, "start": k, "end": k + 1})
        piv = e("slice", [row], batch + [1, 1], {"axis": -1, "start": k, "end": k + 1})
        pivots.append(piv)
        if safe:
            piv = e("where", [e("eq", [piv, e.c(0.0)], dtype="BOOL"), e.c(1.0), piv])
        row = e("div", [row, piv])
        factor = e("slice", [mat], batch + [n, 1], {"axis": -1, "start": k, "end": k + 1})
        mat = e("where", [is_k, row, e("sub", [mat, e("mul", [factor, row])])])
    x = None if b is None else e("slice", [mat], batch + [n, m - n], {"axis": -1, "start": n, "end": m})
    return x, pivots, sign


def _square(lw: Lowering, node: Node, batch: list[Any] | None = None) -> int:
    """The node's matrix argument as ``F64``, checked square and static, expanded to ``batch``."""
    a = lw.val(node.args[0])
    shape = lw.shape_of(a)
    n = shape[-1]
    if not isinstance(n, int) or n > MAX_N:
        raise lw.fail(f"torch.linalg on {n}x{n} matrices is not supported: the matrix size must be "
                      f"static and at most {MAX_N} (the elimination is unrolled)")
    if lw.g.values[a].dtype != "F64":
        a = lw.g.emit("cast", [a], "F64", shape, {"dtype": "F64"}, lw.source)
    if batch is not None and shape[:-2] != batch:
        a = lw.g.emit("expand", [a], "F64", batch + [n, n], {"shape": batch + [n, n]}, lw.source)
    return a


def _cast_out(lw: Lowering, v: int, dtype: str, shape: list[Any]) -> int:
    if lw.shape_of(v) != shape:
        v = lw.g.emit("reshape", [v], "F64", shape, {"shape": shape}, lw.source)
    return v if dtype == "F64" else lw.g.emit("cast", [v], dtype, shape, {"dtype": dtype}, lw.source)


def _out(node: Node, i: int) -> tuple[str, list[Any]]:
    """(dtype, shape) of output ``i`` of a multi-output node."""
    v = node.meta["val"][i]
    return torch_dtype(v.dtype), [sym_to_dim(d) for d in v.shape]


@handles(aten.linalg_inv_ex.default)
def _inv(lw: Lowering, node: Node) -> list[Any]:
    """``inv(A)``: ``[A | I]`` eliminated (the identity broadcast over the batch)."""
    _readers_of(lw, node, {0}, "torch.linalg.inv")
    a = _square(lw, node)
    shape = lw.shape_of(a)
    eye = lw.g.add_const(f"{lw.g.name}.eye", np.eye(shape[-1]))
    eye = lw.g.emit("expand", [eye], "F64", shape, {"shape": shape}, lw.source)
    x, _, _ = eliminate(lw, a, eye, safe=False)
    return [_cast_out(lw, x, *_out(node, 0)), None]


@handles(aten._linalg_solve_ex.default)
def _solve(lw: Lowering, node: Node) -> list[Any]:
    """``solve(A, B)`` (``left=False``: ``X A = B`` as ``Aᵀ Xᵀ = Bᵀ``); a vector ``B`` (torch's
    rule: 1-D, or the batch of ``A`` plus ``n``) as one column; batches broadcast."""
    _readers_of(lw, node, {0}, "torch.linalg.solve")
    left = bool(node.kwargs.get("left", node.args[2] if len(node.args) > 2 else True))
    b = lw.val(node.args[1])
    bshape = lw.shape_of(b)
    ashape = lw.shape_of(lw.val(node.args[0]))
    vector = len(bshape) == 1 or (len(bshape) == len(ashape) - 1 and bshape == ashape[:-1])
    if vector:
        bshape = bshape + [1]
        b = lw.g.emit("reshape", [b], lw.g.values[b].dtype, bshape, {"shape": bshape}, lw.source)
    if not left:
        b = _transpose(lw, b)
        bshape = lw.shape_of(b)
    batch = _broadcast(lw, [ashape[:-2], bshape[:-2]])
    a = _square(lw, node, batch)
    if not left:
        a = _transpose(lw, a)
    if lw.g.values[b].dtype != "F64":
        b = lw.g.emit("cast", [b], "F64", bshape, {"dtype": "F64"}, lw.source)
    if bshape[:-2] != batch:
        bshape = batch + bshape[-2:]
        b = lw.g.emit("expand", [b], "F64", bshape, {"shape": bshape}, lw.source)
    x, _, _ = eliminate(lw, a, b, safe=False)
    if not left:
        x = _transpose(lw, x)
    return [_cast_out(lw, x, *_out(node, 0)), None, None, None]


def _transpose(lw: Lowering, v: int) -> int:
    shape = lw.shape_of(v)
    perm = list(range(len(shape) - 2)) + [len(shape) - 1, len(shape) - 2]
    return lw.g.emit("permute", [v], lw.g.values[v].dtype, [shape[p] for p in perm], {"perm": perm}, lw.source)


def _product(e: Emit, parts: list[int]) -> int:
    out = parts[0]
    for p in parts[1:]:
        out = e("mul", [out, p])
    return out


@handles(aten._linalg_det.default)
def _det(lw: Lowering, node: Node) -> list[Any]:
    """``det(A)``: the permutation's sign times the product of the pivots."""
    _readers_of(lw, node, {0}, "torch.linalg.det")
    _, pivots, sign = eliminate(lw, _square(lw, node), None, safe=True)
    det = _product(Emit(lw, "F64"), [sign, *pivots])
    return [_cast_out(lw, det, *_out(node, 0)), None, None]


@handles(aten._linalg_slogdet.default)
def _slogdet(lw: Lowering, node: Node) -> list[Any]:
    """``slogdet(A)``: sign = the permutation's sign times the pivots' signs, logabsdet =
    the sum of ``log|pivot|`` (``-inf`` for a singular matrix, whose sign is 0)."""
    _readers_of(lw, node, {0, 1}, "torch.linalg.slogdet")
    e = Emit(lw, "F64")
    _, pivots, sign = eliminate(lw, _square(lw, node), None, safe=True)
    sgn = _product(e, [sign, *(e("sign", [p]) for p in pivots)])
    logs = [e("log", [e("abs", [p])]) for p in pivots]
    logabs = logs[0]
    for term in logs[1:]:
        logabs = e("add", [logabs, term])
    return [_cast_out(lw, sgn, *_out(node, 0)), _cast_out(lw, logabs, *_out(node, 1)), None, None]
