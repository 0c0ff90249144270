"""ATen -> core op handlers, part 4: group and instance normalisation, 3-D and transposed
convolution and evenly divisible adaptive max pooling, composed from core ops (no op of their
own in the program format).

A 3-D convolution is one ``conv2d`` over depth positions folded into the batch: the ``kd``
depth taps of every output position are stacked into the channels (per group) and the weight
is rearranged to match. A transposed convolution is the ordinary convolution of the input with
``stride - 1`` zeros inserted between its elements, padded by ``dilation * (kernel - 1) -
padding`` (plus ``output_padding`` at the end), with the weight flipped and its in/out channels
swapped per group; the weight must be a constant at export, where it is rearranged once.

Example:
    >>> from torchship.edge.lower import HANDLERS
    >>> import torchship.edge.lower_conv  # registers
    >>> torch.ops.aten.native_group_norm.default in HANDLERS
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from torchship.edge.lower import Lowering, handles, sym_to_dim
from torchship.edge.lower_nn import Emit, index_axes, pad_value
from torchship.edge.lower_ops import _first_output_only, _pool_args

aten = torch.ops.aten
Node = torch.fx.Node


# ----------------------------------------------------------------------------- normalisation


def _normalize(e: Emit, x: int, axes: list[int], eps: float) -> int:
    """``(x - mean) / sqrt(var + eps)`` with biased statistics over ``axes``."""
    shape = [1 if k in axes else d for k, d in enumerate(e.lw.shape_of(x))]
    dev = e("sub", [x, e("mean", [x], shape, {"axes": axes, "keepdim": True})])
    var = e("mean", [e("mul", [dev, dev])], shape, {"axes": axes, "keepdim": True})
    return e("mul", [dev, e("rsqrt", [e("add", [var, e.c(eps)])])])


def _affine(lw: Lowering, e: Emit, y: int, weight: Any, bias: Any) -> int:
    """``y * weight + bias`` with per-channel (axis 1) parameters, either may be None."""
    rank = len(lw.shape_of(y))
    for param, op in ((weight, "mul"), (bias, "add")):
        if param is None:
            continue
        p = lw.val(param)
        c = lw.shape_of(p)[0]
        shaped = [c] + [1] * (rank - 2)
        p = e("reshape", [p], shaped, {"shape": shaped})
        y = e(op, [y, p])
    return y


@handles(aten.native_group_norm.default)
def _group_norm(lw: Lowering, node: Node) -> list[Any]:
    x, weight, bias, _, _, _, groups, eps = node.args
    xv = lw.val(x)
    e = Emit(lw, lw.g.values[xv].dtype)
    xs = lw.shape_of(xv)
    if not isinstance(xs[1], int):
        raise lw.fail("group_norm needs a static channel count")
    # [N, C, *spatial] -> [N, G, C/G, *spatial]: the spatial sizes may be dynamic (wav2vec2's
    # first feature-extractor conv over a dynamic audio length)
    grouped = [xs[0], int(groups), xs[1] // int(groups), *xs[2:]]
    y = e("reshape", [xv], grouped, {"shape": grouped})
    y = _normalize(e, y, list(range(2, len(grouped))), float(eps))
    y = e("reshape", [y], xs, {"shape": xs})
    y = _affine(lw, e, y, weight, bias)
    return _first_output_only(lw, node, [y, None, None], "group_norm saved mean/rstd outputs")


@handles(aten._native_batch_norm_legit.no_stats, aten._native_batch_norm_legit_functional.default)
def _batch_norm_batch_stats(lw: Lowering, node: Node) -> list[Any]:
    """Batch norm with the batch's own statistics (``instance_norm``, or a model exported in
    training mode without running statistics): biased mean/var over every axis but 1."""
    x, weight, bias = node.args[:3]
    eps = float(node.args[-1])
    xv = lw.val(x)
    e = Emit(lw, lw.g.values[xv].dtype)
    axes = [k for k in range(len(lw.shape_of(xv))) if k != 1]
    y = _affine(lw, e, _normalize(e, xv, axes, eps), weight, bias)
    return _first_output_only(lw, node, [y, None, None], "batch_norm batch statistics outputs")


# ----------------------------------------------------------------------------- transposed conv


def _dim_sum(*terms: Any) -> Any:
    """``a + b + ...`` of program dims (an int when all are)."""
    if all(isinstance(t, int) for t in terms):
        return sum(terms)
    return ["+", *terms]


def _dim_mul(a: Any, b: Any) -> Any:
    return a * b if isinstance(a, int) and isinstance(b, int) else ["*", a, b]


def conv3d(lw: Lowering, e: Emit, x: int, w: int, b: int | None, stride: list[int],
           padding: list[int], dilation: list[int], groups: int, out: list[Any]) -> int:
    """``y = conv3d(x, w, b)`` (NCDHW, output shape ``out``) as one ``conv2d``.

    Output depth ``i`` reads input depths ``i·sd + p·dd`` for the taps ``p < kd``: those slices,
    stacked per group into channels ``(group, tap, channel)``, go through a ``conv2d`` with depth
    folded into the batch and the weight ``[O, C/g, kd, kh, kw]`` permuted to
    ``[O, kd·C/g, kh, kw]`` (folded at export when it is constant).

    Example:
        >>> conv3d(lw, e, x, w, None, [1, 1, 1], [1, 1, 1], [1, 1, 1], 1, out)  # doctest: +SKIP
    """
    xs, ws = lw.shape_of(x), lw.shape_of(w)
    n, c, hw = xs[0], xs[1], xs[3:]
    o, cg, kd, kk = ws[0], ws[1], ws[2], ws[3:]
    od = out[2]
    if not isinstance(c, int):
        raise lw.fail("conv3d needs a static channel count")
    if padding[0]:
        x = pad_value(lw, x, {2: (padding[0], padding[0])}, 0.0)
    taps = []
    for p in range(kd):
        start = p * dilation[0]
        end = _dim_sum(start + 1, _dim_mul(stride[0], _dim_sum(od, -1)))
        tap = e("slice", [x], [n, c, od, *hw], {"axis": 2, "start": start, "end": end, "step": stride[0]})
        split = [n, groups, 1, cg, od, *hw]
        taps.append(e("reshape", [tap], split, {"shape": split}))
    stacked = taps[0] if kd == 1 else e("concat", taps, [n, groups, kd, cg, od, *hw], {"axis": 2})
    y = e("permute", [stacked], [n, od, groups, kd, cg, *hw], {"perm": [0, 4, 1, 2, 3, 5, 6]})
    batch = [_dim_mul(n, od), c * kd, *hw]
    y = e("reshape", [y], batch, {"shape": batch})
    w2 = e("permute", [w], [o, kd, cg, *kk], {"perm": [0, 2, 1, 3, 4]})
    w2 = e("reshape", [w2], [o, kd * cg, *kk], {"shape": [o, kd * cg, *kk]})
    attrs = {"stride": stride[1:], "padding": padding[1:], "dilation": dilation[1:], "groups": groups}
    y = e("conv2d", [y, w2] + ([b] if b is not None else []), [batch[0], o, *out[3:]], attrs)
    y = e("reshape", [y], [n, od, o, *out[3:]], {"shape": [n, od, o, *out[3:]]})
    return e("permute", [y], out, {"perm": [0, 2, 1, 3, 4]})


def _zero_insert(lw: Lowering, e: Emit, x: int, strides: list[int]) -> int:
    """``stride - 1`` zeros between the elements of the spatial axes (2 and up) of ``x``."""
    for k, s in enumerate(strides):
        if s == 1:
            continue
        axis = 2 + k
        xs = list(lw.shape_of(x))
        n = xs[axis]
        split = xs[: axis + 1] + [1] + xs[axis + 1:]
        y = e("reshape", [x], split, {"shape": split})
        zshape = list(split)
        zshape[axis + 1] = s - 1
        zeros = e("full", [], zshape, {"shape": zshape, "value": 0.0, "dtype": e.dt})
        joined = list(split)
        joined[axis + 1] = s
        y = e("concat", [y, zeros], joined, {"axis": axis + 1})
        flat = xs[:axis] + [_dim_mul(n, s)] + xs[axis + 1:]
        y = e("reshape", [y], flat, {"shape": flat})
        end = _dim_sum(_dim_mul(n, s), 1 - s)
        x = e("slice", [y], xs[:axis] + [end] + xs[axis + 1:], {"axis": axis, "start": 0, "end": end, "step": 1})
    return x


def conv_transpose(lw: Lowering, node: Node) -> int:
    """Lower ``aten.convolution`` with ``transposed=True`` (1-D, 2-D and 3-D).

    Example:
        >>> conv_transpose(lw, node)  # doctest: +SKIP
    """
    x, w, b, stride, padding, dilation, _, output_padding, groups = node.args
    nd = len(stride)
    wv = lw.val(w)
    weight = lw.const_value(wv)  # a parameter, or computed from parameters only (weight_norm)
    if weight is None:
        raise lw.fail("transposed convolution needs a constant weight (a parameter of the model, or one "
                      "computed from parameters only such as weight_norm's), not one computed from inputs")
    xv = lw.val(x)
    dt, out = lw.out()
    e = Emit(lw, dt)
    if nd == 1:  # as 2-D with a height of 1
        xs = lw.shape_of(xv)
        xv = e("reshape", [xv], [xs[0], xs[1], 1, xs[2]], {"shape": [xs[0], xs[1], 1, xs[2]]})
        weight = weight[:, :, None, :]
        stride, dilation = [1, *stride], [1, *dilation]
        padding, output_padding = [0, *padding], [0, *output_padding]
    g = int(groups)
    cin, cout_g = weight.shape[:2]
    kernel = weight.shape[2:]
    spatial = tuple(range(2, 2 + len(kernel)))
    # [Cin, Cout/g, *k] -> [Cout, Cin/g, *k], spatially flipped
    w2 = weight.reshape(g, cin // g, cout_g, *kernel).swapaxes(1, 2).reshape(g * cout_g, cin // g, *kernel)
    wc = lw.g.add_const(f"{node.name}.weight_flipped", np.ascontiguousarray(np.flip(w2, spatial)))
    y = _zero_insert(lw, e, xv, [int(s) for s in stride])
    pads = []
    for k, kk in enumerate(kernel):
        edge = int(dilation[k]) * (kk - 1) - int(padding[k])
        pads.append((edge, edge + int(output_padding[k])))
    y = pad_value(lw, y, {2 + k: p for k, p in enumerate(pads)}, 0.0)
    ys = lw.shape_of(y)
    oshape = [ys[0], g * cout_g] + [_dim_sum(ys[2 + k], -int(dilation[k]) * (kk - 1)) for k, kk in enumerate(kernel)]
    bias = lw.val(b) if b is not None else None
    dil = [int(d) for d in dilation]
    if len(kernel) == 3:
        return conv3d(lw, e, y, wc, bias, [1, 1, 1], [0, 0, 0], dil, g, oshape)
    attrs = {"stride": [1, 1], "padding": [0, 0], "dilation": dil, "groups": g}
    y = e("conv2d", [y, wc] + ([bias] if bias is not None else []), oshape, attrs)
    return y if lw.shape_of(y) == out else lw.emit("reshape", [y], {"shape": out})


@handles(aten.adaptive_max_pool2d.default)
def _adaptive_max(lw: Lowering, node: Node) -> list[Any]:
    """Adaptive max pooling. An output size that divides the input size is a ``max_pool2d``
    with kernel = stride = input / output (the windows torch uses then); otherwise, per axis,
    an ``index`` of each window's rows ``⌊i·H/OH⌋ .. ⌈(i+1)·H/OH⌉ − 1`` (shorter windows repeat
    their last row, which leaves a maximum unchanged) and an ``amax`` over them. A dynamic
    height or width pooled to 1 (``adaptive_max_pool1d(x, 1)`` over a dynamic point count, as
    DGCNN's global pooling) is an ``amax`` over that axis first."""
    x = lw.val(node.args[0])
    xs = lw.shape_of(x)
    wanted = [None if v is None else lw.dim(v) for v in node.args[1]]
    dynamic = [2 + i for i in range(2) if len(xs) == 4 and not isinstance(xs[2 + i], int) and wanted[i] not in (None, xs[2 + i])]
    if len(xs) == 4 and dynamic and all(wanted[a - 2] == 1 for a in dynamic):
        shape = [1 if a in dynamic else d for a, d in enumerate(xs)]
        x = lw.g.emit("amax", [x], lw.g.values[x].dtype, shape, {"axes": dynamic, "keepdim": True}, lw.source)
        xs = shape
    kept = len(xs) == 4 and all(wanted[a - 2] in (None, d) for a, d in enumerate(xs) if a >= 2)
    if len(xs) != 4 or not (kept or all(isinstance(d, int) for d in xs[2:])):
        raise lw.fail("adaptive_max_pool2d needs a 4-D NCHW input with static height and width, or a dynamic one "
                      "pooled to 1 (a global max: or write x.amax(dim))")
    if kept:  # nothing (more) to pool
        return _first_output_only(lw, node, [x, None], "adaptive_max_pool2d indices")
    size = [xs[2 + i] if v is None else int(v) for i, v in enumerate(wanted)]
    if any(xs[2 + i] % size[i] for i in range(2)):
        dt = lw.g.values[x].dtype
        for axis in (2, 3):
            n, o = xs[axis], size[axis - 2]
            starts = [i * n // o for i in range(o)]
            ends = [-(-(i + 1) * n // o) for i in range(o)]
            k = max(e - s for s, e in zip(starts, ends))
            rows = np.array([[s + min(j, e - s - 1) for j in range(k)] for s, e in zip(starts, ends)], np.int64)
            x = index_axes(lw, x, [None] * axis + [lw.g.add_const(f"{node.name}.windows{axis}", rows)])
            shape = lw.shape_of(x)
            x = lw.g.emit("amax", [x], dt, shape[: axis + 1] + shape[axis + 2:], {"axes": [axis + 1]}, lw.source)
        return _first_output_only(lw, node, [x, None], "adaptive_max_pool2d indices")
    k = [xs[2 + i] // size[i] for i in range(2)]
    shape = [xs[0], xs[1], *size]
    y = lw.g.emit("max_pool2d", [x], lw.g.values[x].dtype, shape,
                  {"kernel": k, "stride": k, "padding": [0, 0], "dilation": [1, 1],
                   "ceil_mode": False}, lw.source)
    return _first_output_only(lw, node, [y, None], "adaptive_max_pool2d indices")


@handles(aten.max_pool3d_with_indices.default, aten.max_pool3d.default, aten.avg_pool3d.default)
def _pool3d(lw: Lowering, node: Node) -> Any:
    """3-D max / average pooling as two 2-D pools: over (h, w) with channels and depth folded
    together, then over depth with (h, w) flattened. Exact for both: a max of maxes, and an
    average of averages whose divisors (the valid counts, or the window sizes) factor per
    axis, so ``count_include_pad`` and ``ceil_mode`` hold as in torch."""
    is_max = "max" in str(node.target)
    name = "max_pool3d" if is_max else "avg_pool3d"
    if is_max:
        k, st, pd, dl, ceil = _pool_args(node, 5, [None, [], [0], [1], False])
        cip, div = True, None
    else:
        k, st, pd, ceil, cip, div = _pool_args(node, 6, [None, [], [0], False, True, None])
        dl = [1]
    if div:
        raise lw.fail("avg_pool3d with divisor_override is not supported")
    k, st, pd, dl = ([int(v) for v in a] * (3 // len(a)) for a in (k, st or k, pd, dl))
    x = lw.val(node.args[0])
    xs = lw.shape_of(x)
    if len(xs) != 5:
        raise lw.fail(f"{name} needs a 5-D NCDHW input (add a batch dim)")
    dt = lw.g.values[x].dtype
    val = node.meta["val"]
    out = [sym_to_dim(v) for v in (val[0].shape if isinstance(val, (tuple, list)) else val.shape)]
    n, c, d = xs[:3]
    e = Emit(lw, dt)
    op = "max_pool2d" if is_max else "avg_pool2d"

    def pool(v: int, shape: list[Any], kk: list[int], ss: list[int], pp: list[int],
             dd: list[int]) -> int:
        attrs = {"kernel": kk, "stride": ss, "padding": pp, "ceil_mode": bool(ceil)}
        attrs.update({"dilation": dd} if is_max else
                     {"count_include_pad": bool(cip), "divisor": 0})
        return e(op, [v], shape, attrs)

    plane = [n, _dim_mul(c, d), *xs[3:]]
    y = pool(e("reshape", [x], plane, {"shape": plane}), [plane[0], plane[1], *out[3:]],
             k[1:], st[1:], pd[1:], dl[1:])
    cols = [n, c, d, _dim_mul(out[3], out[4])]
    y = e("reshape", [y], cols, {"shape": cols})
    y = pool(y, [n, c, out[2], cols[3]], [k[0], 1], [st[0], 1], [pd[0], 0], [dl[0], 1])
    y = e("reshape", [y], out, {"shape": out})
    if node.target is not aten.max_pool3d_with_indices.default:
        return y
    return _first_output_only(lw, node, [y, None], "max_pool3d indices (return_indices=True)")
