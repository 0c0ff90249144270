"""ATen -> core op handlers, part 3: activations, statistics, data movement and small
compositions written with core ops: leaky_relu, elu (celu and selu too), softplus, mish,
var/std, tensor indexing along any axis (``x[:, idx]``, ``index_select``; the resize and
reflect/replicate padding decompositions index this way), flip, roll, constant padding,
argmin, tensor-bound clamp, any/all, floor division and remainders, sort/topk (on the
core ``argsort``) and ``nn.Bilinear``'s ``_trilinear``; cumsum/cumprod map to their own core
ops (``runtime/scan.py``).

Example:
    >>> from torchship.edge.lower import HANDLERS
    >>> import torchship.edge.lower_nn  # registers
    >>> torch.ops.aten.leaky_relu.default in HANDLERS
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from torchship.edge.lower import Lowering, flat_arg_extreme, handles, rank, sym_to_dim, torch_dtype
from torchship.edge.lower import out_dtype as _out_dtype
from torchship.edge.lower_ops import _axes

aten = torch.ops.aten
Node = torch.fx.Node


def _arg(node: Node, i: int, name: str, default: Any) -> Any:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


class Emit:
    """Shorthand for emitting intermediate values of one node's lowering (same source line)."""

    def __init__(self, lw: Lowering, dtype: str) -> None:
        self.lw, self.dt = lw, dtype

    def __call__(self, op: str, inputs: list[int], shape: list[Any] | None = None,
                 attrs: dict[str, Any] | None = None, dtype: str | None = None) -> int:
        lw = self.lw
        if shape is None:  # element-wise: the broadcast shape of the inputs
            shape = _broadcast(lw, [lw.shape_of(i) for i in inputs])
        return lw.g.emit(op, inputs, dtype or self.dt, list(shape), attrs or {}, lw.source)

    def c(self, value: float) -> int:
        return self.lw.const(value, self.dt)


def _bind(lw: Lowering, v: int) -> int:
    """The node's output: ``v`` itself when it already has the node's shape, else a view."""
    shape = lw.out()[1]
    return v if lw.shape_of(v) == shape else lw.emit("reshape", [v], {"shape": shape})


def _broadcast(lw: Lowering, shapes: list[list[Any]]) -> list[Any]:
    """numpy broadcasting of shapes whose dims may be symbolic (equal symbols broadcast)."""
    rank = max(len(s) for s in shapes)
    out: list[Any] = [1] * rank
    for s in shapes:
        for k, d in enumerate(s, rank - len(s)):
            if out[k] == 1:
                out[k] = d
            elif d != 1 and d != out[k] and isinstance(d, int) and isinstance(out[k], int):
                raise lw.fail(f"shapes {shapes} do not broadcast")
            # symbolic dims: torch.export already checked them (equal sizes may be spelled
            # differently, e.g. s + 3 and 3 + s)
    return out


# ----------------------------------------------------------------------------- activations


@handles(aten.leaky_relu.default)
def _leaky_relu(lw: Lowering, node: Node) -> int:
    dt = _out_dtype(lw, node)
    e = Emit(lw, dt)
    x = lw.tensor(node.args[0], dt)
    slope = float(_arg(node, 1, "negative_slope", 0.01))
    pos = e("gt", [x, e.c(0.0)], dtype="BOOL")
    return lw.emit("where", [pos, x, e("mul", [x, e.c(slope)])])


@handles(aten.elu.default, aten.celu.default)
def _elu(lw: Lowering, node: Node) -> int:
    """``scale * x`` where ``x > 0``, else ``scale * alpha * expm1(input_scale * x)``
    (celu is elu with ``input_scale = 1 / alpha``)."""
    dt = _out_dtype(lw, node)
    e = Emit(lw, dt)
    x = lw.tensor(node.args[0], dt)
    alpha = float(_arg(node, 1, "alpha", 1.0))
    if node.target is aten.celu.default:
        scale, input_scale = 1.0, 1.0 / alpha
    else:
        scale = float(_arg(node, 2, "scale", 1.0))
        input_scale = float(_arg(node, 3, "input_scale", 1.0))
    neg = e("mul", [e("expm1", [e("mul", [x, e.c(input_scale)])]), e.c(alpha * scale)])
    pos = e("mul", [x, e.c(scale)]) if scale != 1.0 else x
    return lw.emit("where", [e("gt", [x, e.c(0.0)], dtype="BOOL"), pos, neg])


