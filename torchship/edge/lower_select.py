"""ATen -> core op handlers, part 6: value tests and order statistics written with core ops:
``isnan``/``isinf``/``isfinite``/``nan_to_num``, ``kthvalue``/``median`` (on the core
``argsort`` + ``gather``), ``bucketize``/``searchsorted`` (counting comparisons, 1-D or batched boundaries), the sliding
windows of ``Tensor.unfold`` (an ``index`` with constant window indices), ``cdist`` and the
fake quantisation of quantisation-aware training (``round``, ``clamp``, scale).

Example:
    >>> from torchship.edge.lower import HANDLERS
    >>> import torchship.edge.lower_select  # registers
    >>> torch.ops.aten.isnan.default in HANDLERS
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from torchship.edge.lower import Lowering, dim_prod, handles, torch_dtype
from torchship.edge.lower_nn import Emit, _arg, _bind, index_axes, ranked

aten = torch.ops.aten
Node = torch.fx.Node


def _nan(e: Emit, x: int) -> int:
    return e("ne", [x, x], dtype="BOOL")


def _inf(e: Emit, x: int) -> int:
    return e("eq", [e("abs", [x]), e.c(float("inf"))], dtype="BOOL")


@handles(aten.isnan.default, aten.isinf.default, aten.isfinite.default,
         aten.isposinf.default, aten.isneginf.default)
def _tests(lw: Lowering, node: Node) -> int:
    """``x != x``, ``|x| == inf``, ``|x| < inf`` (false for NaN), ``x == ±inf``."""
    x = lw.val(node.args[0])
    dt = lw.g.values[x].dtype
    e = Emit(lw, dt)
    name = str(node.target).split(".")[1]
    if dt not in ("F32", "F64"):  # integers are never NaN or infinite: all true / all false
        return e("eq" if name == "isfinite" else "ne", [x, x], dtype="BOOL")
    if name == "isnan":
        return _nan(e, x)
    if name == "isinf":
        return _inf(e, x)
    if name == "isfinite":
        return e("lt", [e("abs", [x]), e.c(float("inf"))], dtype="BOOL")
    return e("eq", [x, e.c(float("inf") if name == "isposinf" else float("-inf"))], dtype="BOOL")


@handles(aten.nan_to_num.default)
def _nan_to_num(lw: Lowering, node: Node) -> int:
    """NaN -> ``nan`` (0), +inf -> ``posinf`` (the dtype's largest finite value), -inf ->
    ``neginf`` (its lowest)."""
    x = lw.val(node.args[0])
    dt = lw.g.values[x].dtype
    if dt not in ("F32", "F64"):
        return x
    e = Emit(lw, dt)
    info = np.finfo(np.float32 if dt == "F32" else np.float64)
    nan = _arg(node, 1, "nan", None)
    pos = _arg(node, 2, "posinf", None)
    neg = _arg(node, 3, "neginf", None)
    y = e("where", [_nan(e, x), e.c(0.0 if nan is None else float(nan)), x])
    y = e("where", [e("eq", [x, e.c(float("inf"))], dtype="BOOL"),
                    e.c(float(info.max) if pos is None else float(pos)), y])
    return e("where", [e("eq", [x, e.c(float("-inf"))], dtype="BOOL"),
                       e.c(float(info.min) if neg is None else float(neg)), y])


@handles(aten.kthvalue.default, aten.median.dim)
def _kth(lw: Lowering, node: Node) -> list[int]:
    """The k-th smallest along ``dim`` (``median``: k = (n + 1) // 2, torch's lower median)
    and its index: a stable ``argsort``, the k-th index, a ``gather``."""
    x = lw.val(node.args[0])
    xs = lw.shape_of(x)
    dt = lw.g.values[x].dtype
    if "median" in str(node.target):
        dim, keep = _arg(node, 1, "dim", -1), _arg(node, 2, "keepdim", False)
        axis = int(dim) % max(len(xs), 1)
        if not isinstance(xs[axis], int):
            raise lw.fail("median over a dynamic dimension is not supported")
        k = (xs[axis] + 1) // 2
    else:
        k, dim, keep = int(node.args[1]), _arg(node, 2, "dim", -1), _arg(node, 3, "keepdim", False)
        axis = int(dim) % max(len(xs), 1)
    vals, idx = ranked(lw, x, axis, False, k - 1, k)
    one = lw.shape_of(idx)
    out = [s for d, s in enumerate(xs) if d != axis] if not keep else one
    return [lw.g.emit("reshape", [v], t, out, {"shape": out}, lw.source)
            for v, t in ((vals, dt), (idx, "I64"))]


@handles(aten.bucketize.Tensor, aten.searchsorted.Tensor, aten.searchsorted.Scalar)
def _bucketize(lw: Lowering, node: Node) -> int:
    """``bucketize(x, b)`` / ``searchsorted(b, x)``: per element of ``x`` the count of ``b``
    below it (``right=True`` / ``side="right"``: at or below). ``b`` is 1-D, or N-D
    ``[..., M]`` with ``x`` ``[..., K]`` over the same leading axes (one sorted row per row of
    ``x``); a ``sorter`` permutation is a ``gather`` of ``b`` first."""
    if "bucketize" in str(node.target):
        x, b = lw.val(node.args[0]), lw.val(node.args[1])
        right = bool(node.kwargs.get("right", False))
    else:
        b = lw.val(node.args[0])
        x = lw.val(node.args[1]) if isinstance(node.args[1], Node) else lw.tensor(node.args[1], lw.g.values[b].dtype)
        right = bool(node.kwargs.get("right", False)) or node.kwargs.get("side") == "right"
        sorter = node.kwargs.get("sorter")
        if sorter is not None:
            b = lw.g.emit("gather", [b, lw.val(sorter)], lw.g.values[b].dtype, lw.shape_of(b),
                          {"axis": -1}, lw.source)
    out_dt = torch_dtype(node.meta["val"].dtype)
    xs, bs = lw.shape_of(x), lw.shape_of(b)
    e = Emit(lw, lw.g.values[x].dtype)
    col = e("reshape", [x], xs + [1], {"shape": xs + [1]})  # [..., K, 1]
    if len(bs) > 1:  # one boundary row per leading index: [..., 1, M]
        b = e("reshape", [b], bs[:-1] + [1, bs[-1]], {"shape": bs[:-1] + [1, bs[-1]]})
    below = e("le" if right else "lt", [b, col], dtype="BOOL")
    count = e("sum", [e("cast", [below], lw.shape_of(below), {"dtype": "I64"}, dtype="I64")], xs,
              {"axes": [len(xs)], "keepdim": False}, dtype="I64")
    return count if out_dt == "I64" else e("cast", [count], xs, {"dtype": out_dt}, dtype=out_dt)


@handles(aten.histc.default)
def _histc(lw: Lowering, node: Node) -> int:
    """``torch.histc(x, bins, min, max)``: each element's bin ``trunc((x − lo) · bins / (hi −
    lo))`` in ``x``'s dtype, in torch's order of operations (the last edge in the last bin),
    elements outside ``[lo, hi]`` or NaN not counted, a ``scatter`` accumulating ones. With
    ``min = max`` the range is the data's (widened by 1 each way when it is one value), as torch."""
    x = lw.val(node.args[0])
    dt = lw.g.values[x].dtype
    e = Emit(lw, dt)
    bins = int(_arg(node, 1, "bins", 100))
    lo, hi = float(_arg(node, 2, "min", 0)), float(_arg(node, 3, "max", 0))
    n = dim_prod(lw.shape_of(x))
    flat = e("reshape", [x], [n], {"shape": [n]})
    if lo == hi:
        lo_t, hi_t = (e(op, [flat], [], {"axes": [], "keepdim": False}) for op in ("amin", "amax"))
        same = e("eq", [lo_t, hi_t], [], dtype="BOOL")
        lo_t = e("where", [same, e("sub", [lo_t, e.c(1.0)]), lo_t])
        hi_t = e("where", [same, e("add", [hi_t, e.c(1.0)]), hi_t])
    else:
        lo_t, hi_t = e.c(lo), e.c(hi)
    inside = e("logical_and", [e("ge", [flat, lo_t], dtype="BOOL"), e("le", [flat, hi_t], dtype="BOOL")], dtype="BOOL")
    pos = e("div", [e("mul", [e("sub", [flat, lo_t]), e.c(float(bins))]), e("sub", [hi_t, lo_t])])
    pos = e("cast", [e("where", [inside, pos, e.c(0.0)], [n])], [n], {"dtype": "I64"}, dtype="I64")
    pos = e("minimum", [pos, lw.const(bins - 1, "I64")], dtype="I64")
    ones = e("cast", [inside], [n], {"dtype": dt})
    zeros = e("full", [], [bins], {"shape": [bins], "value": 0.0, "dtype": dt})
    return lw.emit("scatter", [zeros, pos, ones], {"axis": 0, "accumulate": True})


