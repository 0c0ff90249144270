"""The Tile IR: typed values over symbolic block dimensions, grouped into launches and loops.

A :class:`Launch` is one top-level ``for ... in ts.tile/ts.grid`` loop: a grid of programs
(one per tile) whose ``body`` is a list of :class:`Node` (one op application each) and
:class:`Loop` (an inner device loop with loop-carried values). Every :class:`Value` has a
``shape`` made of :class:`Dim` objects and a torch dtype:

- :class:`TileDim` -- the block of one tile loop variable (size = the config's block size),
- :class:`FullDim` -- a whole tensor dimension taken with ``:`` (padded to a power of two,
  or rolled into a looped reduction); full dims that meet in one expression are unified,
- :class:`ConstDim` -- a literal size (``None`` indexing, ``keepdim=True``, ``ts.zeros([t, 16])``).

Printed, a launch reads like::

    launch softmax.py:6 grid=[tm]
      %0 row: f32[tm, x.size(1)] = load(x, [tm, :])
      %1 %1: f32[tm, 1] = amax(%0, dim=1, keepdim=True)
      ...

Example:
    >>> import torch
    >>> d = ConstDim(4)
    >>> v = Value((d,), torch.float32, "v")
    >>> v.shape_str()
    'f32[4]'
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "ConstDim",
    "Dim",
    "FullDim",
    "Launch",
    "Loc",
    "Loop",
    "Node",
    "TileDim",
    "TileInfo",
    "Value",
    "dtype_short",
]

_ids = itertools.count()

_SHORT = {
    torch.float16: "f16", torch.bfloat16: "bf16", torch.float32: "f32", torch.float64: "f64",
    torch.int8: "i8", torch.int16: "i16", torch.int32: "i32", torch.int64: "i64",
    torch.uint8: "u8", torch.bool: "i1",
}


def dtype_short(dtype: torch.dtype) -> str:
    """Short name of a dtype for IR dumps.

    Example:
        >>> dtype_short(torch.bfloat16)
        'bf16'
    """
    return _SHORT.get(dtype, str(dtype).replace("torch.", ""))


@dataclass(frozen=True)
class Loc:
    """Where in the user's source a node came from."""

    filename: str
    lineno: int
    source: str

    def short(self) -> str:
        """``file.py:LINE``.

        Example:
            >>> Loc("/a/b/k.py", 3, "x = 1").short()
            'k.py:3'
        """
        return f"{self.filename.rsplit('/', 1)[-1]}:{self.lineno}"


class Dim:
    """A dimension of a block value."""

    def find(self) -> Dim:
        return self

    def same(self, other: Dim) -> bool:
        a, b = self.find(), other.find()
        if isinstance(a, ConstDim) and isinstance(b, ConstDim):
            return a.n == b.n
        if isinstance(a, FullDim) and isinstance(b, ConstDim):
            return a.static == b.n
        if isinstance(b, FullDim) and isinstance(a, ConstDim):
            return b.static == a.n
        return a is b


@dataclass(eq=False)
class TileInfo:
    """One tile loop variable: its block size (a config parameter or a fixed int) and range.

    ``begin``/``end`` are operands (a python int or a scalar :class:`Value`).
    """

    name: str
    param: int | None  # index into Config.block_sizes
    fixed: int | None  # block_size=<int>
    begin: Any
    end: Any
    grid: bool  # a launch-grid dimension (else an inner loop)
    dim: TileDim = field(init=False)

    def __post_init__(self) -> None:
        self.dim = TileDim(self)


class TileDim(Dim):
    """The block dimension of a tile loop variable."""

    def __init__(self, tile: TileInfo) -> None:
        self.tile = tile

    def __repr__(self) -> str:
        return self.tile.name


