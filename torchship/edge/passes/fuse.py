"""Activation fusion: ``relu``/``clamp`` after ``linear``, ``conv2d`` or float ``add`` folded in.

When the only reader of a linear/conv2d/add result is a ``relu`` or a ``clamp`` (and the result
is not a method output), the activation becomes the producer's ``clamp_min``/``clamp_max``
attributes (docs/edge-ops.md) and the instruction disappears: one step and one arena tensor
fewer, and the runtime clamps the output in place while it is still in cache.

Example:
    >>> from torchship.edge.graph import Graph
    >>> g = Graph("f"); x = g.add_input("x", "F32", [2, 3]); y = g.add_input("y", "F32", [2, 3])
    >>> s = g.emit("add", [x, y], "F32", [2, 3]); g.outputs = [g.emit("relu", [s], "F32", [2, 3])]
    >>> fuse_activations(g), [i.op for i in g.instrs], g.instrs[0].attrs
    (1, ['add'], {'clamp_min': 0.0, 'clamp_max': None})
"""

from __future__ import annotations

from torchship.edge.graph import Graph
from torchship.edge.runtime.dims import FLOATS

FUSABLE = ("linear", "conv2d", "add")


def _bounds(op: str, attrs: dict[str, object]) -> tuple[object, object] | None:
    if op == "relu":
        return 0.0, None
    if op == "clamp" and (attrs.get("min") is not None or attrs.get("max") is not None):
        return attrs.get("min"), attrs.get("max")
    return None


def fuse_activations(graph: Graph) -> int:
    """Fold single-use relu/clamp into the producing linear/conv2d/add; return the count fused.

    Example:
        >>> # see the module example
    """
    producer = {o: k for k, ins in enumerate(graph.instrs) for o in ins.outputs}
    users = graph.users()
    outputs = set(graph.outputs)
    drop: set[int] = set()
    for j, act in enumerate(graph.instrs):
        bounds = _bounds(act.op, act.attrs)
        if bounds is None or not act.inputs:
            continue
        src = act.inputs[0]
        k = producer.get(src)
        if k is None or src in outputs or len(users.get(src, [])) != 1:
            continue
        prod = graph.instrs[k]
        value, result = graph.values[src], graph.values[act.outputs[0]]
        if prod.op not in FUSABLE or value.dtype not in FLOATS or result.dtype != value.dtype or result.shape != value.shape:
            continue
        if prod.attrs.get("clamp_min") is not None or prod.attrs.get("clamp_max") is not None:
            continue
        prod.attrs = {**prod.attrs, "clamp_min": bounds[0], "clamp_max": bounds[1]}
        graph.replace_uses(act.outputs[0], src)
        drop.add(j)
    graph.instrs = [ins for j, ins in enumerate(graph.instrs) if j not in drop]
    return len(drop)
