"""Inverted-residual fusion: 1x1 conv -> depthwise conv -> 1x1 conv [-> + x] as one ``fused_mbconv``.

Runs after ``fuse_activations`` (so the ReLU/ReLU6 after each conv already sits in its
``clamp_min``/``clamp_max``) and only on the exact pattern, all float32 with constant weights:

- ``h = conv2d(x, w1[, b1])``: 1x1, stride 1, no padding, dilation 1, groups 1; its clamp (if
  any) must contain 0; ``h`` read by the depthwise conv only and not a method output;
- ``d = conv2d(h, wd[, bd])``: depthwise (``groups`` = channels of ``h``, weight
  ``[Ch, 1, kh, kw]``), any stride/padding/dilation, optional clamp; ``d`` read only by
- ``y = conv2d(d, w3[, b3])``: 1x1 as the first, optional clamp;
- optionally ``z = add(x, y)`` or ``add(y, x)`` with the chain's own input ``x``, same shape,
  when ``y`` has no clamp, is read only by that add and is not a method output.

Missing biases become zero constants. The hidden maps ``h`` and ``d`` disappear from the graph,
so the memory plan never holds them. int8 programs keep the unfused chain (the pass runs before
quantisation only when no quantisation is asked for; see ``run_passes``).

Example:
    >>> import numpy as np
    >>> from torchship.edge.graph import Graph
    >>> g = Graph("f"); x = g.add_input("x", "F32", [1, 4, 5, 5])
    >>> one = {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1}
    >>> w = lambda *s: g.add_const("w", np.ones(s, np.float32))
    >>> h = g.emit("conv2d", [x, w(8, 4, 1, 1)], "F32", [1, 8, 5, 5], {**one, "clamp_min": 0.0})
    >>> d = g.emit("conv2d", [h, w(8, 1, 3, 3)], "F32", [1, 8, 5, 5], {**one, "padding": [1, 1], "groups": 8})
    >>> y = g.emit("conv2d", [d, w(4, 8, 1, 1)], "F32", [1, 4, 5, 5], one)
    >>> g.outputs = [g.emit("add", [x, y], "F32", [1, 4, 5, 5])]
    >>> fuse_mbconv(g), [i.op for i in g.instrs], g.instrs[0].attrs["residual"]
    (1, ['fused_mbconv'], True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torchship.edge.graph import GInstr, Graph
from torchship.edge.runtime import mbconv as _op  # noqa: F401  (registers fused_mbconv)

_CLAMP = ("clamp_min", "clamp_max")


def _plain(attrs: dict[str, Any]) -> bool:
    """A 1x1 conv's geometry is the identity (stride 1, no padding, dilation 1, one group)."""
    return list(attrs.get("stride", [1, 1])) == [1, 1] and list(attrs.get("padding", [0, 0])) == [0, 0] and list(attrs.get("dilation", [1, 1])) == [1, 1] and attrs.get("groups", 1) == 1


def _const(graph: Graph, vid: int) -> bool:
    return graph.values[vid].const is not None


