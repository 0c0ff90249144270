"""ATen -> core op handlers, part 5: writing through an index (``scatter``, ``scatter_reduce``,
``x[i] = v``, ``x[:, i] += v``, ``x[mask] = v``, ``index_add``), ``EmbeddingBag`` and ``prod``,
all on the core ``scatter`` and ``where``.

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

from torchship.edge.lower import SIZE_COMPARISONS, Lowering, dim_prod, handles
from torchship.edge.lower import out_dtype as _out_dtype
from torchship.edge.lower_nn import Emit, _bind, _broadcast

aten = torch.ops.aten
Node = torch.fx.Node


#: torch's reduce names -> the core ``scatter`` reduction (``mean`` is a sum over a count)
_REDUCE = {"add": "sum", "sum": "sum", "multiply": "prod", "prod": "prod", "amax": "amax", "amin": "amin",
           "mean": "mean"}


def scatter_reduce(lw: Lowering, e: Emit, x: int, axis: int, idx: int, src: int, reduce: str,
                   include_self: bool) -> int:
    """torch's ``x.scatter_reduce(axis, idx, src, reduce, include_self)`` (``reduce`` one of
    sum, prod, amax, amin, mean). Without ``include_self`` the targeted elements first get the
    sum/prod identity, or (amax/amin) one of their own source values; ``mean`` divides a sum
    by the count of values each element got (plus one for itself), untouched elements kept.

    Example:
        >>> scatter_reduce(lw, e, x, 0, idx, src, "amax", True)  # doctest: +SKIP
    """
    xs, ishape = lw.shape_of(x), lw.shape_of(idx)
    if reduce == "mean" and e.dt not in ("F32", "F64"):
        raise lw.fail("scatter_reduce(reduce='mean') on an integer tensor is not supported")
    if not include_self:
        fill = src if reduce in ("amax", "amin") else e("full", [], ishape, {"shape": ishape, "value": float(
            reduce == "prod"), "dtype": e.dt})
        x = e("scatter", [x, idx, fill], xs, {"axis": axis, "accumulate": False})
    attrs = {"axis": axis, "accumulate": True}
    if reduce in ("prod", "amax", "amin"):
        attrs["reduce"] = reduce
    y = e("scatter", [x, idx, src], xs, attrs)
    if reduce != "mean":
        return y
    start = e("full", [], xs, {"shape": xs, "value": float(include_self), "dtype": e.dt})
    ones = e("full", [], ishape, {"shape": ishape, "value": 1.0, "dtype": e.dt})
    count = e("scatter", [start, idx, ones], xs, {"axis": axis, "accumulate": True})
    return e("div", [y, count if include_self else e("maximum", [count, e.c(1.0)])])


@handles(aten.scatter.src, aten.scatter.value, aten.scatter_add.default, aten.scatter.reduce,
         aten.scatter.value_reduce, aten.scatter_reduce.two)
def _scatter(lw: Lowering, node: Node) -> int:
    """``scatter`` / ``scatter_add`` / ``scatter(reduce=)`` / ``scatter_reduce`` on the core
    ``scatter``; a scalar value becomes a ``full`` source of the index's shape."""
    t = str(node.target)
    dim, idx, src = int(node.args[1]), lw.val(node.args[2]), node.args[3]
    reduce = node.args[4] if len(node.args) > 4 else node.kwargs.get("reduce")
    reduce = "sum" if "scatter_add" in t else reduce
    include_self = node.args[5] if len(node.args) > 5 else node.kwargs.get("include_self", True)
    if reduce is not None and reduce not in _REDUCE:
        raise lw.fail(f"scatter with reduce={reduce!r} is not supported")
    dt = _out_dtype(lw, node)
    e = Emit(lw, dt)
    if isinstance(src, Node):
        source = lw.tensor(src, dt)
    else:
        source = e("full", [], lw.shape_of(idx), {"shape": lw.shape_of(idx), "value": float(src), "dtype": dt})
    x = lw.tensor(node.args[0], dt)
    dim %= max(len(lw.shape_of(x)), 1)
    if reduce is None:
        return lw.emit("scatter", [x, idx, source], {"axis": dim, "accumulate": False})
    return _bind(lw, scatter_reduce(lw, e, x, dim, idx, source, _REDUCE[reduce], bool(include_self)))


@handles(aten.prod.default, aten.prod.dim_int)
def _prod(lw: Lowering, node: Node) -> int:
    """``x.prod()`` / ``x.prod(dim, keepdim)`` as the core ``scatter`` with ``reduce="prod"``:
    every element of an axis multiplied into one slot of ones (an all-zero index), axis by
    axis; integers (and bools) multiply in I64 as in torch, zeros and NaN as torch."""
    dt = _out_dtype(lw, node)
    e = Emit(lw, dt)
    x = lw.tensor(node.args[0], dt)
    rank = len(lw.shape_of(x))
    if node.target is aten.prod.dim_int:
        axes = [int(node.args[1]) % max(rank, 1)] if rank else []
    else:
        axes = list(range(rank))
    for axis in reversed(axes):
        shape = lw.shape_of(x)
        ones = [d if a != axis else 1 for a, d in enumerate(shape)]
        target = e("full", [], ones, {"shape": ones, "value": 1.0, "dtype": dt})
        idx = e("full", [], shape, {"shape": shape, "value": 0.0, "dtype": "I64"}, "I64")
        x = e("scatter", [target, idx, x], ones, {"axis": axis, "accumulate": True,
                                                   "reduce": "prod"})
    return _bind(lw, x)


