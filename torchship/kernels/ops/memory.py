"""Loads, stores and atomic adds through tensor indices (tiles, ints, ``:``, ``None``).

An index is a list of :class:`Index` entries, one per written position: ``tile`` (the block of
a tile variable, masked at the edge), ``full`` (the whole dimension, a :class:`FullDim`),
``full`` with a ``start`` (a slice ``a:b``: the dim is ``b - a`` wide),
``scalar`` (an int operand, dimension dropped), ``none`` (a new size-1 dimension) and
``gather`` (an integer block of any rank whose values pick rows; its dims replace the tensor
dim, as in torch's ``x[idx]``; further adjacent integer blocks pair up with it element-wise,
their broadcast shape in its place, as in torch's ``x[rows, cols]``). Pointer, block-pointer and tensor-descriptor code for them
lives in the Triton backend's indexing module.

Example:
    >>> import torch
    >>> from torchship.kernels.ir import ConstDim
    >>> idx = [Index("none"), Index("scalar", value=3)]
    >>> index_shape(idx)
    (1,)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from torchship.kernels.errors import KernelTypeError
from torchship.kernels.ir import ConstDim, Dim, FullDim, TileInfo, Value
from torchship.kernels.ops import OpDef, broadcast_shapes, register, shape_of


@dataclass(eq=False)
class Index:
    """One index entry; ``axis`` is the tensor dimension it addresses (None for ``none``)."""

    kind: str  # tile | full | scalar | none | gather
    axis: int | None = None
    tile: TileInfo | None = None
    full: FullDim | None = None
    value: Any = None  # scalar operand or gather Value
    group: tuple[Dim, ...] | None = None  # first gather of several: their broadcast shape
    paired: bool = False  # a further gather: broadcast into the first one's dims
    start: Any = None  # a bounded ``full`` slice (x[tm, a:b]): where it starts (frontend.slices)
    clip: Any = None  # a start computed on the device: mask start + i < clip (the tensor size)
    step: int | None = None  # a slice a:b:step (step > 1): element i sits at a + i * step

    def dims(self) -> tuple[Dim, ...]:
        if self.kind == "tile":
            return (self.tile.dim,)
        if self.kind == "full":
            return (self.full,)
        if self.kind == "none":
            return (ConstDim(1),)
        if self.kind == "gather" and not self.paired:
            return self.group if self.group is not None else self.value.shape
        return ()


def index_shape(index: list[Index]) -> tuple[Dim, ...]:
    """The block shape an index addresses."""
    return tuple(d for e in index for d in e.dims())


def _load_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    return index_shape(attrs["index"]), attrs["tensor"].dtype


def _store_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    target = index_shape(attrs["index"])
    value = inputs[0]
    vshape = shape_of(value)
    if len(vshape) > len(target):
        raise KernelTypeError(
            f"cannot store a value of shape {value.shape_str()} into "
            f"{attrs['tensor'].name}[{_fmt(target)}] (more dimensions than the target block)",
            hint="reduce or index the value so its dimensions match the stored block",
        )
    shape = broadcast_shapes([target, vshape])
    for d_t, d_s in zip(target, shape):
        if not d_t.same(d_s):
            raise KernelTypeError(
                f"cannot store a value of shape {value.shape_str() if isinstance(value, Value) else '[]'}"
                f" into {attrs['tensor'].name}[{_fmt(target)}]",
                hint="the value's dims must match the target's tiles, or be 1",
            )
    return (), attrs["tensor"].dtype


def _fmt(shape: tuple[Dim, ...]) -> str:
    return ", ".join(repr(d) for d in shape)


register(OpDef("load", _load_infer, lambda cg, node, args: cg.emit_load(node), "memory"))
register(OpDef("store", _store_infer, lambda cg, node, args: cg.emit_store(node, args), "memory"))
register(OpDef("atomic_add", _store_infer,
               lambda cg, node, args: cg.emit_store(node, args, atomic=True), "memory"))
