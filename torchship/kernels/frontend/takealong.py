"""``torch.gather(block, dim, idx)`` / ``block.gather(dim, idx)`` and ``F.embedding(idx,
weight)`` in device code.

A gather of a block runs along a dim the block holds whole (a constant size or a whole ``:``
dim), as one ``take_along`` op (:mod:`torchship.kernels.ops.gather`); along a tile it is
refused, naming the tensor gather to write instead. ``F.embedding(idx, weight)`` of a 2-D
tensor argument is the load ``weight[idx, :]``.

Example:
    >>> sorted(METHODS)
    ['gather']
"""

from __future__ import annotations

import ast
from typing import Any

import torch
import torch.nn.functional as F

from torchship.kernels.errors import KernelSyntaxError, KernelTypeError
from torchship.kernels.frontend.captures import TensorRef
from torchship.kernels.frontend.compose import _arg
from torchship.kernels.ir import TileDim, Value
from torchship.kernels.ops.memory import Index

__all__ = ["FUNCTIONS", "METHODS", "take_along"]

FUNCTIONS: dict[Any, str] = {torch.gather: "gather", F.embedding: "embedding"}
METHODS: dict[str, str] = {"gather": "gather"}


def _int_block(v: Any) -> bool:
    return isinstance(v, Value) and v.ndim > 0 and not v.dtype.is_floating_point and \
        v.dtype != torch.bool


def _embedding(h: Any, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Value:
    idx = _arg(args, kwargs, 0, "input", None)
    weight = _arg(args, kwargs, 1, "weight", None)
    text = f"`{ast.unparse(node)}`"
    if set(kwargs) - {"input", "weight"} or len(args) > 2:
        raise h.err(KernelTypeError, f"{text}: padding_idx, max_norm and the other options "
                    "are not supported in device code", hint="load the rows: weight[idx, :]",
                    node=node)
    if not isinstance(weight, TensorRef) or weight.ndim != 2 or not _int_block(idx):
        raise h.err(KernelTypeError, f"{text}: expects an integer block and a 2-D tensor "
                    "argument", hint="load the rows: weight[idx, :]", node=node)
    index = [Index("gather", 0, value=idx), h._full(weight, 1)]
    for axis in (0, 1):
        h.b.tensor_stride(weight, axis)
    return h.b.emit("load", [], {"tensor": weight, "index": index})


def take_along(h: Any, name: str, args: list[Any], kwargs: dict[str, Any],
               node: ast.AST) -> Value:
    """``torch.gather`` of a block, or ``F.embedding`` of a tensor (``name``)."""
    if name == "embedding":
        return _embedding(h, args, kwargs, node)
    x = _arg(args, kwargs, 0, "input", None)
    dim = _arg(args, kwargs, 1, "dim", None)
    idx = _arg(args, kwargs, 2, "index", None)
    text = f"`{ast.unparse(node)}`"
    if isinstance(x, TensorRef):
        raise h.err(KernelSyntaxError, f"{text} gathers from a tensor argument", hint="index "
                    "the tensor with the integer block instead: x[tm.index[:, None], idx] "
                    "(or load the block x[tm, :] and gather from that)", node=node)
    x = h.operand(x)
    if not isinstance(x, Value) or not isinstance(dim, int) or not _int_block(idx) or \
            not -x.ndim <= dim < x.ndim:
        raise h.err(KernelTypeError, f"{text}: expects a block, an int dim and an integer "
                    "index block", node=node)
    dim %= x.ndim
    d = x.shape[dim].find()
    if isinstance(d, TileDim):
        raise h.err(KernelSyntaxError, f"{text} along the tile {d.tile.name!r}: the block "
                    "holds only part of that dim", hint="gather from the tensor (x[idx, tn], "
                    "an integer block indexing it), or load the whole dim with `:`",
                    node=node)
    return h.b.emit("take_along", [x, idx], {"dim": dim})
