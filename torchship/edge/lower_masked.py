"""ATen -> core op handlers for writes into a region of a tensor: ``Tensor.masked_scatter``,
``Tensor.index_reduce``, ``Tensor.put``, and the functional forms of in-place writes into a view
(``x[:, 1:3] = v`` and ``x[2] = v`` become ``slice_scatter`` / ``select_scatter`` of an
``aten.copy``, ``x.diagonal().fill_(c)`` a ``diagonal_scatter``), on the core ``cumsum``,
``index``, ``where``, ``expand`` and ``scatter``.

A masked scatter reads its source in order: the ``j``-th selected element (row-major over the
mask broadcast to ``x``) gets the ``j``-th source element, so each element's source position is
the running count of selected elements before it (``cumsum`` of the mask, minus one).

Example:
    >>> import torchship.edge.lower_masked  # registers the handlers
    >>> from torchship.edge.lower import HANDLERS
    >>> torch.ops.aten.masked_scatter.default in HANDLERS
    True
"""

from __future__ import annotations

import torch

from torchship.edge.lower import Lowering, dim_prod, handles, rank
from torchship.edge.lower import out_dtype as _out_dtype
from torchship.edge.lower_index import _REDUCE, scatter_reduce
from torchship.edge.lower_nn import Emit, _bind
from torchship.edge.lower_select import diagonal_positions
from torchship.edge.lower_shapes import _norm_index

aten = torch.ops.aten
Node = torch.fx.Node


def masked_scatter(lw: Lowering, e: Emit, x: int, mask: int, src: int) -> int:
    """``x.masked_scatter(mask, src)`` (``mask`` broadcast to ``x``'s shape; ``src`` read in
    row-major order, at least as many elements as selected ones, else a run-time index error).

    Example:
        >>> # y = masked_scatter(lw, Emit(lw, "F32"), x, mask, src)
    """
    xs = lw.shape_of(x)
    n, s = dim_prod(xs), dim_prod(lw.shape_of(src))
    if lw.shape_of(mask) != xs:
        mask = e("expand", [mask], xs, {"shape": xs}, dtype="BOOL")
    flat_mask = e("reshape", [mask], [n], {"shape": [n]}, dtype="BOOL")
    count = e("cumsum", [e("cast", [flat_mask], [n], {"dtype": "I64"}, dtype="I64")], [n], {"axis": 0}, dtype="I64")
    pos = e("maximum", [e("sub", [count, lw.const(1, "I64")], dtype="I64"), lw.const(0, "I64")], dtype="I64")
    vals = e("index", [e("reshape", [src], [s], {"shape": [s]}), pos], [n])
    y = e("where", [flat_mask, vals, e("reshape", [x], [n], {"shape": [n]})], [n])
    return e("reshape", [y], xs, {"shape": xs})


@handles(aten.masked_scatter.default)
def _masked_scatter(lw: Lowering, node: Node) -> int:
    dt = _out_dtype(lw, node)
    x = lw.tensor(node.args[0], dt)
    return _bind(lw, masked_scatter(lw, Emit(lw, dt), x, lw.val(node.args[1]), lw.tensor(node.args[2], dt)))


@handles(aten.index_reduce.default)
def _index_reduce(lw: Lowering, node: Node) -> int:
    """``x.index_reduce(dim, index, source, reduce, include_self=True)``: ``scatter_reduce``
    along ``dim`` with ``index`` broadcast over ``source``'s other axes."""
    dt = _out_dtype(lw, node)
    e = Emit(lw, dt)
    x, src = lw.tensor(node.args[0], dt), lw.tensor(node.args[3], dt)
    dim = int(node.args[1]) % max(len(lw.shape_of(x)), 1)
    reduce = node.args[4]
    include_self = bool(node.args[5] if len(node.args) > 5 else node.kwargs.get("include_self", True))
    ss = lw.shape_of(src)
    idx = lw.tensor(node.args[2], "I64")
    view = [1] * len(ss)
    view[dim] = ss[dim]
    idx = e("expand", [e("reshape", [idx], view, {"shape": view}, dtype="I64")], ss, {"shape": ss}, dtype="I64")
    return _bind(lw, scatter_reduce(lw, e, x, dim, idx, src, _REDUCE[reduce], include_self))


