"""Memory planning: tensor lifetimes, best-fit offsets in one arena, 64-byte alignment.

Every non-constant value that owns storage (method inputs and instruction outputs, except
``reshape`` views which alias their source) gets a slot sized for the upper bound of its shape
(each symbol at its maximum). Slots are placed greedily, largest first, each at the offset of
the smallest gap left by already placed tensors whose lifetimes overlap (best fit).

Example:
    >>> from torchship.edge.graph import Graph
    >>> g = Graph("f"); x = g.add_input("x", "F32", [16])
    >>> a = g.emit("relu", [x], "F32", [16]); b = g.emit("neg", [a], "F32", [16])
    >>> c = g.emit("exp", [b], "F32", [16]); g.outputs = [c]
    >>> p = plan(g); p.arena_size, p.tensor_bytes   # x and b share, a and c share
    (128, 256)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torchship.edge.graph import Graph
from torchship.edge.runtime import nn_ops, ops  # noqa: F401
from torchship.edge.runtime.dims import evaluate_shape, nbytes
from torchship.edge.runtime.registry import OPS

ALIGN = 64


@dataclass
class MemoryPlan:
    """Offsets and sizes per value, arena size, and the no-reuse total for comparison."""

    offsets: dict[int, int] = field(default_factory=dict)
    sizes: dict[int, int] = field(default_factory=dict)
    lifetimes: dict[int, tuple[int, int]] = field(default_factory=dict)
    arena_size: int = 0
    tensor_bytes: int = 0


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def lifetimes(graph: Graph) -> dict[int, tuple[int, int]]:
    """[first, last] instruction index per storage-owning value (inputs start at -1).

    Example:
        >>> # views extend their source's lifetime; method outputs live to the end
    """
    root = list(range(len(graph.values)))
    life: dict[int, list[int]] = {v: [-1, -1] for v in graph.inputs}
    for k, ins in enumerate(graph.instrs):
        for x in ins.inputs:
            if root[x] in life:
                life[root[x]][1] = k
        for o in ins.outputs:
            if OPS[ins.op].alias:
                root[o] = root[ins.inputs[0]]
            else:
                life[o] = [k, k]
    for v in graph.outputs:
        if root[v] in life:
            life[root[v]][1] = len(graph.instrs)
    return {v: (a, b) for v, (a, b) in life.items()}


def plan(graph: Graph) -> MemoryPlan:
    """Assign arena offsets to ``graph``'s values (greedy by size, best fit).

    Example:
        >>> # see the module example
    """
    upper = {s: hi for s, (_, hi) in graph.symbols.items()}
    life = lifetimes(graph)
    result = MemoryPlan(lifetimes=life)
    for v in life:
        val = graph.values[v]
        result.sizes[v] = _align(nbytes(val.dtype, evaluate_shape(val.shape, upper)))
    result.tensor_bytes = sum(result.sizes.values())
    placed: list[tuple[int, int, int, int]] = []  # offset, size, start, end
    for v in sorted(life, key=lambda x: (-result.sizes[x], life[x][0], x)):
        size = result.sizes[v]
        start, end = life[v]
        if size == 0:
            result.offsets[v] = 0
            continue
        busy = sorted((o, o + s) for o, s, a, b in placed if a <= end and start <= b)
        best, best_gap, cursor = None, None, 0
        for lo, hi in busy:
            gap = lo - cursor
            if gap >= size and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, hi)
        offset = best if best is not None else cursor
        result.offsets[v] = offset
        placed.append((offset, size, start, end))
        result.arena_size = max(result.arena_size, offset + size)
    return result