def _softplus(e: Emit, x: int, beta: float, threshold: float) -> int:
    """``x`` where ``beta * x > threshold``, else ``log1p(exp(beta * x)) / beta`` (torch's
    definition; the exp is taken of ``min(beta * x, threshold)`` so the unused branch stays
    finite)."""
    bx = e("mul", [x, e.c(beta)]) if beta != 1.0 else x
    capped = e("minimum", [bx, e.c(threshold)])
    soft = e("log1p", [e("exp", [capped])])
    if beta != 1.0:
        soft = e("div", [soft, e.c(beta)])
    return e("where", [e("gt", [bx, e.c(threshold)], dtype="BOOL"), x, soft])


@handles(aten.softplus.default)
def _softplus_op(lw: Lowering, node: Node) -> int:
    dt = _out_dtype(lw, node)
    e = Emit(lw, dt)
    x = lw.tensor(node.args[0], dt)
    return _bind(lw, _softplus(e, x, float(_arg(node, 1, "beta", 1.0)),
                               float(_arg(node, 2, "threshold", 20.0))))


@handles(aten.mish.default)
def _mish(lw: Lowering, node: Node) -> int:
    """``x * tanh(softplus(x))``."""
    dt = _out_dtype(lw, node)
    e = Emit(lw, dt)
    x = lw.tensor(node.args[0], dt)
    return lw.emit("mul", [x, e("tanh", [_softplus(e, x, 1.0, 20.0)])])


# ----------------------------------------------------------------------------- statistics


def _moments(lw: Lowering, node: Node, dt: str) -> tuple[int, int]:
    """``(var, mean)`` of ``node.args[0]`` over the node's ``dim`` (all axes when None), both
    with the reduced axes kept: ``sum((x - mean)^2) / (N - correction)``."""
    e = Emit(lw, dt)
    x = lw.tensor(node.args[0], dt)
    xs = lw.shape_of(x)
    axes = [a % len(xs) for a in _axes(node)] or list(range(len(xs)))
    if str(node.target).endswith(".dim"):
        correction = 1.0 if _arg(node, 2, "unbiased", True) else 0.0
    else:
        c = node.kwargs.get("correction", None)
        correction = 1.0 if c is None else float(c)
    kept = [1 if k in axes else d for k, d in enumerate(xs)]
    mean = e("mean", [x], kept, {"axes": axes, "keepdim": True})
    dev = e("sub", [x, mean])
    ss = e("sum", [e("mul", [dev, dev])], kept, {"axes": axes, "keepdim": True})
    if all(isinstance(xs[a], int) for a in axes):
        n = int(np.prod([xs[a] for a in axes])) if axes else 1
        return e("div", [ss, e.c(max(n - correction, 0.0))]), mean
    # a dynamic reduced dim: N is counted at run time as the sum of ones over those axes
    ones = [xs[a] for a in axes]
    count = e("sum", [e("full", [], ones, {"shape": ones, "value": 1.0, "dtype": dt})], [],
              {"axes": list(range(len(axes))), "keepdim": False})
    denom = e("maximum", [e("sub", [count, e.c(correction)]), e.c(0.0)])
    return e("div", [ss, denom]), mean


@handles(aten.var.correction, aten.var.dim, aten.std.correction, aten.std.dim)
def _var(lw: Lowering, node: Node) -> int:
    """Variance (std: its square root); keepdim needs nothing here, the result is viewed as
    the node's own output shape."""
    dt = lw.out()[0]
    var, _ = _moments(lw, node, dt)
    if "std" in str(node.target):
        var = Emit(lw, dt)("sqrt", [var])
    return _bind(lw, var)