class _Chain:
    """Finds and rewrites the pattern; one instance per pass run."""

    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.producer = {o: k for k, ins in enumerate(graph.instrs) for o in ins.outputs}
        self.users = graph.users()
        self.outputs = set(graph.outputs)

    def _only_reader(self, vid: int, k: int) -> bool:
        """``vid`` is read by instruction ``k`` alone (once) and is not a method output."""
        return vid not in self.outputs and self.users.get(vid, []) == [k]

    def _conv(self, k: int) -> GInstr | None:
        ins = self.g.instrs[k]
        if ins.op != "conv2d" or not all(_const(self.g, v) for v in ins.inputs[1:]):
            return None
        if any(self.g.values[v].dtype != "F32" for v in (*ins.inputs, *ins.outputs)):
            return None
        return ins

    def match(self, k3: int) -> tuple[int, int, int, int | None] | None:
        """Instruction indices (expand, depthwise, project, residual add or None) ending at ``k3``."""
        g = self.g
        proj = self._conv(k3)
        if proj is None or not _plain(proj.attrs) or g.values[proj.inputs[1]].shape[2:] != [1, 1]:
            return None
        k2 = self.producer.get(proj.inputs[0])
        dw = None if k2 is None or not self._only_reader(proj.inputs[0], k3) else self._conv(k2)
        if dw is None:
            return None
        wd = g.values[dw.inputs[1]].shape
        ch = g.values[dw.inputs[0]].shape[1]
        if dw.attrs.get("groups", 1) != ch or wd[:2] != [ch, 1]:
            return None
        k1 = self.producer.get(dw.inputs[0])
        exp = None if k1 is None or not self._only_reader(dw.inputs[0], k2) else self._conv(k1)
        if exp is None or not _plain(exp.attrs) or g.values[exp.inputs[1]].shape[2:] != [1, 1]:
            return None
        lo, hi = exp.attrs.get("clamp_min"), exp.attrs.get("clamp_max")
        if (lo is not None and float(lo) > 0) or (hi is not None and float(hi) < 0):
            return None  # the fused op pads the clamped map with zeros: 0 must be a fixed point
        return k1, k2, k3, self._residual(exp.inputs[0], k3)

    def _residual(self, x: int, k3: int) -> int | None:
        g, y = self.g, self.g.instrs[k3].outputs[0]
        if any(g.instrs[k3].attrs.get(c) is not None for c in _CLAMP) or y in self.outputs:
            return None
        readers = self.users.get(y, [])
        if len(readers) != 1:
            return None
        add = g.instrs[readers[0]]
        same = g.values[add.outputs[0]].shape == g.values[y].shape == g.values[x].shape
        if add.op != "add" or sorted(add.inputs) != sorted([x, y]) or x == y or not same:
            return None
        return readers[0]

    def _bias(self, conv: GInstr) -> int:
        if len(conv.inputs) == 3:
            return conv.inputs[2]
        n = self.g.values[conv.inputs[1]].shape[0]
        return self.g.add_const(f"{self.g.values[conv.inputs[1]].name}.zero_bias", np.zeros(n, np.float32))

    def fuse(self, k1: int, k2: int, k3: int, k4: int | None) -> GInstr:
        g = self.g
        exp, dw, proj = g.instrs[k1], g.instrs[k2], g.instrs[k3]
        last = proj if k4 is None else g.instrs[k4]
        attrs = {
            "stride": list(dw.attrs.get("stride", [1, 1])),
            "padding": list(dw.attrs.get("padding", [0, 0])),
            "dilation": list(dw.attrs.get("dilation", [1, 1])),
            "expand_min": exp.attrs.get("clamp_min"),
            "expand_max": exp.attrs.get("clamp_max"),
            "depthwise_min": dw.attrs.get("clamp_min"),
            "depthwise_max": dw.attrs.get("clamp_max"),
            "residual": k4 is not None,
            "clamp_min": last.attrs.get("clamp_min"),
            "clamp_max": last.attrs.get("clamp_max"),
        }
        inputs = [exp.inputs[0], exp.inputs[1], self._bias(exp), dw.inputs[1], self._bias(dw), proj.inputs[1], self._bias(proj)]
        return GInstr("fused_mbconv", inputs, list(last.outputs), attrs, proj.source or exp.source)


def fuse_mbconv(graph: Graph) -> int:
    """Replace each float32 expand -> depthwise -> project [-> residual add] chain by one
    ``fused_mbconv``; return the number of chains fused.

    Example:
        >>> # see the module example
    """
    chain = _Chain(graph)
    replace: dict[int, GInstr] = {}
    drop: set[int] = set()
    for k in range(len(graph.instrs)):
        found = chain.match(k)
        if found is None or drop.intersection(i for i in found if i is not None):
            continue
        k1, k2, k3, k4 = found
        last = k3 if k4 is None else k4
        replace[last] = chain.fuse(k1, k2, k3, k4)
        drop.update(i for i in (k1, k2, k3, k4) if i is not None and i != last)
    graph.instrs = [replace.get(k, ins) for k, ins in enumerate(graph.instrs) if k not in drop]
    return len(replace)
