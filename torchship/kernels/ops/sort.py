"""Sorting along a block's last dim: ``torch.sort`` and ``torch.topk``, values and indices.

Triton's ``tl.sort``/``tl.topk`` (bitonic networks over a power-of-two dim, in Triton 3.6 and
3.9 alike) sort values only. ``sort_keys`` packs each element into one int64 key: the value
as an int32 that orders like it (float bits with the magnitude bits flipped for negatives,
which also puts NaN last like torch) in the high half, its position along the dim in the low
half; sorting the keys sorts the values and carries the indices (ties: lower index first
ascending, higher first descending). ``sort_values``/``sort_indices`` unpack. Padded lanes of
a whole (``:``) dim get the key that sorts last, so they never reach the first ``n`` results.
Values of 16/32-bit floats, ints up to 32 bits and bool; 64-bit dtypes are refused by the
frontend.

Example:
    >>> import torch
    >>> from torchship.kernels.ir import ConstDim, Value
    >>> from torchship.kernels.ops import OPS
    >>> x = Value((ConstDim(4), ConstDim(16)), torch.float16)
    >>> OPS["sort_keys"].infer([x], {"k": 4, "descending": True})[0]
    (4, 4)
"""

from __future__ import annotations

from typing import Any

import torch

from torchship.kernels.ir import ConstDim
from torchship.kernels.ops import OpDef, register

_INT32_MAX, _INT32_MIN = 2**31 - 1, -(2**31)


def _keys_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    x = inputs[0]
    shape = list(x.shape)
    if attrs["k"] is not None:
        shape[-1] = ConstDim(attrs["k"])
    return tuple(shape), torch.int64


def _keys_emit(cg: Any, node: Any, args: list[str]) -> str:
    x = node.inputs[0]
    rank = x.ndim
    d = x.shape[-1]
    idx, mask, _ = cg.dim_info(d)
    if isinstance(d.find(), ConstDim):
        idx = f"tl.arange(0, {d.find().n})"
    if x.dtype.is_floating_point:
        bits = cg.fresh("sort_bits")
        f32 = args[0] if x.dtype == torch.float32 else f"{args[0]}.to(tl.float32)"
        cg.line(f"{bits} = {f32}.to(tl.int32, bitcast=True)")
        order = f"{bits} ^ (({bits} >> 31) & {_INT32_MAX})"
    else:
        order = f"{args[0]}.to(tl.int32)"
    if mask is not None:
        last = _INT32_MIN if node.attrs["descending"] else _INT32_MAX
        order = f"tl.where({cg.expand(mask, rank - 1, rank)}, {order}, {last})"
    key = cg.fresh("sort_key")
    cg.line(f"{key} = ({order}).to(tl.int64) << 32 | {cg.expand(idx, rank - 1, rank)}"
            ".to(tl.int64)")
    if node.attrs["k"] is not None:
        return f"tl.topk({key}, {node.attrs['k']}, dim={rank - 1})"
    return f"tl.sort({key}, dim={rank - 1}, descending={node.attrs['descending']})"


register(OpDef("sort_keys", _keys_infer, _keys_emit))


def _values_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    return tuple(inputs[0].shape), attrs["dtype"]


def _values_emit(cg: Any, node: Any, args: list[str]) -> str:
    order = cg.fresh("sorted_order")
    cg.line(f"{order} = ({args[0]} >> 32).to(tl.int32)")
    dtype = node.attrs["dtype"]
    if not dtype.is_floating_point:
        return f"{order}.to({cg.tl(dtype)})"
    value = f"({order} ^ (({order} >> 31) & {_INT32_MAX})).to(tl.float32, bitcast=True)"
    return value if dtype == torch.float32 else f"{value}.to({cg.tl(dtype)})"


register(OpDef("sort_values", _values_infer, _values_emit))


def _indices_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    return tuple(inputs[0].shape), torch.int64


register(OpDef("sort_indices", _indices_infer,
               lambda cg, node, args: f"{args[0]} & {2**32 - 1}"))


def _prefix_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    return (*inputs[0].shape[:-1], attrs["dim"]), inputs[0].dtype


# ``topk`` with k not a power of two: the top power-of-two block, its last dim relabelled as a
# whole dim of extent k (whose padded block is that power of two); its mask hides the rest
register(OpDef("topk_prefix", _prefix_infer, lambda cg, node, args: args[0], "view"))
