"""Prefix scans along one dimension: ``torch.cumsum`` and ``torch.cumprod``.

The node is ``scan(x, kind=, dim=)``; its result has ``x``'s shape. The scanned dimension is
whole in the block (a full ``:`` dimension or a constant size), so the scan sees every element
before the one it writes, and such a dimension is never rolled into a looped reduction (see
:func:`torchship.kernels.frontend.analysis.full_dims`); or it is an inner loop's tile, scanned
tile by tile (the kernel carries the total). Padded lanes sit after the last real element, so
they never reach a real one and need no re-masking. Half types and integers
accumulate like torch (float32, int64) and the result has torch's dtype.

Example:
    >>> import torch
    >>> from torchship.kernels.ir import ConstDim, Value
    >>> from torchship.kernels.ops import OPS
    >>> x = Value((ConstDim(4), ConstDim(8)), torch.int32)
    >>> OPS["scan"].infer([x], {"kind": "cumsum", "dim": 1})[1]
    torch.int64
"""

from __future__ import annotations

from typing import Any

import torch

from torchship.kernels.ops import OpDef, register

#: scan kind -> Triton function
SCANS = {"cumsum": "tl.cumsum", "cumprod": "tl.cumprod"}


def result_dtype(dtype: torch.dtype) -> torch.dtype:
    """torch's dtype of ``cumsum``/``cumprod`` of ``dtype`` (integers and bool give int64).

    Example:
        >>> result_dtype(torch.bool), result_dtype(torch.float16)
        (torch.int64, torch.float16)
    """
    return dtype if dtype.is_floating_point else torch.int64


def _infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    x = inputs[0]
    return tuple(x.shape), result_dtype(x.dtype)


def _emit(cg: Any, node: Any, args: list[str]) -> str:
    out = node.out.dtype
    work = torch.float32 if out in (torch.float16, torch.bfloat16) else out
    x = cg.coerce(node.inputs[0], args[0], work, force=True)
    expr = f"{SCANS[node.attrs['kind']]}({x}, axis={node.attrs['dim']})"
    return expr if work == out else f"({expr}).to({cg.tl(out)})"


register(OpDef("scan", _infer, _emit, kind="scan"))
