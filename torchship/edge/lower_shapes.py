"""ATen -> core op handlers, part 2: shape/data-movement and creation ops.

Example:
    >>> from torchship.edge.lower import HANDLERS
    >>> import torchship.edge.lower_shapes  # registers
    >>> torch.ops.aten.permute.default in HANDLERS
    True
"""

from __future__ import annotations

from typing import Any

import torch

from torchship.edge.lower import INT64_MAX, Lowering, handles, is_complex, rank, sym_to_dim
from torchship.edge.lower import out_dtype as _out_dtype

aten = torch.ops.aten
Node = torch.fx.Node


# ----------------------------------------------------------------------------- shape ops


@handles(aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.unsqueeze.default,
         aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, aten.flatten.using_ints, aten.view_copy.default)
def _reshape(lw: Lowering, node: Node) -> int:
    x = lw.val(node.args[0])
    _, shape = lw.out()
    if shape == lw.shape_of(x):
        return x
    return lw.emit("reshape", [x], {"shape": shape})


@handles(aten.permute.default, aten.transpose.int, aten.t.default, aten.permute_copy.default)
def _permute(lw: Lowering, node: Node) -> int:
    x = lw.val(node.args[0])
    r = rank(node.args[0])
    if node.target is aten.transpose.int:
        perm = list(range(r))
        a, b = node.args[1] % max(r, 1), node.args[2] % max(r, 1)
        perm[a], perm[b] = perm[b], perm[a]
    elif node.target is aten.t.default:
        perm = list(range(r))[::-1]
    else:
        perm = [int(p) % r for p in node.args[1]]
    perm += list(range(r, len(lw.shape_of(x))))  # a complex value's (real, imaginary) axis
    if perm == list(range(len(perm))):
        return x
    return lw.emit("permute", [x], {"perm": perm})


@handles(aten.expand.default, aten.expand_copy.default)
def _expand(lw: Lowering, node: Node) -> int:
    x = lw.val(node.args[0])
    _, shape = lw.out()
    if shape == lw.shape_of(x):
        return x
    return lw.emit("expand", [x], {"shape": shape})


def _norm_index(i: Any, size: Any, default: Any) -> Any:
    if i is None:
        return default
    if isinstance(i, int):
        if i >= INT64_MAX // 2:
            return size
        if i < 0:
            return max(0, size + i) if isinstance(size, int) else ["max", 0, ["+", size, i]]
        return i
    return i


@handles(aten.slice.Tensor, aten.slice_copy.Tensor)
def _slice(lw: Lowering, node: Node) -> int:
    x = lw.val(node.args[0])
    shape = lw.shape_of(x)
    args = list(node.args[1:]) + [0, None, None, 1][len(node.args) - 1 :]
    dim, start, end, step = args[:4]
    dim = int(dim) % rank(node.args[0])
    size = shape[dim]
    start = _norm_index(lw.dim(start) if start is not None else None, size, 0)
    end = _norm_index(lw.dim(end) if end is not None else None, size, size)
    if start == 0 and end == size and step == 1:
        return x
    return lw.emit("slice", [x], {"axis": dim, "start": start, "end": end, "step": int(step)})


@handles(aten.select.int)
def _select(lw: Lowering, node: Node) -> int:
    x = lw.val(node.args[0])
    shape = lw.shape_of(x)
    dim = int(node.args[1]) % rank(node.args[0])
    idx = lw.dim(node.args[2])
    if isinstance(idx, int) and idx < 0:
        idx = shape[dim] + idx if isinstance(shape[dim], int) else ["+", shape[dim], idx]
    sl = list(shape)
    sl[dim] = 1
    dt, out = lw.out()
    s = lw.g.emit("slice", [x], dt, sl, {"axis": dim, "start": idx, "end": ["+", idx, 1] if not isinstance(idx, int) else idx + 1, "step": 1}, lw.source)
    return lw.emit("reshape", [s], {"shape": out})


@handles(aten.split_with_sizes.default, aten.split.Tensor, aten.split_with_sizes_copy.default)
def _split(lw: Lowering, node: Node) -> list[int]:
    x = lw.val(node.args[0])
    shape = lw.shape_of(x)
    dim = int(node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)) % len(shape)
    outs = []
    start: Any = 0
    for val in node.meta["val"]:
        n = sym_to_dim(val.shape[dim])
        end = start + n if isinstance(start, int) and isinstance(n, int) else ["+", start, n]
        oshape = [sym_to_dim(d) for d in val.shape]
        outs.append(lw.g.emit("slice", [x], lw.g.values[x].dtype, oshape, {"axis": dim, "start": start, "end": end, "step": 1}, lw.source))
        start = end
    return outs