@handles(aten.var_mean.correction, aten.var_mean.dim, aten.std_mean.correction, aten.std_mean.dim)
def _var_mean(lw: Lowering, node: Node) -> list[int]:
    """``(var, mean)`` / ``(std, mean)`` as two outputs, each viewed as the node's output shape."""
    outs = node.meta["val"]
    dt = torch_dtype(outs[0].dtype)
    var, mean = _moments(lw, node, dt)
    if "std" in str(node.target):
        var = Emit(lw, dt)("sqrt", [var])
    result = []
    for v, meta in zip((var, mean), outs):
        shape = [sym_to_dim(d) for d in meta.shape]
        result.append(v if lw.shape_of(v) == shape else
                      lw.g.emit("reshape", [v], dt, shape, {"shape": shape}, lw.source))
    return result


# ----------------------------------------------------------------------------- data movement


def index_axes(lw: Lowering, x: int, entries: list[int | None]) -> int:
    """``x[entries]`` with torch's advanced-indexing rules, where ``entries`` holds an index
    tensor or ``None`` (a whole axis) per leading axis: the indexed axes move to the front for
    the core ``index`` op and the result's index dims go back where torch puts them (in place
    when the index tensors are adjacent, else first).

    Example:
        >>> index_axes(lw, x, [None, idx])  # doctest: +SKIP
    """
    g = lw.g
    xs = lw.shape_of(x)
    dt = g.values[x].dtype
    at = [k for k, i in enumerate(entries) if i is not None]
    idx = [i for i in entries if i is not None]
    rest = [k for k in range(len(xs)) if k not in at]
    if at != list(range(len(at))):
        perm = at + rest
        x = g.emit("permute", [x], dt, [xs[p] for p in perm], {"perm": perm}, lw.source)
    bshape = _broadcast(lw, [lw.shape_of(i) for i in idx])
    y_shape = bshape + [xs[k] for k in rest]
    y = g.emit("index", [x, *idx], dt, y_shape, {}, lw.source)
    adjacent = at == list(range(at[0], at[0] + len(at)))
    p, nb = at[0], len(bshape)
    if not adjacent or p == 0:
        return y
    perm = list(range(nb, nb + p)) + list(range(nb)) + list(range(nb + p, len(y_shape)))
    return g.emit("permute", [y], dt, [y_shape[q] for q in perm], {"perm": perm}, lw.source)


@handles(aten.index.Tensor, aten._unsafe_index.Tensor)
def _index(lw: Lowering, node: Node) -> int:
    entries = list(node.args[1])
    while entries and entries[-1] is None:
        entries.pop()
    if not entries:
        return lw.val(node.args[0])
    vals = [None if i is None else lw.val(i) for i in entries]
    if any(v is not None and lw.g.values[v].dtype == "BOOL" for v in vals):
        from torchship.edge.lower_index import masked_read

        read = masked_read(node)  # y[mask] written back by x[mask] = y[mask]
        if read is None:
            raise lw.fail("boolean-mask indexing has a data-dependent shape and is not supported; use torch.where")
        return read
    return _bind(lw, index_axes(lw, lw.val(node.args[0]), vals))


@handles(aten.index_select.default)
def _index_select(lw: Lowering, node: Node) -> int:
    x, idx = lw.val(node.args[0]), lw.val(node.args[2])
    dim = int(node.args[1]) % max(rank(node.args[0]), 1)
    return _bind(lw, index_axes(lw, x, [None] * dim + [idx]))


@handles(aten.flip.default)
def _flip(lw: Lowering, node: Node) -> int:
    x = lw.val(node.args[0])
    xs = lw.shape_of(x)
    for d in sorted({int(d) % len(xs) for d in node.args[1]}):
        if isinstance(xs[d], int):
            rev = lw.g.add_const(f"{lw.g.name}.flip", np.arange(xs[d] - 1, -1, -1, dtype=np.int64))
        else:  # -1, -2, ..., -n: negative indices count from the end
            up = lw.g.emit("arange", [], "I64", [xs[d]], {"start": 1, "end": ["+", xs[d], 1], "step": 1, "dtype": "I64"}, lw.source)
            rev = lw.g.emit("neg", [up], "I64", [xs[d]], {}, lw.source)
        x = index_axes(lw, x, [None] * d + [rev])
    return _bind(lw, x)


def _slice(lw: Lowering, x: int, axis: int, start: int, end: int) -> int:
    shape = list(lw.shape_of(x))
    shape[axis] = end - start
    return lw.g.emit("slice", [x], lw.g.values[x].dtype, shape,
                     {"axis": axis, "start": start, "end": end, "step": 1}, lw.source)


