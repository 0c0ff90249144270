"""ATen -> core op handlers for writes whose positions come from a mask or a flat index:
``Tensor.masked_scatter``,
``Tensor.index_reduce`` and ``Tensor.put``, on the core ``cumsum``, ``index``, ``where`` and
``scatter``.

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

from torchship.edge.lower import Lowering, dim_prod, handles
from torchship.edge.lower import out_dtype as _out_dtype
from torchship.edge.lower_index import _REDUCE, scatter_reduce
from torchship.edge.lower_nn import Emit, _bind

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
