"""ATen -> core op handlers for small dense linear algebra: ``torch.linalg.inv``, ``det``,
``slogdet`` (``logdet``) and ``solve`` on (batched) matrices of a static size ``n``, written
as an unrolled Gauss-Jordan elimination with partial pivoting in ``F64`` (the result cast back
to the model's dtype); ``cholesky``, ``solve_triangular``, ``cholesky_solve`` and
``cholesky_inverse`` (``MultivariateNormal.log_prob``, Gaussian processes) as unrolled
column-by-column factorisation and row-by-row substitution, also in ``F64``. Each of the ``n`` steps is a few whole-tensor ops: ``argmax`` of the
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


def _square(lw: Lowering, arg: Node, batch: list[Any] | None = None) -> int:
    """The matrix argument ``arg`` as ``F64``, checked square and static, expanded to ``batch``."""
    a = lw.val(arg)
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


def _rhs(lw: Lowering, b: int, batch: list[Any]) -> int:
    """A right-hand side ``[..., n, k]`` as ``F64`` expanded to ``batch``."""
    shape = lw.shape_of(b)
    if lw.g.values[b].dtype != "F64":
        b = lw.g.emit("cast", [b], "F64", shape, {"dtype": "F64"}, lw.source)
    if shape[:-2] != batch:
        shape = batch + shape[-2:]
        b = lw.g.emit("expand", [b], "F64", shape, {"shape": shape}, lw.source)
    return b


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
    a = _square(lw, node.args[0])
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
    a = _square(lw, node.args[0], batch)
    if not left:
        a = _transpose(lw, a)
    x, _, _ = eliminate(lw, a, _rhs(lw, b, batch), safe=False)
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
    _, pivots, sign = eliminate(lw, _square(lw, node.args[0]), None, safe=True)
    det = _product(Emit(lw, "F64"), [sign, *pivots])
    return [_cast_out(lw, det, *_out(node, 0)), None, None]


@handles(aten._linalg_slogdet.default)
def _slogdet(lw: Lowering, node: Node) -> list[Any]:
    """``slogdet(A)``: sign = the permutation's sign times the pivots' signs, logabsdet =
    the sum of ``log|pivot|`` (``-inf`` for a singular matrix, whose sign is 0)."""
    _readers_of(lw, node, {0, 1}, "torch.linalg.slogdet")
    e = Emit(lw, "F64")
    _, pivots, sign = eliminate(lw, _square(lw, node.args[0]), None, safe=True)
    sgn = _product(e, [sign, *(e("sign", [p]) for p in pivots)])
    logs = [e("log", [e("abs", [p])]) for p in pivots]
    logabs = logs[0]
    for term in logs[1:]:
        logabs = e("add", [logabs, term])
    return [_cast_out(lw, sgn, *_out(node, 0)), _cast_out(lw, logabs, *_out(node, 1)), None, None]


def cholesky(lw: Lowering, a: int) -> int:
    """The lower Cholesky factor ``L`` (``A = L Lᵀ``) of ``a`` (``F64`` ``[..., n, n]``, read from
    its lower triangle), column by column: ``l_j = M[:, j] / sqrt(M[j, j])`` below the diagonal,
    then ``M -= l_j l_jᵀ``. A matrix that is not positive definite gives NaN.

    Example:
        >>> # l = cholesky(lw, a64)
    """
    e = Emit(lw, "F64")
    shape = lw.shape_of(a)
    batch, n = shape[:-2], shape[-1]
    cols = []
    for j in range(n):
        col = e("slice", [a], batch + [n, 1], {"axis": -1, "start": j, "end": j + 1})
        diag = e("slice", [col], batch + [1, 1], {"axis": -2, "start": j, "end": j + 1})
        below = lw.g.add_const(f"{lw.g.name}.below", (np.arange(n) >= j).reshape(n, 1))
        col = e("where", [below, e("div", [col, e("sqrt", [diag])]), e.c(0.0)])
        cols.append(col)
        if j + 1 < n:
            row = e("reshape", [col], batch + [1, n], {"shape": batch + [1, n]})
            a = e("sub", [a, e("mul", [col, row])])
    return cols[0] if n == 1 else e("concat", cols, shape, {"axis": -1})


def triangular_solve(lw: Lowering, a: int, b: int, lower: bool, unit: bool = False) -> int:
    """``X`` with ``A X = B`` for a triangular ``a`` (``F64`` ``[..., n, n]``; only its ``lower``
    or upper triangle read; ``unit``: ones on the diagonal) and ``b`` ``[..., n, k]`` of the same
    batch: substitution row by row, each row ``(b_i − A[i, :] X) / A[i, i]`` with the rows of
    ``X`` not yet solved still zero.

    Example:
        >>> # x = triangular_solve(lw, l64, b64, lower=True)
    """
    e = Emit(lw, "F64")
    shape, bshape = lw.shape_of(a), lw.shape_of(b)
    n = shape[-1]
    tri = np.tril(np.ones((n, n), bool)) if lower else np.triu(np.ones((n, n), bool))
    a = e("where", [lw.g.add_const(f"{lw.g.name}.triangle", tri & ~np.eye(n, dtype=bool) if unit else tri),
                    a, e.c(0.0)])
    x = e("full", [], bshape, {"shape": bshape, "value": 0.0, "dtype": "F64"})
    for i in (range(n) if lower else reversed(range(n))):
        row = e("slice", [a], shape[:-2] + [1, n], {"axis": -2, "start": i, "end": i + 1})
        rest = e("sub", [e("slice", [b], bshape[:-2] + [1, bshape[-1]], {"axis": -2, "start": i, "end": i + 1}),
                         e("matmul", [row, x], bshape[:-2] + [1, bshape[-1]])])
        if not unit:
            rest = e("div", [rest, e("slice", [row], shape[:-2] + [1, 1], {"axis": -1, "start": i, "end": i + 1})])
        at = lw.g.add_const(f"{lw.g.name}.is_row", (np.arange(n) == i).reshape(n, 1))
        x = e("where", [at, rest, x])
    return x


@handles(aten.linalg_cholesky_ex.default)
def _cholesky(lw: Lowering, node: Node) -> list[Any]:
    """``cholesky(A)`` (``upper=True``: ``Lᵀ`` of the factor of ``Aᵀ``, from the upper triangle)."""
    _readers_of(lw, node, {0}, "torch.linalg.cholesky")
    upper = bool(node.kwargs.get("upper", node.args[1] if len(node.args) > 1 else False))
    a = _square(lw, node.args[0])
    l_ = cholesky(lw, _transpose(lw, a) if upper else a)
    return [_cast_out(lw, _transpose(lw, l_) if upper else l_, *_out(node, 0)), None]


def _solve_operands(lw: Lowering, a_arg: Node, b_arg: Node) -> tuple[int, int]:
    """The matrix and right-hand side as ``F64`` over their broadcast batch."""
    ashape, bshape = lw.shape_of(lw.val(a_arg)), lw.shape_of(lw.val(b_arg))
    batch = _broadcast(lw, [ashape[:-2], bshape[:-2]])
    return _square(lw, a_arg, batch), _rhs(lw, lw.val(b_arg), batch)


@handles(aten.linalg_solve_triangular.default)
def _solve_triangular(lw: Lowering, node: Node) -> int:
    """``solve_triangular(A, B, upper=, left=, unitriangular=)``; ``left=False`` (``X A = B``)
    as ``Aᵀ Xᵀ = Bᵀ`` with the other triangle."""
    upper = bool(node.kwargs.get("upper", node.args[2] if len(node.args) > 2 else False))
    left = bool(node.kwargs.get("left", node.args[3] if len(node.args) > 3 else True))
    unit = bool(node.kwargs.get("unitriangular", node.args[4] if len(node.args) > 4 else False))
    a, b = _solve_operands(lw, node.args[0], node.args[1])
    if left:
        x = triangular_solve(lw, a, b, not upper, unit)
    else:
        x = _transpose(lw, triangular_solve(lw, _transpose(lw, a), _transpose(lw, b), upper, unit))
    return _cast_out(lw, x, *lw.out())


@handles(aten.cholesky_solve.default, aten.cholesky_inverse.default)
def _cholesky_solve(lw: Lowering, node: Node) -> int:
    """``cholesky_solve(B, L)``: ``L Y = B`` then ``Lᵀ X = Y`` (``upper``: ``Uᵀ Y = B``, ``U X =
    Y``); ``cholesky_inverse(L)`` is that with ``B = I``."""
    inverse = node.target is aten.cholesky_inverse.default
    factor = node.args[0] if inverse else node.args[1]
    upper = bool(node.kwargs.get("upper", node.args[1 if inverse else 2] if len(node.args) > (1 if inverse else 2) else False))
    if inverse:
        l_ = _square(lw, factor)
        n = lw.shape_of(l_)[-1]
        b = lw.g.emit("expand", [lw.g.add_const(f"{lw.g.name}.eye", np.eye(n))], "F64", lw.shape_of(l_),
                      {"shape": lw.shape_of(l_)}, lw.source)
    else:
        l_, b = _solve_operands(lw, factor, node.args[0])
    lt = _transpose(lw, l_)
    first, second = (lt, l_) if upper else (l_, lt)
    y = triangular_solve(lw, first, b, lower=True)
    return _cast_out(lw, triangular_solve(lw, second, y, lower=False), *lw.out())