#: what ``y[mask]`` lowers to when it is only written back through the same mask
MASKED_READ = "y[mask] read for x[mask] = y[mask]"


def masked_read(node: Node) -> str | None:
    """``MASKED_READ`` when the boolean-mask read ``node`` (``y[mask]``, a data-dependent
    length) is only written back through the same mask (``x[mask] = y[mask]``, as PointNet++'s
    ball query pads its groups) — that write is ``where(mask, y, x)``, whatever the count —
    and its length only checked by torch's run-time assertions (dropped); else None.

    Example:
        >>> # masked_read(index_node)  -> MASKED_READ, and _index_put reads index_node.args[0]
    """
    writes = 0
    for user in node.users:
        if user.target is aten.sym_size.int and all(
                c.target in SIZE_COMPARISONS and all(a.target is aten._assert_scalar.default for a in c.users) for c in user.users):
            continue
        if (user.target not in (aten.index_put.default, aten._unsafe_index_put.default) or user.args[2] is not node
                or user.args[0] is node or list(user.args[1]) != list(node.args[1])):
            return None
        writes += 1
    return MASKED_READ if writes else None


def _mask_put(lw: Lowering, e: Emit, x: int, mask: int, values: int, accumulate: bool,
              elementwise: bool = False) -> int:
    """``x[mask] = v`` / ``x[mask] += v`` for a one-element ``v``, or (``elementwise``) for
    ``v = y[mask]`` with ``values`` being ``y``: a ``where`` on the mask broadcast over the
    trailing axes."""
    xs, ms = lw.shape_of(x), lw.shape_of(mask)
    if ms != xs[: len(ms)]:
        raise lw.fail(f"a boolean mask of shape {ms} must match the leading axes of {xs}")
    if not elementwise and math.prod(int(d) for d in lw.shape_of(values) if isinstance(d, int)) != 1:
        raise lw.fail("x[mask] = values needs one value (the count of True entries is known "
                      "only at run time); use torch.where(mask, values, x), or x.masked_scatter(mask, "
                      "values) to place one value per True entry in order")
    m = mask
    if len(ms) < len(xs):
        mshape = ms + [1] * (len(xs) - len(ms))
        m = e("reshape", [mask], mshape, {"shape": mshape}, dtype="BOOL")
    v = values if elementwise else e("reshape", [values], [], {"shape": []})
    if accumulate:
        return e("add", [x, e("where", [m, v, e.c(0.0)])])
    return e("where", [m, v, x], xs)


def _int_put(lw: Lowering, e: Emit, x: int, entries: list[int | None], values: int,
             accumulate: bool) -> int:
    """``x[i0, :, i2] = v`` with integer index tensors: scatter along one flattened axis."""
    xs = lw.shape_of(x)
    at = [k for k, i in enumerate(entries) if i is not None]
    rest = [k for k in range(len(xs)) if k not in at]
    idx = [entries[k] if lw.g.values[entries[k]].dtype == "I64" else
           e("cast", [entries[k]], lw.shape_of(entries[k]), {"dtype": "I64"}, dtype="I64")
           for k in at]
    bshape = _broadcast(lw, [lw.shape_of(i) for i in idx])
    nb, sizes = dim_prod(bshape), [xs[k] for k in at]
    # linear index over the indexed axes (row-major), negative entries counted from the end
    lin = None
    for i, size in zip(idx, sizes):
        n = lw.dim_tensor(size, "I64")
        wrapped = e("where", [e("lt", [i, lw.const(0, "I64")], dtype="BOOL"),
                              e("add", [i, n], dtype="I64"), i], dtype="I64")
        lin = wrapped if lin is None else e("add", [e("mul", [lin, n], dtype="I64"), wrapped], dtype="I64")
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
    flat = [dim_prod(sizes)] + rest_shape
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
    elementwise = isinstance(node.args[2], Node) and lw.val(node.args[2]) == MASKED_READ
    values = lw.tensor(node.args[2].args[0] if elementwise else node.args[2], dt)
    accumulate = bool(node.args[3] if len(node.args) > 3 else node.kwargs.get("accumulate", False))
    vals = [None if i is None else lw.val(i) for i in entries]
    masks = [v for v in vals if v is not None and lw.g.values[v].dtype == "BOOL"]
    if masks:
        if len(vals) != 1:
            raise lw.fail("index_put with a boolean mask beside other indices is not supported")
        return _bind(lw, _mask_put(lw, e, x, masks[0], values, accumulate, elementwise))
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


