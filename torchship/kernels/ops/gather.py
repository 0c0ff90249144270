"""``torch.gather(x, dim, idx)`` of a block along a dim it holds whole: ``take_along``.

Element ``[.., j, ..]`` of the result is ``x[.., idx[.., j, ..], ..]`` along ``dim``; the
result has ``idx``'s shape, which matches ``x`` on every other dim. Written as ``tl.gather``
(Triton 3.6 and 3.9 have it, and so does its interpreter) with the positions clamped into the
block, so a padded or masked lane never reads outside it.

Example:
    >>> import torch
    >>> from torchship.kernels.ir import ConstDim, Value
    >>> from torchship.kernels.ops import OPS
    >>> x = Value((ConstDim(4), ConstDim(8)), torch.float16)
    >>> i = Value((ConstDim(4), ConstDim(2)), torch.int64)
    >>> OPS["take_along"].infer([x, i], {"dim": 1})
    ((4, 2), torch.float16)
"""

from __future__ import annotations

from typing import Any

import torch

from torchship.kernels.errors import KernelTypeError
from torchship.kernels.ops import OpDef, register


def _infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    x, idx = inputs
    d = attrs["dim"]
    if idx.ndim != x.ndim or any(not a.same(b) for k, (a, b) in
                                 enumerate(zip(x.shape, idx.shape)) if k != d):
        raise KernelTypeError(
            f"gather: the index block {idx.shape_str()} must match the block "
            f"{x.shape_str()} on every dim but {d}",
            hint="broadcast the index first (idx.expand) or index the tensor instead")
    return tuple(idx.shape), x.dtype


def _emit(cg: Any, node: Any, args: list[str]) -> str:
    x = node.inputs[0]
    d = node.attrs["dim"]
    top = f"{cg.block(x.shape[d].find())} - 1"
    pos = f"tl.minimum(tl.maximum({args[1]}, 0), {top}).to(tl.int32)"
    return f"tl.gather({args[0]}, {pos}, {d})"


register(OpDef("take_along", _infer, _emit, "view"))