class FullDim(Dim):
    """A whole tensor dimension (``x[tm, :]``); unified with the full dims it meets."""

    def __init__(self, label: str, size: Any) -> None:
        self.id = next(_ids)
        self.label = label  # e.g. "x.size(1)"
        self.size = size  # operand: kernel-arg Value holding the runtime size
        self.parent: FullDim | None = None
        self.used_in_dot = False
        self.static: int | None = None  # known size (met a literal-size dim), checked at launch

    def find(self) -> FullDim:
        d = self
        while d.parent is not None:
            d = d.parent
        return d

    def union(self, other: FullDim) -> None:
        a, b = self.find(), other.find()
        if a is not b:
            if b.id < a.id:  # the first full dim written names the group
                a, b = b, a
            b.parent = a
            a.used_in_dot |= b.used_in_dot
            if b.static is not None:
                a.make_static(b.static)

    def make_static(self, n: int) -> None:
        """This full dim has size ``n`` (it met ``ts.zeros([.., n])``); checked at launch."""
        r = self.find()
        if r.static is not None and r.static != n:
            from torchship.kernels.errors import KernelTypeError

            raise KernelTypeError(f"the full dimension {r.label} is used as size {r.static} "
                                  f"and as size {n}")
        r.static = n

    def __repr__(self) -> str:
        return self.find().label


class ConstDim(Dim):
    """A literal size (1 for ``None``/``keepdim``)."""

    def __init__(self, n: int) -> None:
        self.n = int(n)

    def __repr__(self) -> str:
        return str(self.n)


class Value:
    """An SSA value: the result of a node, a kernel argument, or a loop-carried (phi) value."""

    __slots__ = ("dtype", "id", "name", "node", "shape", "weak")

    def __init__(
        self, shape: tuple[Dim, ...], dtype: torch.dtype, name: str = "", weak: bool = False
    ) -> None:
        self.id = next(_ids)
        self.shape = tuple(shape)
        self.dtype = dtype
        self.name = name
        self.node: Node | None = None
        self.weak = weak  # a python-scalar-like value (torch's weak type promotion)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def shape_str(self) -> str:
        """``f32[tm, 1]``."""
        return f"{dtype_short(self.dtype)}[{', '.join(repr(d) for d in self.shape)}]"

    def __repr__(self) -> str:
        return f"%{self.name or self.id}"


@dataclass(eq=False)
class Node:
    """One op application. ``inputs`` are Values or python constants; ``attrs`` are static."""

    op: str
    inputs: list[Any]
    attrs: dict[str, Any]
    out: Value | None
    loc: Loc | None

    def __repr__(self) -> str:
        args = ", ".join(repr(i) for i in self.inputs)
        extra = "".join(f", {k}={v!r}" for k, v in self.attrs.items() if not k.startswith("_"))
        lhs = f"{self.out!r}: {self.out.shape_str()} = " if self.out is not None else ""
        return f"{lhs}{self.op}({args}{extra})"


@dataclass(eq=False)
class Carried:
    """A loop-carried variable: value before the loop, the phi seen in the body, the value at
    the end of the body."""

    name: str
    init: Value
    phi: Value
    final: Value | None = None


@dataclass(eq=False)
class Loop:
    """An inner device loop over tiles (``ts.tile``) or scalars (``ts.grid``/``range``)."""

    tiles: list[TileInfo]  # empty for scalar loops
    scalar_vars: list[Value]  # for scalar loops: the loop index values
    begins: list[Any]
    ends: list[Any]
    body: list[Any]
    carried: list[Carried]
    loc: Loc | None


@dataclass(eq=False)
class Launch:
    """One kernel launch: grid dims (tiles or scalar indices), captured arguments, body."""

    index: int
    grid_tiles: list[TileInfo | Value]  # TileInfo per tile dim, scalar Value per grid dim
    begins: list[Any]
    ends: list[Any]
    body: list[Any]
    args: list[Any]  # frontend.device.KernelArg
    full_dims: list[FullDim]
    loc: Loc | None
    name: str = "kernel"

    def dump(self) -> str:
        """The launch as text (one node per line).

        Example:
            >>> Launch(0, [], [], [], [], [], [], None).dump().splitlines()[0]
            'launch 0 grid=[]'
        """
        lines = [f"launch {self.index} grid={self.grid_tiles!r}"]

        def walk(items: list[Any], indent: str) -> None:
            for it in items:
                if isinstance(it, Loop):
                    lines.append(f"{indent}loop {it.tiles or it.scalar_vars} carried="
                                 f"{[c.name for c in it.carried]}")
                    walk(it.body, indent + "  ")
                else:
                    lines.append(f"{indent}{it!r}")

        walk(self.body, "  ")
        return "\n".join(lines)