@handles(aten.put.default)
def _put(lw: Lowering, node: Node) -> int:
    """``x.put(index, source, accumulate=False)``: a ``scatter`` into ``x`` flattened, at
    ``index`` flattened (negative entries counted from the end)."""
    dt = _out_dtype(lw, node)
    e = Emit(lw, dt)
    x, src = lw.tensor(node.args[0], dt), lw.tensor(node.args[2], dt)
    accumulate = bool(node.args[3] if len(node.args) > 3 else node.kwargs.get("accumulate", False))
    xs = lw.shape_of(x)
    n, k = dim_prod(xs), dim_prod(lw.shape_of(src))
    idx = e("reshape", [lw.tensor(node.args[1], "I64")], [k], {"shape": [k]}, dtype="I64")
    size = lw.dim_tensor(n, "I64")
    idx = e("where", [e("lt", [idx, lw.const(0, "I64")], dtype="BOOL"), e("add", [idx, size], dtype="I64"), idx], dtype="I64")
    flat = e("reshape", [x], [n], {"shape": [n]})
    y = e("scatter", [flat, idx, e("reshape", [src], [k], {"shape": [k]})], [n], {"axis": 0, "accumulate": accumulate})
    return lw.emit("reshape", [y], {"shape": xs})


@handles(aten.copy.default)
def _copy(lw: Lowering, node: Node) -> int:
    """``aten.copy(x, src)`` (what ``x[...] = src`` writes into the view): ``src`` in ``x``'s
    dtype, broadcast to its shape."""
    dt, shape = lw.out()
    src = lw.tensor(node.args[1], dt)
    return src if lw.shape_of(src) == shape else lw.emit("expand", [src], {"shape": shape})


@handles(aten.slice_scatter.default)
def _slice_scatter(lw: Lowering, node: Node) -> int:
    """``slice_scatter(x, src, dim, start, end, step)``: ``src`` scattered along ``dim`` at
    ``start, start + step, …`` (one position per slice of ``src``; sizes may be dynamic)."""
    dt = _out_dtype(lw, node)
    e = Emit(lw, dt)
    x, src = lw.tensor(node.args[0], dt), lw.tensor(node.args[1], dt)
    args = list(node.args[2:]) + [0, None, None, 1][len(node.args) - 2:]
    dim, start, _, step = args[:4]
    dim = int(dim) % rank(node.args[0])
    start = _norm_index(lw.dim(start) if start is not None else None, lw.shape_of(x)[dim], 0)
    ss = lw.shape_of(src)
    k = ss[dim]
    end = start + int(step) * k if isinstance(start, int) and isinstance(k, int) else ["+", start, ["*", int(step), k]]
    pos = e("arange", [], [k], {"start": start, "end": end, "step": int(step), "dtype": "I64"}, dtype="I64")
    view = [1] * len(ss)
    view[dim] = k
    idx = e("expand", [e("reshape", [pos], view, {"shape": view}, dtype="I64")], ss, {"shape": ss}, dtype="I64")
    return lw.emit("scatter", [x, idx, src], {"axis": dim, "accumulate": False})


@handles(aten.diagonal_scatter.default)
def _diagonal_scatter(lw: Lowering, node: Node) -> int:
    """``diagonal_scatter(x, src, offset, dim1, dim2)``: ``dim1``, ``dim2`` moved last and
    flattened, ``src`` scattered at the diagonal's flat positions ``row · b + col`` (computed at
    run time over dynamic sizes), moved back."""
    dt = _out_dtype(lw, node)
    e = Emit(lw, dt)
    x, src = lw.tensor(node.args[0], dt), lw.tensor(node.args[1], dt)
    r = rank(node.args[0])
    offset, d1, d2 = (list(node.args[2:]) + [0, 0, 1][len(node.args) - 2:])[:3]
    d1, d2, offset = int(d1) % r, int(d2) % r, int(offset)
    xs, ss = lw.shape_of(x), lw.shape_of(src)
    a, b = xs[d1], xs[d2]
    perm = [d for d in range(r) if d not in (d1, d2)] + [d1, d2]
    rest = [xs[d] for d in perm[:-2]]
    ab = dim_prod([a, b])
    flat = e("reshape", [e("permute", [x], rest + [a, b], {"perm": perm})], rest + [ab], {"shape": rest + [ab]})
    rows, cols, n = diagonal_positions(lw, a, b, offset, ss[-1])
    pos = e("add", [e("mul", [rows, lw.dim_tensor(b, "I64")], dtype="I64"), cols], dtype="I64")
    pos = e("reshape", [pos], [1] * len(rest) + [n], {"shape": [1] * len(rest) + [n]}, dtype="I64")
    idx = e("expand", [pos], ss, {"shape": ss}, dtype="I64")
    y = e("reshape", [e("scatter", [flat, idx, src], rest + [ab], {"axis": -1, "accumulate": False})],
          rest + [a, b], {"shape": rest + [a, b]})
    return lw.emit("permute", [y], {"perm": [perm.index(d) for d in range(r)]})
