"""View/identity elimination and dead-code elimination.

Example:
    >>> from torchship.edge.graph import Graph
    >>> g = Graph("f"); x = g.add_input("x", "F32", [2, 3])
    >>> y = g.emit("reshape", [x], "F32", [6], {"shape": [6]})
    >>> z = g.emit("reshape", [y], "F32", [2, 3], {"shape": [2, 3]}); g.outputs = [z]
    >>> _ = simplify(g), dce(g)
    >>> g.outputs, len(g.instrs)
    ([0], 0)
    >>> g = Graph("f"); x = g.add_input("x", "F32", [2, 3, 4])
    >>> y = g.emit("permute", [x], "F32", [3, 2, 4], {"perm": [1, 0, 2]})
    >>> g.outputs = [g.emit("permute", [y], "F32", [3, 4, 2], {"perm": [0, 2, 1]})]
    >>> _ = simplify(g), dce(g)
    >>> [(i.op, i.inputs, i.attrs["perm"]) for i in g.instrs]
    [('permute', [0], [1, 2, 0])]
"""

from __future__ import annotations

from torchship.edge.graph import Graph


def _identity(graph: Graph, k: int) -> int | None:
    """The input this instruction merely forwards, or None."""
    ins = graph.instrs[k]
    if not ins.inputs:
        return None
    src = graph.values[ins.inputs[0]]
    out = graph.values[ins.outputs[0]]
    same = src.shape == out.shape and src.dtype == out.dtype
    if ins.op in ("reshape", "expand", "copy", "cast") and same:
        return ins.inputs[0]
    if ins.op == "permute" and ins.attrs["perm"] == sorted(ins.attrs["perm"]):
        return ins.inputs[0]
    if ins.op == "slice" and same and ins.attrs.get("step", 1) == 1:
        return ins.inputs[0]
    if ins.op == "concat" and len(ins.inputs) == 1:
        return ins.inputs[0]
    return None


def simplify(graph: Graph) -> int:
    """Remove identity instructions, collapse reshape-of-reshape and permute-of-permute; return
    the count removed.

    Reshapes become aliases at run time (no copy), so only real data movement remains.

    Example:
        >>> # see the module example
    """
    producer = {o: k for k, ins in enumerate(graph.instrs) for o in ins.outputs}
    removed = 0
    keep = []
    for k, ins in enumerate(graph.instrs):
        if ins.op == "reshape":
            src = ins.inputs[0]
            while src in producer and graph.instrs[producer[src]].op == "reshape":
                src = graph.instrs[producer[src]].inputs[0]
            ins.inputs = [src]
        if ins.op == "permute":  # permute of a permute: one permute (the inner one may die in dce)
            src, perm = ins.inputs[0], list(ins.attrs["perm"])
            while src in producer and graph.instrs[producer[src]].op == "permute":
                inner = graph.instrs[producer[src]]
                perm = [inner.attrs["perm"][p] for p in perm]
                src = inner.inputs[0]
            ins.inputs, ins.attrs = [src], {**ins.attrs, "perm": perm}
        fwd = _identity(graph, k)
        if fwd is not None:
            graph.replace_uses(ins.outputs[0], fwd)
            removed += 1
            continue
        keep.append(ins)
    graph.instrs = keep
    return removed


def dce(graph: Graph) -> int:
    """Drop instructions whose results are never used and constants nobody reads.

    Example:
        >>> # see the module example
    """
    live = set(graph.outputs)
    keep = []
    for ins in reversed(graph.instrs):
        if any(o in live for o in ins.outputs):
            keep.append(ins)
            live.update(ins.inputs)
    removed = len(graph.instrs) - len(keep)
    graph.instrs = keep[::-1]
    for vid, v in enumerate(graph.values):
        if v.const is not None and vid not in live:
            v.const = None  # unreferenced: will not be written
            v.name = f"dead:{v.name}"
    return removed
