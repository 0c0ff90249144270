"""Several integer blocks indexing one tensor, paired up element-wise as in torch:
``pages[blk, slot, h, :]`` with ``blk`` and ``slot`` of shape ``[tn]`` is ``[tn, d]``,
``x[rows[:, None], cols[None, :]]`` is ``[tm, tn]``. The blocks broadcast to one shape, which
sits where the first block is; each later block adds its index times its stride there.

Example:
    >>> paired_gather.__name__
    'paired_gather'
"""

from __future__ import annotations

import ast
from typing import Any

from torchship.kernels.errors import KernelTypeError
from torchship.kernels.frontend.captures import TensorRef
from torchship.kernels.ir import Value
from torchship.kernels.ops import broadcast_shapes
from torchship.kernels.ops.memory import Index


def paired_gather(h: Any, ref: TensorRef, out: list[Index], axis: int, v: Value,
                  node: ast.AST) -> Index:
    """The index entry of a further integer block ``v`` on ``axis`` (``out``: the entries so
    far, one of them a gather). Only adjacent blocks (ints may sit between them) are
    supported: torch moves separated ones to the front of the result."""
    first = next(x for x in out if x.kind == "gather")
    between = out[out.index(first) + 1:]
    if any(x.kind not in ("gather", "scalar") for x in between):
        raise h.err(KernelTypeError, f"indexing {ref.name!r} with integer blocks separated "
                    "by a tile, `:` or None is not supported (torch moves their dims to the "
                    "front)", hint="put the integer blocks next to each other (permute the "
                    "tensor in host code), or index a flattened view with one block: "
                    "rows * x.stride(0) + cols", node=node)
    try:
        first.group = broadcast_shapes([first.dims(), v.shape])
    except KernelTypeError as e:
        raise h.err(KernelTypeError, f"indexing {ref.name!r} with two integer blocks that do "
                    f"not broadcast (torch pairs them up element by element): {e}",
                    hint="give them one shape (rows[:, None], cols[None, :] for a 2-D "
                    "block), or index a flattened view with one block", node=node) from None
    return Index("gather", axis, value=v, paired=True)