@handles(aten.unfold.default)
def _unfold(lw: Lowering, node: Node) -> int:
    """``x.unfold(dim, size, step)``: windows ``[n, size]`` of constant indices along ``dim``,
    with the window axis moved last as torch lays it out."""
    x = lw.val(node.args[0])
    xs = lw.shape_of(x)
    dim, size, step = int(node.args[1]) % max(len(xs), 1), int(node.args[2]), int(node.args[3])
    if isinstance(xs[dim], int):
        n = (xs[dim] - size) // step + 1
        windows = np.arange(n)[:, None] * step + np.arange(size)[None, :]
        idx = lw.g.add_const(f"{lw.g.name}.windows", windows.astype(np.int64))
    else:  # a dynamic count of windows: starts arange(n) * step, plus the offsets in a window
        n = lw.out()[1][dim]
        e = Emit(lw, "I64")
        starts = e("mul", [e("arange", [], [n], {"start": 0, "end": n, "step": 1, "dtype": "I64"}), e.c(step)])
        starts = e("reshape", [starts], [n, 1], {"shape": [n, 1]})
        offsets = lw.g.add_const(f"{lw.g.name}.window_offsets", np.arange(size, dtype=np.int64)[None, :])
        idx = e("add", [starts, offsets], [n, size])
    y = index_axes(lw, x, [None] * dim + [idx])  # [..., n, size, ...]
    ys = lw.shape_of(y)
    perm = [d for d in range(len(ys)) if d != dim + 1] + [dim + 1]
    return lw.emit("permute", [y], {"perm": perm})