@handles(aten._embedding_bag.default, aten._embedding_bag_forward_only.default)
def _embedding_bag(lw: Lowering, node: Node) -> list[int]:
    """``EmbeddingBag`` (modes sum, mean and max, any offsets, per-sample weights, padding
    index): each index's bag is the number of offsets at or before its position, minus one; its
    row (``embedding``, times its weight) is summed into the bag with ``scatter`` (max: a
    ``scatter`` taking the maximum into ``-inf``, padding rows ``-inf``); mean divides by the
    bag's count of non-padding entries, max keeps bags that got one (an empty bag gives zeros,
    as in torch). Only the first of the op's four outputs may be used."""
    weight, indices, offsets = (lw.val(a) for a in node.args[:3])
    mode = int(node.args[4]) if len(node.args) > 4 else 0
    psw = node.args[6] if len(node.args) > 6 else None
    last = bool(node.args[7]) if len(node.args) > 7 else False
    pad = int(node.args[8]) if len(node.args) > 8 else -1
    if mode not in (0, 1, 2):
        raise lw.fail(f"EmbeddingBag mode {mode} is not supported (sum, mean and max are)")
    if any(u.args[1] > 0 and u.users for u in node.users):
        raise lw.fail("only the first output of embedding_bag (the bags) is supported")
    e = Emit(lw, lw.g.values[weight].dtype)
    n = lw.shape_of(indices)[0]
    nbags = lw.shape_of(offsets)[0]  # a dynamic count (a 2-D input's batch) is an expression
    if last:
        nbags = nbags - 1 if isinstance(nbags, int) else ["+", nbags, -1]
    dim = lw.shape_of(weight)[1]
    offs = offsets
    if last:
        offs = e("slice", [offsets], [nbags], {"axis": 0, "start": 0, "end": nbags, "step": 1},
                 dtype=lw.g.values[offsets].dtype)
    pos = e("arange", [], [n], {"start": 0, "end": n, "step": 1, "dtype": "I64"}, dtype="I64")
    pos = e("reshape", [pos], [n, 1], {"shape": [n, 1]}, dtype="I64")
    offs = e("reshape", [e("cast", [offs], [nbags], {"dtype": "I64"}, dtype="I64")], [1, nbags],
             {"shape": [1, nbags]}, dtype="I64")
    started = e("cast", [e("ge", [pos, offs], dtype="BOOL")], [n, nbags], {"dtype": "I64"}, dtype="I64")
    bag = e("sub", [e("sum", [started], [n], {"axes": [1], "keepdim": False}, dtype="I64"),
                    lw.const(1, "I64")], dtype="I64")
    rows = e("embedding", [weight, indices], [n, dim])
    keep = None
    if pad >= 0:
        keep = e("ne", [indices, lw.const(pad, lw.g.values[indices].dtype)], dtype="BOOL")
    scale = None if psw is None else lw.tensor(psw, e.dt)
    if keep is not None and mode == 2:
        rows = e("where", [e("reshape", [keep], [n, 1], {"shape": [n, 1]}, dtype="BOOL"), rows,
                           e.c(-math.inf)], [n, dim])
    elif keep is not None:
        kept = e("cast", [keep], [n], {"dtype": e.dt})
        scale = kept if scale is None else e("mul", [scale, kept])
    if scale is not None:
        rows = e("mul", [rows, e("reshape", [scale], [n, 1], {"shape": [n, 1]})])
    where = e("expand", [e("reshape", [bag], [n, 1], {"shape": [n, 1]}, dtype="I64")], [n, dim],
              {"shape": [n, dim]}, dtype="I64")
    init = e("full", [], [nbags, dim], {"shape": [nbags, dim], "value": -math.inf if mode == 2 else 0.0,
                                        "dtype": e.dt})
    attrs = {"axis": 0, "accumulate": True, **({"reduce": "amax"} if mode == 2 else {})}
    out = e("scatter", [init, where, rows], [nbags, dim], attrs)
    if mode:
        ones = (e("full", [], [n], {"shape": [n], "value": 1.0, "dtype": e.dt}) if keep is None
                else e("cast", [keep], [n], {"dtype": e.dt}))
        count = e("scatter", [e("full", [], [nbags], {"shape": [nbags], "value": 0.0, "dtype": e.dt}),
                              bag, ones], [nbags], {"axis": 0, "accumulate": True})
        count = e("reshape", [count], [nbags, 1], {"shape": [nbags, 1]})
        if mode == 1:
            out = e("div", [out, e("maximum", [count, e.c(1.0)])])
        else:
            out = e("where", [e("gt", [count, e.c(0.0)], dtype="BOOL"), out, e.c(0.0)], [nbags, dim])
    return [out, bag, bag, bag]  # outputs 1-3 are refused above when used: placeholders
