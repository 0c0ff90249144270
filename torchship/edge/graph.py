"""The export-side IR: one method as values + instructions over the core op set (no torch).

Values are SSA: defined once (method input, constant, or an instruction output) and never
mutated. Shapes are lists of dims (int, symbol name, or ``[op, ...]`` expression; see
``torchship.edge.runtime.dims``). Passes rewrite a ``Graph`` in place.

Example:
    >>> import numpy as np
    >>> g = Graph("forward")
    >>> x = g.add_input("x", "F32", [2, 3])
    >>> y = g.emit("relu", [x], "F32", [2, 3])
    >>> g.outputs = [y]
    >>> print(g)
    forward(%0: F32[2, 3]) -> %1
      %1 = relu(%0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from torchship.edge.runtime.dims import dtype_name


@dataclass
class GValue:
    """A value: dtype, shape, and for constants the numpy data and a weight name."""

    name: str
    dtype: str
    shape: list[Any]
    const: np.ndarray | None = None
    is_input: bool = False


@dataclass
class GInstr:
    """An instruction over value ids."""

    op: str
    inputs: list[int]
    outputs: list[int]
    attrs: dict[str, Any] = field(default_factory=dict)
    source: str = ""


class Graph:
    """A method under construction or transformation.

    Example:
        >>> g = Graph("f"); c = g.add_const("w", np.ones(3, np.float32)); g.values[c].shape
        [3]
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.values: list[GValue] = []
        self.instrs: list[GInstr] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.output_tuple = False
        self.symbols: dict[str, tuple[int, int]] = {}
        self.example_env: dict[str, int] = {}

    def add_value(self, name: str, dtype: str, shape: list[Any]) -> int:
        """Add a value and return its id.

        Example:
            >>> Graph("f").add_value("t", "F32", [1])
            0
        """
        self.values.append(GValue(name, dtype, list(shape)))
        return len(self.values) - 1

    def add_input(self, name: str, dtype: str, shape: list[Any]) -> int:
        """Add a method input.

        Example:
            >>> Graph("f").add_input("x", "F32", ["s0", 4])
            0
        """
        vid = self.add_value(name, dtype, shape)
        self.values[vid].is_input = True
        self.inputs.append(vid)
        return vid

    def add_const(self, name: str, array: np.ndarray) -> int:
        """Add a constant (weight) value holding ``array`` (made contiguous, little-endian).

        Example:
            >>> g = Graph("f"); g.values[g.add_const("c", np.zeros((2, 2), np.float32))].dtype
            'F32'
        """
        arr = np.asarray(array, order="C")  # keeps 0-d (np.ascontiguousarray makes it 1-d)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        vid = self.add_value(name, dtype_name(arr.dtype), list(arr.shape))
        self.values[vid].const = arr
        return vid

    def emit(self, op: str, inputs: list[int], dtype: str, shape: list[Any], attrs: dict[str, Any] | None = None, source: str = "", name: str = "") -> int:
        """Append ``op`` with one output of ``dtype``/``shape``; return the output id.

        Example:
            >>> g = Graph("f"); x = g.add_input("x", "F32", [2]); g.emit("neg", [x], "F32", [2])
            1
        """
        out = self.add_value(name or f"t{len(self.values)}", dtype, shape)
        self.instrs.append(GInstr(op, list(inputs), [out], dict(attrs or {}), source))
        return out

    def users(self) -> dict[int, list[int]]:
        """Map value id -> indices of instructions reading it.

        Example:
            >>> Graph("f").users()
            {}
        """
        out: dict[int, list[int]] = {}
        for k, ins in enumerate(self.instrs):
            for x in ins.inputs:
                out.setdefault(x, []).append(k)
        return out

    def replace_uses(self, old: int, new: int) -> None:
        """Make every reader of ``old`` (and the outputs list) read ``new`` instead.

        Example:
            >>> g = Graph("f"); g.outputs = [0]; g.replace_uses(0, 1); g.outputs
            [1]
        """
        for ins in self.instrs:
            ins.inputs = [new if x == old else x for x in ins.inputs]
        self.outputs = [new if x == old else x for x in self.outputs]

    def __str__(self) -> str:
        def sig(v: int) -> str:
            val = self.values[v]
            return f"%{v}: {val.dtype}{val.shape}"

        lines = [f"{self.name}({', '.join(sig(v) for v in self.inputs)}) -> {', '.join(f'%{v}' for v in self.outputs)}"]
        for ins in self.instrs:
            attrs = ", ".join(f"{k}={v}" for k, v in ins.attrs.items())
            args = ", ".join(f"%{x}" for x in ins.inputs) + (f", {attrs}" if attrs else "")
            lines.append(f"  {', '.join(f'%{o}' for o in ins.outputs)} = {ins.op}({args})")
        return "\n".join(lines)