@handles(aten.cat.default, aten.concat.default)
def _cat(lw: Lowering, node: Node) -> int:
    dim = int(node.args[1]) if len(node.args) > 1 else int(node.kwargs.get("dim", 0))
    dim %= rank(node)
    if is_complex(node) and not all(is_complex(t) for t in node.args[0]):
        raise lw.fail("cat of complex and real tensors is not supported; make every part complex")
    dt = lw.out()[0]
    ins = [lw.tensor(t, dt) for t in node.args[0] if 0 not in list(t.meta["val"].shape) or t.meta["val"].dim() > 1]
    return lw.emit("concat", ins, {"axis": dim})


@handles(aten.embedding.default)
def _embedding(lw: Lowering, node: Node) -> int:
    return lw.emit("embedding", [lw.val(node.args[0]), lw.val(node.args[1])])


@handles(aten.gather.default)
def _gather(lw: Lowering, node: Node) -> int:
    if node.kwargs.get("sparse_grad"):
        raise lw.fail("gather with sparse_grad is not supported")
    return lw.emit("gather", [lw.val(node.args[0]), lw.val(node.args[2])], {"axis": int(node.args[1])})


# ----------------------------------------------------------------------------- creation


@handles(aten.arange.start_step, aten.arange.default, aten.arange.start)
def _arange(lw: Lowering, node: Node) -> int:
    a = list(node.args)
    if node.target is aten.arange.default:
        a = [0, a[0], 1]
    elif node.target is aten.arange.start:
        a = [a[0], a[1], 1]
    start, end, step = a[0], a[1], a[2] if len(a) > 2 else 1
    dt = _out_dtype(lw, node)
    if any(isinstance(v, float) for v in (start, end, step)):
        if any(isinstance(v, Node) for v in (start, end, step)):
            raise lw.fail("arange with float bounds and a dynamic size is not supported; "
                          "write torch.arange(n) * step + start")
        return _constant(lw, node, torch.arange(start, end, step, dtype=node.meta["val"].dtype))
    return lw.emit("arange", [], {"start": lw.dim(start), "end": lw.dim(end), "step": int(step), "dtype": dt})


@handles(aten.triu_indices.default, aten.tril_indices.default)
def _tri_indices(lw: Lowering, node: Node) -> int:
    """``torch.triu_indices``/``tril_indices`` of static sizes: a constant."""
    if any(isinstance(a, Node) for a in node.args):
        raise lw.fail(f"{node.target} of a dynamic size is not supported")
    fn = torch.triu_indices if node.target is aten.triu_indices.default else torch.tril_indices
    return _constant(lw, node, fn(*node.args, dtype=node.meta["val"].dtype))


def _constant(lw: Lowering, node: Node, t: torch.Tensor) -> int:
    """A creation op with static arguments, evaluated at export and stored as a constant."""
    return lw.g.add_const(f"{lw.g.name}.{node.name}", t.numpy().copy())


@handles(aten.full.default, aten.zeros.default, aten.ones.default, aten.full_like.default,
         aten.zeros_like.default, aten.ones_like.default, aten.scalar_tensor.default, aten.new_ones.default,
         aten.new_zeros.default, aten.new_full.default, aten.empty.memory_format, aten.empty_permuted.default,
         aten.empty_strided.default, aten.new_empty.default)
def _full(lw: Lowering, node: Node) -> int:
    """A constant-filled tensor; ``empty`` (``torch.empty_like`` of an index to be filled by a
    write, as transformers' MoE inverse permutation) is zeros, one of the contents torch allows."""
    t = str(node.target)
    if "full" in t:
        value = node.args[-1] if "like" not in t else node.args[1]
    elif "scalar_tensor" in t:
        value = node.args[0]
    else:
        value = 1.0 if "ones" in t else 0.0
    dt, shape = lw.out()
    if isinstance(value, Node):  # a (dynamic) size, e.g. ``idx[d2 > r * r] = n`` with n = x.shape[1]
        size = lw.tensor(value, dt)
        return size if not shape else lw.emit("expand", [size], {"shape": shape})
    return lw.emit("full", [], {"shape": shape, "value": float(value), "dtype": dt})