@handles(aten._cdist_forward.default)
def _cdist(lw: Lowering, node: Node) -> int:
    """``cdist(a, b, p)`` from the differences themselves (no ``|a|² + |b|² - 2ab``
    cancellation): ``(sum |a_i - b_j|^p)^(1/p)``; p = 2 through ``sqrt``, p = inf the max."""
    dt = lw.out()[0]
    e = Emit(lw, dt)
    a, b = lw.tensor(node.args[0], dt), lw.tensor(node.args[1], dt)
    p = float(node.args[2])
    sa, sb = lw.shape_of(a), lw.shape_of(b)
    ea = e("reshape", [a], sa[:-1] + [1, sa[-1]], {"shape": sa[:-1] + [1, sa[-1]]})
    eb = e("reshape", [b], sb[:-2] + [1] + sb[-2:], {"shape": sb[:-2] + [1] + sb[-2:]})
    diff = e("abs", [e("sub", [ea, eb])])
    last = len(lw.shape_of(diff)) - 1
    out = lw.shape_of(diff)[:-1]
    if p == float("inf"):
        return _bind(lw, e("amax", [diff], out, {"axes": [last], "keepdim": False}))
    if p == 2.0:
        return _bind(lw, e("sqrt", [e("sum", [e("mul", [diff, diff])], out,
                                        {"axes": [last], "keepdim": False})]))
    if p == 0.0:
        nz = e("cast", [e("ne", [diff, e.c(0.0)], dtype="BOOL")], lw.shape_of(diff), {"dtype": dt})
        return _bind(lw, e("sum", [nz], out, {"axes": [last], "keepdim": False}))
    s = e("sum", [e("pow", [diff, e.c(p)])], out, {"axes": [last], "keepdim": False})
    return _bind(lw, s if p == 1.0 else e("pow", [s, e.c(1.0 / p)]))


def diagonal_positions(lw: Lowering, a: Any, b: Any, offset: int, n: Any) -> tuple[int, int, Any]:
    """(row positions, column positions, length) of the ``offset`` diagonal of an ``a × b``
    matrix: constants for static sizes, else ``arange`` over ``n``, its (dynamic) length.

    Example:
        >>> # rows, cols, n = diagonal_positions(lw, 4, 5, 1, 4)  -> [0 1 2 3], [1 2 3 4], 4
    """
    r0, c0 = max(-offset, 0), max(offset, 0)
    if isinstance(a, int) and isinstance(b, int):
        n = max(0, min(a - r0, b - c0))
        return (lw.g.add_const(f"{lw.g.name}.diag_rows", np.arange(r0, r0 + n, dtype=np.int64)),
                lw.g.add_const(f"{lw.g.name}.diag_cols", np.arange(c0, c0 + n, dtype=np.int64)), n)
    pos = [lw.g.emit("arange", [], "I64", [n], {"start": s, "end": n if s == 0 else ["+", n, s], "step": 1,
                                                "dtype": "I64"}, lw.source) for s in (r0, c0)]
    return pos[0], pos[1], n


