"""``torch.roll(block, shifts, dims)`` / ``block.roll(shifts, dims)`` in device code.

Each (shift, dim) pair is one ``roll`` op (:mod:`torchship.kernels.ops.roll`, a ``tl.gather``)
along a dim the block holds whole: a constant size or a whole ``:`` dim (padded and masked,
of any size; it then never becomes a looped reduction). Shifts are ints or integer values
(an int argument, a loaded scalar). Refused naming the line: a tile dim (the block holds part
of it: gather the rolled positions from the tensor instead) and ``dims=None`` on a block of
more than one dim (torch rolls the flattened block).

Example:
    >>> _pairs(1, 0)
    [(1, 0)]
"""

from __future__ import annotations

import ast
from typing import Any

from torchship.kernels.errors import KernelSyntaxError, KernelTypeError
from torchship.kernels.frontend.compose import _arg
from torchship.kernels.ir import TileDim, Value

__all__ = ["roll"]


def _pairs(shifts: Any, dims: Any) -> list[tuple[Any, Any]]:
    s = list(shifts) if isinstance(shifts, (tuple, list)) else [shifts]
    d = list(dims) if isinstance(dims, (tuple, list)) else [dims]
    return list(zip(s, d)) if len(s) == len(d) else []


def roll(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Value:
    """``torch.roll(x, shifts, dims)`` of a block."""
    x = h.operand(_arg(args, kwargs, 0, "input", None))
    shifts = _arg(args, kwargs, 1, "shifts", None)
    dims = _arg(args, kwargs, 2, "dims", None)
    text = f"`{ast.unparse(node)}`"
    if dims is None:
        if x.ndim != 1:
            raise h.err(KernelSyntaxError, f"{text} without dims rolls the flattened block",
                        hint="give the dims: torch.roll(v, s, dims=1)", node=node)
        dims = 0
    pairs = _pairs(shifts, dims)
    if not pairs:
        raise h.err(KernelTypeError, f"{text}: give one shift per dim", node=node)
    for shift, dim in pairs:
        ok_shift = (isinstance(shift, int) and not isinstance(shift, bool)) or (
            isinstance(shift, Value) and shift.ndim == 0 and not shift.dtype.is_floating_point
            and shift.dtype != bool)
        if not ok_shift or not isinstance(dim, int) or not -x.ndim <= dim < x.ndim:
            raise h.err(KernelTypeError, f"{text}: shifts are ints (or integer values) and "
                        f"dims ints of the rank-{x.ndim} block", node=node)
        dim %= x.ndim
        d = x.shape[dim].find()
        if isinstance(d, TileDim):
            raise h.err(KernelSyntaxError, f"{text} along the tile {d.tile.name!r}: the block "
                        "holds only part of that dim", hint=f"load the rolled positions from "
                        f"the tensor: x[(({d.tile.name}.index - s) % n + n) % n, :] (a gather), "
                        "or load the whole dim with `:` and roll that", node=node)
        x = h.b.emit("roll", [x, shift], {"dim": dim})
    return x
