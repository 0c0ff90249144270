"""``torch.roll`` of a block along a dim it holds whole: ``roll(x, shift, dim=)``.

Element ``i`` of the result is element ``(i - shift) mod n`` of ``x``, with ``n`` the dim's
size: a constant, a whole ``:`` dim's size at run time (padded lanes take some real element;
every consumer masks them) — so the shift may be a device value. Written as ``tl.gather`` of
``x`` along the dim with those positions (Triton 3.6 and 3.9 have it, and so does its
interpreter).

Example:
    >>> import torch
    >>> from torchship.kernels.ir import ConstDim, Value
    >>> from torchship.kernels.ops import OPS
    >>> x = Value((ConstDim(4), ConstDim(8)), torch.float16)
    >>> OPS["roll"].infer([x, 3], {"dim": 1})[0]
    (4, 8)
"""

from __future__ import annotations

from typing import Any

import torch

from torchship.kernels.ir import ConstDim, Value
from torchship.kernels.ops import OpDef, register


def _infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    return tuple(inputs[0].shape), inputs[0].dtype


def _emit(cg: Any, node: Any, args: list[str]) -> str:
    x, shift = node.inputs[0], node.inputs[1]
    d = node.attrs["dim"]
    root = x.shape[d].find()
    blk = cg.block(root)
    n = root.n if isinstance(root, ConstDim) else root.static
    if n is not None and not isinstance(shift, Value):
        src = f"((tl.arange(0, {blk}) + {(-int(shift)) % n}) % {n})"
    else:
        size = str(n) if n is not None else cg.ref(root.size)
        s = args[1] if isinstance(shift, Value) else str(int(shift))
        # (i - s) mod n whatever sign `%` gives a negative dividend
        src = f"(((tl.arange(0, {blk}) - {s}) % {size} + {size}) % {size})"
    full = ", ".join(cg.block(dim) for dim in x.shape)
    return f"tl.gather({args[0]}, tl.broadcast_to({cg.expand(src, d, x.ndim)}, [{full}]), {d})"


register(OpDef("roll", _infer, _emit, "view"))
