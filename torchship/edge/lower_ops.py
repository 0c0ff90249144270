"""ATen -> core op handlers, part 1: elementwise, linear algebra, conv/pool, norms, reductions
(registered into ``torchship.edge.lower.HANDLERS``; shape and creation ops are in
``lower_shapes``).

Example:
    >>> from torchship.edge.lower import HANDLERS
    >>> import torchship.edge.lower_ops  # registers
    >>> torch.ops.aten.relu.default in HANDLERS
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch

from torchship.edge.lower import Lowering, flat_arg_extreme, handles, sym_to_dim, torch_dtype
from torchship.edge.lower import out_dtype as _out_dtype

aten = torch.ops.aten
Node = torch.fx.Node


def _first_output_only(lw: Lowering, node: Node, outs: list[Any], what: str) -> list[Any]:
    """``outs`` for a multi-output ATen op of which only output 0 is lowered; fail at the first
    reader of another output."""
    for user in node.users:
        if user.args[1] != 0:
            lw.node = user
            raise lw.fail(f"{what} are not supported")
    return outs


# ----------------------------------------------------------------------------- elementwise

_BIN = {
    aten.add.Tensor: "add", aten.add.Scalar: "add", aten.sub.Tensor: "sub", aten.sub.Scalar: "sub",
    aten.mul.Tensor: "mul", aten.mul.Scalar: "mul", aten.div.Tensor: "div", aten.div.Scalar: "div",
    aten.pow.Tensor_Tensor: "pow", aten.pow.Tensor_Scalar: "pow", aten.maximum.default: "maximum",
    aten.minimum.default: "minimum", aten.atan2.default: "atan2",
}
_CMP = {
    aten.eq.Tensor: "eq", aten.eq.Scalar: "eq", aten.ne.Tensor: "ne", aten.ne.Scalar: "ne",
    aten.lt.Tensor: "lt", aten.lt.Scalar: "lt", aten.le.Tensor: "le", aten.le.Scalar: "le",
    aten.gt.Tensor: "gt", aten.gt.Scalar: "gt", aten.ge.Tensor: "ge", aten.ge.Scalar: "ge",
    aten.logical_and.default: "logical_and", aten.logical_or.default: "logical_or",
}


def _compute_dtype(node: Node, out: str) -> str:
    """Dtype both operands are cast to (torch's promoted type, before any comparison)."""
    args = [a for a in node.args[:2]]
    dts = [a.meta["val"].dtype for a in args if isinstance(a, Node) and isinstance(a.meta.get("val"), torch.Tensor)]
    scalars = [a for a in args if not isinstance(a, Node)]
    if not dts:
        return out
    dt = dts[0]
    for d in dts[1:]:
        dt = torch.promote_types(dt, d)
    if any(isinstance(s, float) for s in scalars) and not dt.is_floating_point:
        dt = torch.get_default_dtype()
    return torch_dtype(dt)


#: arithmetic on two bools as torch defines it (the result stays bool)
_BOOL_BIN = {"mul": "logical_and", "minimum": "logical_and", "add": "logical_or",
             "maximum": "logical_or"}


@handles(*_BIN)
def _binary(lw: Lowering, node: Node) -> int:
    op = _BIN[node.target]
    out = _out_dtype(lw, node)
    if out == "BOOL" and op in _BOOL_BIN:  # bool * bool (torch.isfinite's decomposition)...
        op = _BOOL_BIN[op]
    if node.kwargs.get("rounding_mode") is not None:
        raise lw.fail(f"div with rounding_mode={node.kwargs['rounding_mode']!r} is not supported")
    if op == "pow" and out not in ("F32", "F64"):
        return _int_pow(lw, node, out)
    a = lw.tensor(node.args[0], out)
    b_arg = node.args[1]
    alpha = node.kwargs.get("alpha", 1)
    if alpha != 1:
        b_arg = b_arg * alpha if not isinstance(b_arg, Node) else b_arg
        b = lw.tensor(b_arg, out)
        if isinstance(node.args[1], Node):
            b = lw.g.emit("mul", [b, lw.const(alpha, out)], out, lw.shape_of(b), {}, lw.source)
    else:
        b = lw.tensor(b_arg, out)
    return lw.emit(op, [a, b])


@handles(aten.rsub.Scalar, aten.rsub.Tensor)
def _rsub(lw: Lowering, node: Node) -> int:
    out = _out_dtype(lw, node)
    return lw.emit("sub", [lw.tensor(node.args[1], out), lw.tensor(node.args[0], out)])


@handles(aten.pow.Scalar)
def _pow_scalar(lw: Lowering, node: Node) -> int:
    out = _out_dtype(lw, node)
    if out not in ("F32", "F64"):
        return _int_pow(lw, node, out)
    return lw.emit("pow", [lw.tensor(node.args[0], out), lw.tensor(node.args[1], out)])


def _int_pow(lw: Lowering, node: Node, out: str) -> int:
    """Integer ``x ** k`` / ``2 ** x``: ``pow`` in float64 then rounded back (exact while
    |result| < 2**53; torch wraps larger ones)."""
    a, b = lw.tensor(node.args[0], "F64"), lw.tensor(node.args[1], "F64")
    _, shape = lw.out()
    p = lw.g.emit("pow", [a, b], "F64", shape, {}, lw.source)
    return lw.emit("cast", [lw.g.emit("round", [p], "F64", shape, {}, lw.source)], {"dtype": out})


@handles(*_CMP)
def _compare(lw: Lowering, node: Node) -> int:
    dt = _compute_dtype(node, "BOOL")
    return lw.emit(_CMP[node.target], [lw.tensor(node.args[0], dt), lw.tensor(node.args[1], dt)])


@handles(aten.bitwise_and.Tensor, aten.bitwise_or.Tensor, aten.__and__.Tensor, aten.__or__.Tensor)
def _bitwise_bool(lw: Lowering, node: Node) -> int:
    if _out_dtype(lw, node) != "BOOL":
        raise lw.fail("bitwise and/or are supported on bool tensors only")
    op = "logical_and" if "and" in str(node.target) else "logical_or"
    return lw.emit(op, [lw.tensor(node.args[0], "BOOL"), lw.tensor(node.args[1], "BOOL")])


@handles(aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar)
def _where(lw: Lowering, node: Node) -> int:
    out = _out_dtype(lw, node)
    return lw.emit("where", [lw.tensor(node.args[0], "BOOL"), lw.tensor(node.args[1], out), lw.tensor(node.args[2], out)])


_UNARY = {
    aten.relu.default: "relu", aten.tanh.default: "tanh", aten.sigmoid.default: "sigmoid",
    aten.exp.default: "exp", aten.log.default: "log", aten.sqrt.default: "sqrt",
    aten.rsqrt.default: "rsqrt", aten.neg.default: "neg", aten.abs.default: "abs",
    aten.sin.default: "sin", aten.cos.default: "cos", aten.erf.default: "erf", aten.silu.default: "silu",
    aten.logical_not.default: "logical_not", aten.bitwise_not.default: "logical_not",
    aten.log1p.default: "log1p", aten.expm1.default: "expm1", aten.log2.default: "log2",
    aten.log10.default: "log10",
    aten.floor.default: "floor", aten.ceil.default: "ceil", aten.round.default: "round",
    aten.trunc.default: "trunc", aten.sign.default: "sign", aten.tan.default: "tan",
    aten.atan.default: "atan", aten.asin.default: "asin", aten.acos.default: "acos",
    aten.sinh.default: "sinh", aten.cosh.default: "cosh",
}


@handles(*_UNARY)
def _unary(lw: Lowering, node: Node) -> int:
    dt = _out_dtype(lw, node)
    if node.target is aten.bitwise_not.default and dt != "BOOL":  # ~x = -x - 1 (two's complement)
        x = lw.tensor(node.args[0], dt)
        _, shape = lw.out()
        if dt == "U8":
            return lw.emit("sub", [lw.const(255, dt), x])
        return lw.emit("sub", [lw.g.emit("neg", [x], dt, shape, {}, lw.source), lw.const(1, dt)])
    return lw.emit(_UNARY[node.target], [lw.tensor(node.args[0], _out_dtype(lw, node))])


@handles(aten.reciprocal.default)
def _reciprocal(lw: Lowering, node: Node) -> int:
    out = _out_dtype(lw, node)
    return lw.emit("div", [lw.const(1.0, out), lw.tensor(node.args[0], out)])


@handles(aten.gelu.default)
def _gelu(lw: Lowering, node: Node) -> int:
    approx = node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")
    return lw.emit("gelu", [lw.val(node.args[0])], {"approximate": approx})


@handles(aten.hardtanh.default, aten.clamp.default, aten.clamp_min.default, aten.clamp_max.default)
def _clamp(lw: Lowering, node: Node) -> int:
    args = list(node.args[1:])
    if node.target is aten.hardtanh.default:
        lo, hi = (args + [-1.0, 1.0][len(args):])[:2]
    elif node.target is aten.clamp_min.default:
        lo, hi = args[0], None
    elif node.target is aten.clamp_max.default:
        lo, hi = None, args[0]
    else:
        lo = args[0] if args else node.kwargs.get("min")
        hi = args[1] if len(args) > 1 else node.kwargs.get("max")
    dt, shape = lw.out()
    x = lw.tensor(node.args[0], dt)  # an integer tensor clamped by floats is a float result
    if isinstance(lo, Node) or isinstance(hi, Node):  # a size bound (h - 1 on a dynamic h)
        for op, bound in (("maximum", lo), ("minimum", hi)):
            if bound is not None:
                x = lw.g.emit(op, [x, lw.tensor(bound, dt)], dt, shape, {}, lw.source)
        return x
    return lw.emit("clamp", [x], {"min": None if lo is None else float(lo), "max": None if hi is None else float(hi)})


@handles(aten.hardswish.default, aten.hardsigmoid.default)
def _hard(lw: Lowering, node: Node) -> int:
    x = lw.val(node.args[0])
    dt, shape = lw.out()
    t = lw.g.emit("add", [x, lw.const(3.0, dt)], dt, shape, {}, lw.source)
    t = lw.g.emit("clamp", [t], dt, shape, {"min": 0.0, "max": 6.0}, lw.source)
    t = lw.g.emit("div", [t, lw.const(6.0, dt)], dt, shape, {}, lw.source)
    return t if node.target is aten.hardsigmoid.default else lw.emit("mul", [x, t])


@handles(aten._to_copy.default, aten.to.dtype)
def _to_copy(lw: Lowering, node: Node) -> int:
    x = lw.val(node.args[0])
    dt = _out_dtype(lw, node)
    if lw.g.values[x].dtype == dt:
        return x
    return lw.emit("cast", [x], {"dtype": dt})


# ----------------------------------------------------------------------------- linear algebra


@handles(aten.linear.default)
def _linear(lw: Lowering, node: Node) -> int:
    args = [lw.val(a) for a in node.args if a is not None]
    return lw.emit("linear", args)


@handles(aten.matmul.default, aten.mm.default, aten.bmm.default)
def _matmul(lw: Lowering, node: Node) -> int:
    a, b = lw.val(node.args[0]), lw.val(node.args[1])
    sa, sb = lw.shape_of(a), lw.shape_of(b)
    dt, out = lw.out()
    if len(sa) >= 2 and len(sb) >= 2:
        return lw.emit("matmul", [a, b])
    if len(sa) == 1:
        a = lw.g.emit("reshape", [a], dt, [1, sa[0]], {"shape": [1, sa[0]]}, lw.source)
    if len(sb) == 1:
        b = lw.g.emit("reshape", [b], dt, [sb[0], 1], {"shape": [sb[0], 1]}, lw.source)
    sa2, sb2 = lw.shape_of(a), lw.shape_of(b)
    full = [*(sa2[:-2] if len(sa2) >= len(sb2) else sb2[:-2]), sa2[-2], sb2[-1]]
    r = lw.g.emit("matmul", [a, b], dt, full, {}, lw.source)
    return lw.emit("reshape", [r], {"shape": out})


@handles(aten.addmm.default)
def _addmm(lw: Lowering, node: Node) -> int:
    if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
        raise lw.fail("addmm with beta/alpha != 1 is not supported")
    bias, a, b = (lw.val(x) for x in node.args[:3])
    dt, shape = lw.out()
    m = lw.g.emit("matmul", [a, b], dt, shape, {}, lw.source)
    return lw.emit("add", [m, bias])


@handles(aten.convolution.default)
def _conv(lw: Lowering, node: Node) -> int:
    x, w, b, stride, padding, dilation, transposed, _, groups = node.args
    from torchship.edge import lower_conv  # (it imports this module)

    if transposed:
        return lower_conv.conv_transpose(lw, node)
    xs = lw.val(x)
    ws = lw.val(w)
    ins = [xs, ws] + ([lw.val(b)] if b is not None else [])
    nd = len(stride)
    attrs = {"stride": list(stride), "padding": list(padding), "dilation": list(dilation), "groups": int(groups)}
    if nd == 2:
        return lw.emit("conv2d", ins, attrs)
    if nd == 3:
        dt, out = lw.out()
        return lower_conv.conv3d(lw, lower_conv.Emit(lw, dt), xs, ws, ins[2] if b is not None else None,
                                 *(list(a) for a in (stride, padding, dilation)), int(groups), out)
    if nd != 1:
        raise lw.fail(f"{nd}-D convolution is not supported (conv1d, conv2d and conv3d are)")
    dt, out = lw.out()
    sx, sw = lw.shape_of(xs), lw.shape_of(ws)
    x4 = lw.g.emit("reshape", [xs], dt, [sx[0], sx[1], 1, sx[2]], {"shape": [sx[0], sx[1], 1, sx[2]]}, lw.source)
    w4 = lw.g.emit("reshape", [ws], dt, [sw[0], sw[1], 1, sw[2]], {"shape": [sw[0], sw[1], 1, sw[2]]}, lw.source)
    attrs = {"stride": [1, stride[0]], "padding": [0, padding[0]], "dilation": [1, dilation[0]], "groups": int(groups)}
    y = lw.g.emit("conv2d", [x4, w4, *ins[2:]], dt, [out[0], out[1], 1, out[2]], attrs, lw.source)
    return lw.emit("reshape", [y], {"shape": out})


def _pool_args(node: Node, n: int, defaults: list[Any]) -> list[Any]:
    args = list(node.args[1:]) + defaults[len(node.args) - 1 :]
    return args[:n]


@handles(aten.max_pool2d_with_indices.default, aten.max_pool2d.default)
def _max_pool(lw: Lowering, node: Node) -> Any:
    k, s, p, d, ceil = _pool_args(node, 5, [None, [], [0, 0], [1, 1], False])
    k = list(k) * (2 // len(k))
    s = list(s) * (2 // len(s)) if s else k
    p = list(p) * (2 // len(p))
    d = list(d) * (2 // len(d))
    x = lw.val(node.args[0])
    if len(lw.shape_of(x)) != 4:
        raise lw.fail("max_pool2d needs a 4-D NCHW input (add a batch dim)")
    dt = lw.g.values[x].dtype
    val = node.meta["val"]
    shape = [sym_to_dim(v) for v in (val[0].shape if isinstance(val, (tuple, list)) else val.shape)]
    y = lw.g.emit("max_pool2d", [x], dt, shape, {"kernel": k, "stride": s, "padding": p, "dilation": d, "ceil_mode": bool(ceil)}, lw.source)
    if node.target is aten.max_pool2d.default:
        return y
    return _first_output_only(lw, node, [y, None], "max_pool2d indices (return_indices=True)")


@handles(aten.avg_pool2d.default)
def _avg_pool(lw: Lowering, node: Node) -> int:
    k, s, p, ceil, cip, div = _pool_args(node, 6, [None, [], [0, 0], False, True, None])
    k = list(k) * (2 // len(k))
    s = list(s) * (2 // len(s)) if s else k
    p = list(p) * (2 // len(p))
    return lw.emit("avg_pool2d", [lw.val(node.args[0])], {"kernel": k, "stride": s, "padding": p, "ceil_mode": bool(ceil), "count_include_pad": bool(cip), "divisor": int(div or 0)})


@handles(aten._adaptive_avg_pool2d.default, aten.adaptive_avg_pool2d.default)
def _adaptive(lw: Lowering, node: Node) -> int:
    size = list(node.args[1])
    x = lw.val(node.args[0])
    xs = lw.shape_of(x)
    size = [xs[-2 + i] if v is None else int(v) for i, v in enumerate(size)]
    if len(xs) != 4:
        raise lw.fail("adaptive_avg_pool2d needs a 4-D NCHW input")
    return lw.emit("adaptive_avg_pool2d", [x], {"output_size": size})


@handles(aten._native_batch_norm_legit_no_training.default)
def _batch_norm(lw: Lowering, node: Node) -> list[Any]:
    x, w, b, mean, var, _, eps = node.args
    g = lw.g
    consts = [lw.const_value(lw.val(t)) if t is not None else None for t in (w, b, mean, var)]
    if consts[2] is None or consts[3] is None or any(c is None for c, t in zip(consts, (w, b)) if t is not None):
        raise lw.fail("batch_norm needs constant parameters and running statistics (eval mode)")
    xv = lw.val(x)
    xs = lw.shape_of(xv)
    cw, cb, cm, cv = consts
    scale = (cw if cw is not None else 1.0) / (cv.astype("float64") + eps) ** 0.5
    shift = (cb if cb is not None else 0.0) - cm * scale
    bshape = [xs[1]] + [1] * (len(xs) - 2)
    dt = g.values[xv].dtype
    np_dt = cm.dtype
    sc = g.add_const(f"{node.name}.scale", scale.astype(np_dt).reshape(bshape))
    sh = g.add_const(f"{node.name}.shift", shift.astype(np_dt).reshape(bshape))
    y = g.emit("mul", [xv, sc], dt, xs, {}, lw.source)
    y = g.emit("add", [y, sh], dt, xs, {}, lw.source)
    for user in node.users:
        if user.args[1] != 0:
            lw.node = user
            raise lw.fail("batch_norm saved mean/rstd outputs are not supported")
    return [y, None, None]


@handles(aten.native_layer_norm.default, aten.layer_norm.default)
def _layer_norm(lw: Lowering, node: Node) -> Any:
    x, shape = node.args[0], node.args[1]
    w = node.args[2] if len(node.args) > 2 else None
    b = node.args[3] if len(node.args) > 3 else None
    eps = node.args[4] if len(node.args) > 4 else node.kwargs.get("eps", 1e-5)
    xv = lw.val(x)
    ins = [xv]
    dt = lw.g.values[xv].dtype
    if w is None and b is not None:
        ins.append(lw.const(__import__("numpy").ones([int(s) for s in shape]), dt))
    elif w is not None:
        ins.append(lw.val(w))
    if b is not None:
        ins.append(lw.val(b))
    y = lw.g.emit("layer_norm", ins, dt, lw.shape_of(xv), {"normalized_ndim": len(shape), "eps": float(eps)}, lw.source)
    if node.target is aten.layer_norm.default:
        return y
    return _first_output_only(lw, node, [y, None, None], "layer_norm saved mean/rstd outputs")


@handles(aten._softmax.default, aten.softmax.int, aten._log_softmax.default, aten.log_softmax.int)
def _softmax(lw: Lowering, node: Node) -> int:
    op = "log_softmax" if "log_softmax" in str(node.target) else "softmax"
    x = lw.tensor(node.args[0], _out_dtype(lw, node))
    return lw.emit(op, [x], {"axis": int(node.args[1])})


def _repeat_heads(lw: Lowering, t: int, heads: Any) -> int:
    """``t.repeat_interleave(heads // Hk, dim=-3)`` for ``t`` of shape ``[..., Hk, S, D]``
    (grouped-query attention): an ``expand`` of a new axis and a ``reshape``."""
    ts = lw.shape_of(t)
    hk = ts[-3]
    if hk == heads:
        return t
    if not (isinstance(hk, int) and isinstance(heads, int)) or heads % hk:
        raise lw.fail(f"enable_gqa needs a static number of query heads ({heads}) divisible by the key/value heads ({hk})")
    dt = lw.g.values[t].dtype
    wide = ts[:-2] + [1] + ts[-2:]
    t = lw.g.emit("reshape", [t], dt, wide, {"shape": wide}, lw.source)
    wide = ts[:-2] + [heads // hk] + ts[-2:]
    t = lw.g.emit("expand", [t], dt, wide, {"shape": wide}, lw.source)
    out = ts[:-3] + [heads] + ts[-2:]
    return lw.g.emit("reshape", [t], dt, out, {"shape": out}, lw.source)


@handles(aten.scaled_dot_product_attention.default)
def _sdpa(lw: Lowering, node: Node) -> int:
    q, k, v = (lw.val(a) for a in node.args[:3])
    names = ["attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"]
    opt = dict(zip(names, node.args[3:]))
    opt.update({n: node.kwargs[n] for n in names if n in node.kwargs})
    g = lw.g
    if opt.get("enable_gqa"):  # each group of H/Hk query heads reads one key/value head
        k, v = (_repeat_heads(lw, t, lw.shape_of(q)[-3]) for t in (k, v))
    dt, out = lw.out()
    qs, ks = lw.shape_of(q), lw.shape_of(k)
    e = qs[-1]
    if not isinstance(e, int):
        raise lw.fail("attention head size must be static")
    scale = opt.get("scale") or 1.0 / math.sqrt(e)
    perm = list(range(len(ks)))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    kt = g.emit("permute", [k], dt, [ks[p] for p in perm], {"perm": perm}, lw.source)
    sshape = [*qs[:-1], ks[-2]]
    s = g.emit("matmul", [q, kt], dt, sshape, {}, lw.source)
    s = g.emit("mul", [s, lw.const(scale, dt)], dt, sshape, {}, lw.source)
    mask = opt.get("attn_mask")
    if opt.get("is_causal"):
        L, S = qs[-2], ks[-2]
        i = g.emit("arange", [], "I64", [L], {"end": L}, lw.source)
        i = g.emit("reshape", [i], "I64", [L, 1], {"shape": [L, 1]}, lw.source)
        j = g.emit("arange", [], "I64", [S], {"end": S}, lw.source)
        keep = g.emit("le", [j, i], "BOOL", [L, S], {}, lw.source)
        bias = g.emit("where", [keep, lw.const(0.0, dt), lw.const(-math.inf, dt)], dt, [L, S], {}, lw.source)
        s = g.emit("add", [s, bias], dt, sshape, {}, lw.source)
    if mask is not None:
        m = lw.val(mask)
        if g.values[m].dtype == "BOOL":
            m = g.emit("where", [m, lw.const(0.0, dt), lw.const(-math.inf, dt)], dt, lw.shape_of(m), {}, lw.source)
        s = g.emit("add", [s, m], dt, sshape, {}, lw.source)
    p = g.emit("softmax", [s], dt, sshape, {"axis": -1}, lw.source)
    return lw.emit("matmul", [p, v])


# ----------------------------------------------------------------------------- reductions


def _axes(node: Node, pos: int = 1) -> list[int]:
    a = node.args[pos] if len(node.args) > pos else node.kwargs.get("dim")
    if a is None:
        return []
    return [int(a)] if isinstance(a, int) else [int(x) for x in a]


@handles(aten.mean.dim, aten.sum.dim_IntList, aten.amax.default, aten.amin.default, aten.mean.default, aten.sum.default)
def _reduce(lw: Lowering, node: Node) -> int:
    name = str(node.target).split(".")[1]
    keep = bool(node.args[2]) if len(node.args) > 2 else bool(node.kwargs.get("keepdim", False))
    x = lw.val(node.args[0])
    out = _out_dtype(lw, node)
    if lw.g.values[x].dtype != out:  # sum(dtype=...) and integer sums: cast first, as torch does
        x = lw.tensor(node.args[0], out)
    axes = _axes(node) if node.target not in (aten.mean.default, aten.sum.default) else []
    return lw.emit(name, [x], {"axes": axes, "keepdim": keep})


@handles(aten.max.default, aten.min.default)
def _max_all(lw: Lowering, node: Node) -> int:
    op = "amax" if node.target is aten.max.default else "amin"
    return lw.emit(op, [lw.val(node.args[0])], {"axes": [], "keepdim": False})


@handles(aten.max.dim, aten.min.dim)
def _max_dim(lw: Lowering, node: Node) -> list[Any]:
    x = lw.val(node.args[0])
    axis = int(node.args[1])
    keep = bool(node.args[2]) if len(node.args) > 2 else False
    vals, idx = node.meta["val"]
    dt = lw.g.values[x].dtype
    shape = [sym_to_dim(d) for d in vals.shape]
    op = "amax" if node.target is aten.max.dim else "amin"
    v = lw.g.emit(op, [x], dt, shape, {"axes": [axis], "keepdim": keep}, lw.source)
    if node.target is aten.max.dim:
        i = lw.g.emit("argmax", [x], "I64", shape, {"axis": axis, "keepdim": keep}, lw.source)
    else:
        neg = lw.g.emit("neg", [x], dt, lw.shape_of(x), {}, lw.source)
        i = lw.g.emit("argmax", [neg], "I64", shape, {"axis": axis, "keepdim": keep}, lw.source)
    return [v, i]


@handles(aten.linalg_vector_norm.default)
def _vector_norm(lw: Lowering, node: Node) -> int:
    dt, out = lw.out()  # dtype= casts the input first (weight_norm of a bf16 model asks for float32)
    x = lw.tensor(node.args[0], dt)
    order = node.args[1] if len(node.args) > 1 else node.kwargs.get("ord", 2)
    axes = _axes(node, 2)
    keep = bool(node.args[3]) if len(node.args) > 3 else bool(node.kwargs.get("keepdim", False))
    shape = lw.shape_of(x)
    g = lw.g
    if order in (1, 2):
        t = g.emit("abs" if order == 1 else "mul", [x] if order == 1 else [x, x], dt, shape, {}, lw.source)
        s = g.emit("sum", [t], dt, out, {"axes": axes, "keepdim": keep}, lw.source)
        return s if order == 1 else lw.emit("sqrt", [s])
    t = g.emit("abs", [x], dt, shape, {}, lw.source)
    if order in (math.inf, -math.inf):
        return lw.emit("amax" if order > 0 else "amin", [t], {"axes": axes, "keepdim": keep})
    if order == 0:  # the count of non-zero entries
        t = g.emit("cast", [g.emit("ne", [x, lw.const(0.0, dt)], "BOOL", shape, {}, lw.source)], dt, shape, {"dtype": dt}, lw.source)
        return lw.emit("sum", [t], {"axes": axes, "keepdim": keep})
    t = g.emit("pow", [t, lw.const(float(order), dt)], dt, shape, {}, lw.source)  # (Σ |x|^p)^(1/p)
    s = g.emit("sum", [t], dt, out, {"axes": axes, "keepdim": keep}, lw.source)
    return lw.emit("pow", [s, lw.const(1.0 / float(order), dt)])


@handles(aten.argmax.default)
def _argmax(lw: Lowering, node: Node) -> int:
    if len(node.args) < 2 or node.args[1] is None:
        return flat_arg_extreme(lw, node, lw.val(node.args[0]), negate=False)
    keep = bool(node.args[2]) if len(node.args) > 2 else False
    return lw.emit("argmax", [lw.val(node.args[0])], {"axis": int(node.args[1]), "keepdim": keep})
