"""Block creation and views: ``ts.zeros``/``ts.full``, ``tile.index``, positions along a
block's dim, ``None``-indexing, transpose.

Example:
    >>> import torch
    >>> from torchship.kernels.ir import ConstDim
    >>> from torchship.kernels.ops import OPS
    >>> OPS["full"].infer([], {"shape": (ConstDim(4),), "dtype": torch.float16, "value": 1.0})
    ((4,), torch.float16)
"""

from __future__ import annotations

from typing import Any

import torch

from torchship.kernels.ir import ConstDim, Value
from torchship.kernels.ops import OpDef, register


def _full_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    return tuple(attrs["shape"]), attrs["dtype"]


def _full_emit(cg: Any, node: Any, args: list[str]) -> str:
    dims = ", ".join(cg.block(d) for d in node.attrs["shape"])
    value = cg.literal(node.attrs["value"]) if not node.inputs else args[0]
    return f"tl.full([{dims}], {value}, {cg.tl(node.attrs['dtype'])})"


register(OpDef("full", _full_infer, _full_emit, "create"))


def _index_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    return (attrs["tile"].dim,), torch.int32


register(OpDef("tile_index", _index_infer, lambda cg, node, args: cg.tile_index(node.attrs["tile"]),
               "create"))


def _dim_index_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    return tuple(inputs[0].shape), torch.int64


def _dim_index_emit(cg: Any, node: Any, args: list[str]) -> str:
    """Positions along ``attrs["dim"]`` of the input's block, broadcast to its shape (the
    index half of a cummax/cummin scan)."""
    x, dim = node.inputs[0], node.attrs["dim"]
    d = x.shape[dim].find()
    idx = f"tl.arange(0, {d.n})" if isinstance(d, ConstDim) else cg.dim_info(d)[0]
    return f"tl.broadcast_to({cg.expand(idx, dim, x.ndim)}.to(tl.int64), {args[0]}.shape)"


register(OpDef("dim_index", _dim_index_infer, _dim_index_emit, "create"))


def _attr_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    return (), torch.int32


register(OpDef("tile_attr", _attr_infer,
               lambda cg, node, args: cg.tile_attr(node.attrs["tile"], node.attrs["attr"]),
               "create"))


def _expand_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    x: Value = inputs[0]
    return tuple(attrs["dims"]), x.dtype


def _expand_emit(cg: Any, node: Any, args: list[str]) -> str:
    # attrs["spec"]: per output position, ":" (keep an input dim) or "None" (new dim)
    spec = node.attrs["spec"]
    if all(s == ":" for s in spec):
        return args[0]
    if "squeeze" in spec and not node.out.shape:  # its one element (reshape has no 0-d)
        return f"tl.sum({args[0]}, axis=None).to({cg.tl(node.out.dtype)})"
    if "squeeze" in spec:
        x = args[0]
        dims = ", ".join(cg.block(d) for d in node.out.shape)
        return f"tl.reshape({x}, [{dims}])"
    return f"{args[0]}[{', '.join(spec)}]"


register(OpDef("view", _expand_infer, _expand_emit, "view"))


def _trans_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    x: Value = inputs[0]
    shape = list(x.shape)
    shape[-1], shape[-2] = shape[-2], shape[-1]
    return tuple(shape), x.dtype


def _trans_emit(cg: Any, node: Any, args: list[str]) -> str:
    nd = node.inputs[0].ndim
    perm = list(range(nd))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return f"tl.permute({args[0]}, {tuple(perm)})"


register(OpDef("trans", _trans_infer, _trans_emit, "view"))


def const_shape(values: list[int]) -> tuple[ConstDim, ...]:
    """Shape of literal sizes.

    Example:
        >>> const_shape([1, 4])
        (1, 4)
    """
    return tuple(ConstDim(v) for v in values)
