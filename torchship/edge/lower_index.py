"""ATen -> core op handlers, part 5: writing through an index (``x[i] = v``, ``x[:, i] += v``,
``x[mask] = v``, ``index_add``), all on the core ``scatter`` and ``where``.

An integer ``index_put`` permutes the indexed axes to the front, flattens them into one axis
with a linear index (negative indices wrapped), and scatters rows of the value tensor there;
a boolean mask over the leading axes with a one-element value is a ``where``.

Example:
    >>> from torchship.edge.lower import HANDLERS
    >>> import torchship.edge.lower_index  # registers
    >>> torch.ops.aten.index_put.default in HANDLERS
    True
"""

from __future__ import annotations

import math

import torch

from torchship.edge.lower import Lowering, handles
from torchship.edge.lower import out_dtype as _out_dtype
from torchship.edge.lower_nn import Emit, _bind, _broadcast

aten = torch.ops.aten
Node = torch.fx.Node


def _mask_put(lw: Lowering, e: Emit, x: int, mask: int, values: int, accumulate: bool) -> int:
    """``x[mask] = v`` / ``x[mask] += v`` for a one-element ``v``: a ``where`` on the mask
    broadcast over the trailing axes."""
    xs, ms = lw.shape_of(x), lw.shape_of(mask)
    if ms != xs[: len(ms)]:
        raise lw.fail(f"a boolean mask of shape {ms} must match the leading axes of {xs}")
    if math.prod(int(d) for d in lw.shape_of(values) if isinstance(d, int)) != 1:
        raise lw.fail("x[mask] = values needs one value (the count of True entries is known "
                      "only at run time); use torch.where(mask, values, x)")
    m = mask
    if len(ms) < len(xs):
        m = e("reshape", [mask], ms + [1] * (len(xs) - len(ms)), {"shape": ms + [1] * (len(xs) - len(ms))},
              dtype="BOOL")
    v = e("reshape", [values], [], {"shape": []})
    if accumulate:
        return e("add", [x, e("where", [m, v, e.c(0.0)])])
    return e("where", [m, v, x], xs)


def _int_put(lw: Lowering, e: Emit, x: int, entries: list[int | None], values: int,
             accumulate: bool) -> int:
    """``x[i0, :, i2] = v`` with integer index tensors: scatter along one flattened axis."""
    xs = lw.shape_of(x)
    at = [k for k, i in enumerate(entries) if i is not None]
    rest = [k for k in range(len(xs)) if k not in at]
    if not all(isinstance(d, int) for d in xs):
        raise lw.fail("index_put on a tensor with a dynamic dimension is not supported")
    idx = [e("cast", [entries[k]], lw.shape_of(entries[k]), {"dtype": "I64"}, dtype="I64")
           for k in at]
    bshape = _broadcast(lw, [lw.shape_of(i) for i in idx])
    if not all(isinstance(d, int) for d in bshape):
        raise lw.fail("index_put with index tensors of a dynamic shape is not supported")
    nb, sizes = math.prod(bshape), [xs[k] for k in at]
    # linear index over the indexed axes (row-major), negative entries counted from the end
    lin = None
    for i, size in zip(idx, sizes):
        wrapped = e("where", [e("lt", [i, lw.const(0, "I64")], dtype="BOOL"),
                              e("add", [i, lw.const(size, "I64")], dtype="I64"), i], dtype="I64")
        lin = wrapped if lin is None else e("add", [e("mul", [lin, lw.const(size, "I64")], dtype="I64"),
                                                  wrapped], dtype="I64")
    assert lin is not None
    rest_shape = [xs[k] for k in rest]
    # the values as torch lays out x[entries]: index dims in place when the indexed axes are
    # adjacent, else first; moved to [B..., rest...] to match the permuted x
    adjacent = at == list(range(at[0], at[0] + len(at)))
    lead = at[0] if adjacent else 0
    view_shape = rest_shape[:lead] + bshape + rest_shape[lead:]
    v = e("expand", [values], view_shape, {"shape": view_shape})
    if lead:
        perm = list(range(lead, lead + len(bshape))) + list(range(lead)) + list(
            range(lead + len(bshape), len(view_shape)))
        v = e("permute", [v], [view_shape[p] for p in perm], {"perm": perm})
    v = e("reshape", [v], [nb] + rest_shape, {"shape": [nb] + rest_shape})
    perm = at + rest
    xp = x if perm == list(range(len(xs))) else e("permute", [x], [xs[p] for p in perm], {"perm": perm})
    flat = [math.prod(sizes)] + rest_shape
    xf = e("reshape", [xp], flat, {"shape": flat})
    li = e("reshape", [lin], [nb] + [1] * len(rest), {"shape": [nb] + [1] * len(rest)}, dtype="I64")
    li = e("expand", [li], [nb] + rest_shape, {"shape": [nb] + rest_shape}, dtype="I64")
    y = e("scatter", [xf, li, v], flat, {"axis": 0, "accumulate": accumulate})
    y = e("reshape", [y], [xs[p] for p in perm], {"shape": [xs[p] for p in perm]})
    if perm == list(range(len(xs))):
        return y
    inv = [perm.index(k) for k in range(len(xs))]
    return e("permute", [y], xs, {"perm": inv})


@handles(aten.index_put.default, aten._unsafe_index_put.default)
def _index_put(lw: Lowering, node: Node) -> int:
    """``x.index_put(indices, values, accumulate)``: integer indices (any axes, ``None`` for
    whole axes) through ``scatter``; one boolean mask with a one-element value through
    ``where``."""
    dt = _out_dtype(lw, node)
    e = Emit(lw, dt)
    x = lw.tensor(node.args[0], dt)
    entries = list(node.args[1])
    while entries and entries[-1] is None:
        entries.pop()
    values = lw.tensor(node.args[2], dt)
    accumulate = bool(node.args[3] if len(node.args) > 3 else node.kwargs.get("accumulate", False))
    vals = [None if i is None else lw.val(i) for i in entries]
    masks = [v for v in vals if v is not None and lw.g.values[v].dtype == "BOOL"]
    if masks:
        if len(vals) != 1:
            raise lw.fail("index_put with a boolean mask beside other indices is not supported")
        return _bind(lw, _mask_put(lw, e, x, masks[0], values, accumulate))
    if not vals:
        raise lw.fail("index_put with no index tensor is not supported")
    return _bind(lw, _int_put(lw, e, x, vals, values, accumulate))


@handles(aten.index_add.default)
def _index_add(lw: Lowering, node: Node) -> int:
    """``x.index_add(dim, index, source, alpha=1)``: an accumulating put along ``dim``."""
    dt = _out_dtype(lw, node)
    e = Emit(lw, dt)
    x = lw.tensor(node.args[0], dt)
    dim = int(node.args[1]) % max(len(lw.shape_of(x)), 1)
    src = lw.tensor(node.args[3], dt)
    alpha = node.args[4] if len(node.args) > 4 else node.kwargs.get("alpha", 1)
    if alpha != 1:
        src = e("mul", [src, e.c(float(alpha))])
    return _bind(lw, _int_put(lw, e, x, [None] * dim + [lw.val(node.args[2])], src, True))