@handles(aten.diagonal.default, aten.diagonal_copy.default)
def _diagonal(lw: Lowering, node: Node) -> int:
    """``diagonal(x, offset, dim1, dim2)``: the two axes moved first, an ``index`` with the
    diagonal positions (constants; over dynamic sizes ``arange`` at run time), the diagonal axis
    moved last (torch's layout)."""
    x = lw.val(node.args[0])
    xs = lw.shape_of(x)
    dt = lw.g.values[x].dtype
    offset = int(_arg(node, 1, "offset", 0))
    d1 = int(_arg(node, 2, "dim1", 0)) % len(xs)
    d2 = int(_arg(node, 3, "dim2", 1)) % len(xs)
    rest = [d for d in range(len(xs)) if d not in (d1, d2)]
    perm = [d1, d2] + rest
    xp = lw.g.emit("permute", [x], dt, [xs[p] for p in perm], {"perm": perm}, lw.source)
    i1, i2, n = diagonal_positions(lw, xs[d1], xs[d2], offset, lw.out()[1][-1])
    y = lw.g.emit("index", [xp, i1, i2], dt, [n] + [xs[d] for d in rest], {}, lw.source)
    back = list(range(1, len(rest) + 1)) + [0]
    return lw.emit("permute", [y], {"perm": back})


@handles(aten.fake_quantize_per_tensor_affine_cachemask.default,
         aten.fake_quantize_per_tensor_affine.default,
         aten._fake_quantize_per_tensor_affine_cachemask_tensor_qparams.default,
         aten.fake_quantize_per_channel_affine_cachemask.default,
         aten.fake_quantize_per_channel_affine.default)
def _fake_quant(lw: Lowering, node: Node) -> list[int] | int:
    """``(clamp(round(x · (1/s)) + z, lo, hi) - z) · s`` (round half to even, as torch), with one
    scale / zero point or one per channel along ``axis``; the ``cachemask`` variants' mask
    output (for the backward pass) is ``lo <= round(x / s) + z <= hi``."""
    per_channel = "per_channel" in str(node.target)
    x = lw.val(node.args[0])
    dt = lw.g.values[x].dtype
    e = Emit(lw, dt)
    xs = lw.shape_of(x)
    if per_channel:
        axis, lo, hi = int(node.args[3]) % len(xs), node.args[4], node.args[5]
        bshape = [xs[axis] if d == axis else 1 for d in range(len(xs))]
        scale, zero = (e("reshape", [lw.tensor(a, dt)], bshape, {"shape": bshape})
                       for a in node.args[1:3])
    else:
        lo, hi = node.args[-2], node.args[-1]  # the tensor-qparams form has an enable flag first
        scale, zero = lw.tensor(node.args[1], dt), lw.tensor(node.args[2], dt)
        if len(node.args) == 6:
            src = node.args[3]  # torch.export makes the flag with aten.full (always 1)
            flag = np.asarray(src.args[1]) if src.target is aten.full.default else \
                lw.g.values[lw.val(src)].const
            if flag is None:
                raise lw.fail("fake quantisation with a fake_quant_enabled flag computed at run "
                              "time is not supported (a constant flag is)")
            if not flag.any():  # disabled: the input unchanged, every element "inside"
                return [x, e("eq", [x, x], xs, dtype="BOOL")]
    # torch multiplies by the reciprocal (1/s once, in float32; a number s: 1/s in double)
    raw = node.args[1]
    inv = lw.const(1.0 / float(raw), dt) if isinstance(raw, (int, float)) else \
        e("div", [e.c(1.0), scale], lw.shape_of(scale))
    q = e("add", [e("round", [e("mul", [x, inv])]), zero], xs)
    out = e("mul", [e("sub", [e("clamp", [q], xs, {"min": float(lo), "max": float(hi)}), zero],
                         xs), scale], xs)
    if "cachemask" not in str(node.target):
        return out
    inside = e("logical_and", [e("ge", [q, e.c(float(lo))], xs, dtype="BOOL"),
                               e("le", [q, e.c(float(hi))], xs, dtype="BOOL")], xs, dtype="BOOL")
    return [out, inside]