def _concat(lw: Lowering, parts: list[int], axis: int) -> int:
    shapes = [lw.shape_of(p) for p in parts]
    shape = list(shapes[0])
    sizes = [s[axis] for s in shapes]
    fixed = sum(d for d in sizes if isinstance(d, int))
    dynamic = [d for d in sizes if not isinstance(d, int)]
    shape[axis] = ["+", *dynamic, fixed] if dynamic and fixed else (
        ["+", *dynamic] if len(dynamic) > 1 else dynamic[0] if dynamic else fixed)
    return lw.g.emit("concat", parts, lw.g.values[parts[0]].dtype, shape, {"axis": axis}, lw.source)


@handles(aten.roll.default)
def _roll(lw: Lowering, node: Node) -> int:
    x = lw.val(node.args[0])
    xs = lw.shape_of(x)
    shifts = list(_arg(node, 1, "shifts", []))
    dims = list(_arg(node, 2, "dims", []))
    if not dims:
        raise lw.fail("roll without dims (of the flattened tensor) is not supported; pass dims=")
    for s, d in zip(shifts, dims):
        d = int(d) % len(xs)
        n = lw.shape_of(x)[d]
        if not isinstance(n, int):  # x[i - (s mod n)]: negative indices count from the end
            e = Emit(lw, "F64")
            size = lw.dim_tensor(n, "F64")
            shift = e("sub", [e.c(float(s)), e("mul", [e("floor", [e("div", [e.c(float(s)), size])]), size])])
            pos = e("arange", [], [n], {"start": 0, "end": n, "step": 1, "dtype": "I64"}, dtype="I64")
            idx = e("sub", [pos, e("cast", [shift], [], {"dtype": "I64"}, dtype="I64")], dtype="I64")
            x = index_axes(lw, x, [None] * d + [idx])
            continue
        k = int(s) % n if n else 0
        if k:
            x = _concat(lw, [_slice(lw, x, d, n - k, n), _slice(lw, x, d, 0, n - k)], d)
    return _bind(lw, x)


def pad_value(lw: Lowering, x: int, pads: dict[int, tuple[int, int]], value: float) -> int:
    """``x`` with ``pads[axis] = (before, after)`` elements of ``value`` added on each axis (a
    negative amount crops), as ``slice`` / ``full`` + ``concat``.

    Example:
        >>> pad_value(lw, x, {3: (1, 1)}, 0.0)  # doctest: +SKIP
    """
    dt = lw.g.values[x].dtype
    for axis, (before, after) in pads.items():
        n = lw.shape_of(x)[axis]
        if before < 0 or after < 0:
            if not isinstance(n, int):
                raise lw.fail("cropping (negative padding) of a dynamic dimension is not supported")
            x = _slice(lw, x, axis, max(-before, 0), n - max(-after, 0))
        parts = [x]
        for amount, first in ((before, True), (after, False)):
            if amount > 0:
                shape = list(lw.shape_of(x))
                shape[axis] = amount
                fill = lw.g.emit("full", [], dt, shape, {"shape": shape, "value": value, "dtype": dt},
                                 lw.source)
                parts.insert(0 if first else len(parts), fill)
        if len(parts) > 1:
            x = _concat(lw, parts, axis)
    return x


