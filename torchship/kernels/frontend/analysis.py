"""IR analyses the ConfigSpace needs: full dims (and whether they can be looped reductions),
block shapes per launch (for the element budget), dot use.

A full dim can be rolled into a looped reduction when (1) no loop-carried value contains it,
(2) every value containing it is only used in the loop region where it is defined (or deeper),
(3) no value contains it together with another full dim, and (4) no scan, sort (a top-k prefix too) or roll runs
along it. Then every value containing the
dim can be recomputed lazily inside the chunk loop of each consumer.

Example:
    >>> walk_nodes([])
    []
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torchship.kernels.ir import ConstDim, FullDim, Launch, Loop, Node, TileDim, Value
from torchship.kernels.ops.memory import index_shape


def walk_nodes(items: list[Any], path: tuple[int, ...] = ()) -> list[tuple[Node, tuple[int, ...]]]:
    """All nodes with the loop path (ids of enclosing loops) they sit in."""
    out: list[tuple[Node, tuple[int, ...]]] = []
    for it in items:
        if isinstance(it, Loop):
            out.extend(walk_nodes(it.body, (*path, id(it))))
        else:
            out.append((it, path))
    return out


def walk_loops(items: list[Any]) -> list[Loop]:
    out: list[Loop] = []
    for it in items:
        if isinstance(it, Loop):
            out.append(it)
            out.extend(walk_loops(it.body))
    return out


@dataclass
class FullDimInfo:
    root: FullDim
    rollable: bool
    in_dot: bool


def full_dims(launch: Launch) -> list[FullDimInfo]:
    """Distinct full-dim roots of a launch, in order of appearance."""
    roots: list[FullDim] = []
    for d in launch.full_dims:
        r = d.find()
        if all(r is not x for x in roots):
            roots.append(r)
    nodes = walk_nodes(launch.body)
    loops = walk_loops(launch.body)
    def_path: dict[int, tuple[int, ...]] = {}
    bad: set[int] = set()
    for node, path in nodes:
        if node.out is not None:
            def_path[node.out.id] = path
    for loop in loops:
        for c in loop.carried:
            for d in c.phi.shape:
                r = d.find()
                if isinstance(r, FullDim):
                    bad.add(r.id)
    for node, path in nodes:
        if node.op in ("scan", "sort_keys", "custom_reduce", "custom_scan", "roll",
                       "take_along"):
            # needs every element of the dim at once: never chunked
            dim = node.attrs["dim"] if node.op != "sort_keys" else -1
            r = node.inputs[0].shape[dim].find()
            if isinstance(r, FullDim):
                bad.add(r.id)
        if node.op == "topk_prefix":  # a whole top-k block relabelled: never chunked
            bad.add(node.out.shape[-1].find().id)
        shapes = [node.out.shape] if node.out is not None else []
        if node.op in ("store", "atomic_add", "load"):
            shapes.append(index_shape(node.attrs["index"]))
        for shape in shapes:
            rs = {d.find().id for d in shape if isinstance(d.find(), FullDim)}
            if len(rs) > 1:
                bad |= rs
        for inp in node.inputs:
            if isinstance(inp, Value) and inp.id in def_path:
                dp = def_path[inp.id]
                if path[: len(dp)] != dp:
                    for d in inp.shape:
                        if isinstance(d.find(), FullDim):
                            bad.add(d.find().id)
    for loop in loops:
        for c in loop.carried:
            for v in (c.init, c.final):
                if isinstance(v, Value):
                    for d in v.shape:
                        if isinstance(d.find(), FullDim):
                            bad.add(d.find().id)
    return [FullDimInfo(r, r.id not in bad and r.static is None, r.used_in_dot) for r in roots]


def value_shapes(launch: Launch) -> list[tuple[Any, ...]]:
    """Shapes of every block value and accessed block (for the element budget)."""
    out = []
    for node, _ in walk_nodes(launch.body):
        if node.out is not None and node.out.shape:
            out.append(node.out.shape)
        if node.op in ("store", "atomic_add"):
            out.append(index_shape(node.attrs["index"]))
    return out


def dim_key(d: Any, slot_of_root: dict[int, int]) -> tuple[str, int]:
    """('B', block param) | ('R', reduction slot) | ('C', size) for the element budget."""
    r = d.find()
    if isinstance(r, TileDim):
        if r.tile.param is not None:
            return ("B", r.tile.param)
        return ("C", r.tile.fixed)
    if isinstance(r, FullDim):
        return ("R", slot_of_root[r.id])
    assert isinstance(r, ConstDim)
    return ("C", r.n)