@handles(aten.constant_pad_nd.default)
def _constant_pad(lw: Lowering, node: Node) -> int:
    """F.pad(mode="constant"): pairs (before, after) from the last axis backwards."""
    x = lw.val(node.args[0])
    pad = [int(p) for p in node.args[1]]
    rank = len(lw.shape_of(x))
    pads = {rank - 1 - k: (pad[2 * k], pad[2 * k + 1]) for k in range(len(pad) // 2)}
    return _bind(lw, pad_value(lw, x, pads, float(_arg(node, 2, "value", 0.0))))


@handles(aten._pad_circular.default)
def _circular_pad(lw: Lowering, node: Node) -> int:
    """F.pad(mode="circular") (and ``padding_mode="circular"`` convolutions): pairs (before,
    after) from the last axis backwards; a negative amount crops first, then each axis gets the
    last ``before`` elements in front and the first ``after`` behind."""
    x = lw.val(node.args[0])
    pad = [int(p) for p in node.args[1]]
    rank = len(lw.shape_of(x))
    for k in range(len(pad) // 2):
        axis, (before, after) = rank - 1 - k, pad[2 * k: 2 * k + 2]
        n = lw.shape_of(x)[axis]
        if not isinstance(n, int):
            raise lw.fail("circular padding of a dynamic dimension is not supported")
        if before < 0 or after < 0:
            x = _slice(lw, x, axis, max(-before, 0), n - max(-after, 0))
            n = lw.shape_of(x)[axis]
        parts = ([_slice(lw, x, axis, n - before, n)] if before > 0 else []) + [x] + (
            [_slice(lw, x, axis, 0, after)] if after > 0 else [])
        x = _concat(lw, parts, axis) if len(parts) > 1 else x
    return _bind(lw, x)


@handles(aten.cumsum.default, aten.cumprod.default)
def _cumsum(lw: Lowering, node: Node) -> int:
    """Running sum / product in torch's result dtype (integers and bool accumulate in int64; a
    narrower integer ``dtype=``, as transformers' MoE offsets ``cumsum(..., dtype=torch.int32)``,
    accumulates in int64 and is cast: the same values, wrapping included)."""
    dt = _out_dtype(lw, node)
    work = "I64" if dt in ("I32", "I16", "I8", "U8") else dt
    x = lw.tensor(node.args[0], work)
    op = "cumprod" if node.target is aten.cumprod.default else "cumsum"
    y = lw.emit(op, [x], {"axis": int(node.args[1]) % max(len(lw.shape_of(x)), 1)}, dtype=work)
    return y if work == dt else lw.emit("cast", [y], {"dtype": dt})


@handles(aten.cummax.default, aten.cummin.default)
def _cumext(lw: Lowering, node: Node) -> list[int]:
    """Running maximum / minimum and the index of the element that set it (ties: the latest,
    like torch): the core op twice, values and ``index=True``."""
    x = lw.val(node.args[0])
    op = "cummax" if node.target is aten.cummax.default else "cummin"
    xs = lw.shape_of(x)
    attrs = {"axis": int(node.args[1]) % max(len(xs), 1)}
    return [lw.g.emit(op, [x], lw.g.values[x].dtype, xs, attrs, lw.source),
            lw.g.emit(op, [x], "I64", xs, {**attrs, "index": True}, lw.source)]


@handles(aten.logcumsumexp.default)
def _logcumsumexp(lw: Lowering, node: Node) -> int:
    """log of the running sum of exp, exact for any range (the core op accumulates in log
    space: no shift by the row maximum)."""
    x = lw.tensor(node.args[0], _out_dtype(lw, node))
    return lw.emit("logcumsumexp", [x], {"axis": int(node.args[1]) % max(len(lw.shape_of(x)), 1)})


# ----------------------------------------------------------------------------- small compositions


@handles(aten.argmin.default)
def _argmin(lw: Lowering, node: Node) -> int:
    """The first minimum is the first maximum of ``-x``."""
    if len(node.args) < 2 or node.args[1] is None:
        return flat_arg_extreme(lw, node, lw.val(node.args[0]), negate=True)
    x = lw.val(node.args[0])
    neg = lw.g.emit("neg", [x], lw.g.values[x].dtype, lw.shape_of(x), {}, lw.source)
    keep = bool(_arg(node, 2, "keepdim", False))
    return lw.emit("argmax", [neg], {"axis": int(node.args[1]), "keepdim": keep})


@handles(aten.clamp.Tensor, aten.clamp_min.Tensor, aten.clamp_max.Tensor)
def _clamp_tensor(lw: Lowering, node: Node) -> int:
    """Tensor bounds: ``minimum(maximum(x, lo), hi)``."""
    dt = _out_dtype(lw, node)
    e = Emit(lw, dt)
    x = lw.tensor(node.args[0], dt)
    if node.target is aten.clamp_min.Tensor:
        lo, hi = node.args[1], None
    elif node.target is aten.clamp_max.Tensor:
        lo, hi = None, node.args[1]
    else:
        lo, hi = _arg(node, 1, "min", None), _arg(node, 2, "max", None)
    if lo is not None:
        x = e("maximum", [x, lw.tensor(lo, dt)])
    if hi is not None:
        x = e("minimum", [x, lw.tensor(hi, dt)])
    return _bind(lw, x)


@handles(aten.any.dim, aten.any.dims, aten.any.default, aten.all.dim, aten.all.dims, aten.all.default)
def _any_all(lw: Lowering, node: Node) -> int:
    """``any``/``all`` as ``amax``/``amin`` of the values as 0/1 integers, then ``!= 0``."""
    x = lw.val(node.args[0])
    xs = lw.shape_of(x)
    e = Emit(lw, "I32")
    ints = e("cast", [lw.tensor(node.args[0], "BOOL")], xs, {"dtype": "I32"})
    axes = [a % max(len(xs), 1) for a in _axes(node)]
    shape = [1 if (not axes or k in axes) else d for k, d in enumerate(xs)]
    op = "amax" if "any" in str(node.target) else "amin"
    red = e(op, [ints], shape, {"axes": axes, "keepdim": True})
    # keepdim needs nothing here: the result is viewed as the node's own output shape
    return _bind(lw, e("ne", [red, e.c(0)], shape, dtype="BOOL"))


@handles(aten.div.Tensor_mode, aten.div.Scalar_mode, aten.remainder.Tensor, aten.remainder.Scalar,
         aten.floor_divide.default, aten.fmod.Tensor, aten.fmod.Scalar)
def _div_mode(lw: Lowering, node: Node) -> int:
    """``floor``/``trunc`` division and ``remainder`` (sign of the divisor, Python's ``%``) /
    ``fmod`` (sign of the dividend). Integers go through float64, exact below 2**53."""
    dt = _out_dtype(lw, node)
    work = dt if dt in ("F32", "F64") else "F64"
    e = Emit(lw, work)
    a, b = lw.tensor(node.args[0], work), lw.tensor(node.args[1], work)
    q = e("div", [a, b])
    name = str(node.target)
    if "remainder" in name or "fmod" in name:
        out = _rem(e, a, b, q, "floor" if "remainder" in name else "trunc")
    else:
        mode = node.kwargs.get("rounding_mode", "floor" if "floor_divide" in name else None)
        if mode not in ("floor", "trunc"):
            raise lw.fail(f"div with rounding_mode={mode!r} is not supported")
        out = e(mode, [q])
    if work != dt:
        out = e("cast", [out], lw.shape_of(out), {"dtype": dt}, dtype=dt)
    return _bind(lw, out)


@handles(aten.bitwise_and.Scalar)
def _and_scalar(lw: Lowering, node: Node) -> int:
    """``x & m`` with a Python int: on bool tensors a logical and; on integers, for low-bit
    masks ``m = 2**k - 1`` (parity tests such as grid_sample's reflection), the remainder
    modulo ``2**k`` (equal in two's complement, negative ``x`` included)."""
    x, mask = node.args[0], node.args[1]
    if _out_dtype(lw, node) == "BOOL":
        return lw.emit("logical_and", [lw.tensor(x, "BOOL"), lw.tensor(bool(mask), "BOOL")])
    if not isinstance(mask, int) or mask < 0 or (mask + 1) & mask:
        raise lw.fail(f"`x & {mask!r}` on integers is supported for masks 2**k - 1 only "
                      "(x & 1, x & 7); other integer bit operations are not core ops")
    dt = _out_dtype(lw, node)
    e = Emit(lw, "F64")
    a, b = lw.tensor(x, "F64"), lw.const(float(mask + 1), "F64")
    rem = _rem(e, a, b, e("div", [a, b]), "floor")
    return _bind(lw, e("cast", [rem], lw.shape_of(rem), {"dtype": dt}, dtype=dt))


def _rem(e: Emit, a: int, b: int, q: int, rounding: str) -> int:
    """``a - rounding(q) · b`` for the quotient ``q = a / b``: Python's ``%`` (``floor``) or C's
    ``fmod`` (``trunc``)."""
    return e("sub", [a, e("mul", [e(rounding, [q]), b])])


@handles(aten.sort.default, aten.sort.stable, aten.topk.default, aten.argsort.default,
         aten.argsort.stable)
def _sort(lw: Lowering, node: Node) -> Any:
    """sort / argsort / topk as a stable ``argsort`` (the first ``k`` for topk) and a
    ``gather`` of the values."""
    x = lw.val(node.args[0])
    xs = lw.shape_of(x)
    name = str(node.target)
    k = None
    if "topk" in name:
        k, dim, descending = int(node.args[1]), _arg(node, 2, "dim", -1), _arg(node, 3, "largest", True)
    elif name.endswith("stable"):  # sort.stable / argsort.stable: keyword-only dim, descending
        dim, descending = node.kwargs.get("dim", -1), node.kwargs.get("descending", False)
    else:
        dim, descending = _arg(node, 1, "dim", -1), _arg(node, 2, "descending", False)
    axis = int(dim) % max(len(xs), 1)
    vals, idx = ranked(lw, x, axis, bool(descending), 0, k, values="argsort" not in name)
    return idx if "argsort" in name else [vals, idx]


def ranked(lw: Lowering, x: int, axis: int, descending: bool, start: int = 0,
           end: int | None = None, values: bool = True) -> tuple[int | None, int]:
    """Positions ``start:end`` along ``axis`` of a stable ``argsort`` of ``x`` and, with
    ``values``, the elements there (a ``gather``): sort, topk, kthvalue and median.

    Example:
        >>> vals, idx = ranked(lw, x, axis=1, descending=True, end=3)  # doctest: +SKIP
    """
    xs = lw.shape_of(x)
    idx = lw.g.emit("argsort", [x], "I64", xs, {"axis": axis, "descending": descending}, lw.source)
    if start != 0 or end is not None:
        stop = xs[axis] if end is None else end
        shape = list(xs)
        shape[axis] = stop - start
        idx = lw.g.emit("slice", [idx], "I64", shape,
                        {"axis": axis, "start": start, "end": stop, "step": 1}, lw.source)
    if not values:
        return None, idx
    dt = lw.g.values[x].dtype
    return lw.g.emit("gather", [x, idx], dt, lw.shape_of(idx), {"axis": axis}, lw.source), idx


# ----------------------------------------------------------------------------- bilinear


@handles(aten._trilinear.default)
def _trilinear(lw: Lowering, node: Node) -> int:
    """``sum(unsqueeze(i1, e1) * unsqueeze(i2, e2) * unsqueeze(i3, e3), sumdim)``. The
    ``nn.Bilinear`` form (``x1 [B, I]``, ``W [O, I, J]``, ``x2 [B, J]``) is one matmul,
    ``(x1 @ W[I, O·J]).view(B, O, J) * x2[:, None]`` summed over J, so no ``[B, O, I, J]``
    product is built; any other form multiplies the broadcast inputs."""
    dt = lw.out()[0]
    e = Emit(lw, dt)
    ins = [lw.tensor(node.args[k], dt) for k in range(3)]
    expands = [sorted(int(d) for d in node.args[k]) for k in range(3, 6)]
    sumdim = sorted(int(d) for d in node.args[6])
    shapes = [lw.shape_of(v) for v in ins]
    if (expands, sumdim) == ([[1, 3], [0], [1, 2]], [2, 3]) and [len(s) for s in shapes] == [2, 3, 2]:
        x1, w, x2 = ins
        (b, i), (o, _, j) = shapes[0], shapes[1]
        wt = e("reshape", [e("permute", [w], [i, o, j], {"perm": [1, 0, 2]})], [i, o * j],
               {"shape": [i, o * j]})
        y = e("reshape", [e("matmul", [x1, wt], [b, o * j])], [b, o, j], {"shape": [b, o, j]})
        prod = e("mul", [y, e("reshape", [x2], [b, 1, j], {"shape": [b, 1, j]})])
        return _bind(lw, e("sum", [prod], [b, o], {"axes": [2], "keepdim": False}))
    views = []
    for v, shape, exp in zip(ins, shapes, expands):
        full = list(shape)
        for d in exp:
            full.insert(d, 1)
        views.append(e("reshape", [v], full, {"shape": full}))
    prod = e("mul", [e("mul", [views[0], views[1]]), views[2]])
    ps = lw.shape_of(prod)
    kept = [d for k, d in enumerate(ps) if k not in sumdim]
    return _bind(lw, e("sum", [prod], kept, {"axes": sumdim, "keepdim": False}))
