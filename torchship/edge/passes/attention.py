"""Multi-head attention fusion: the per-head core of self/cross attention as one ``attention`` op.

Runs after ``cleanup.simplify`` (reshape chains and permute-of-permute collapsed) and only on the
exact float32 pattern, which is what ``torch.export`` gives for the usual
``q.view(b, s, h, d).transpose(1, 2)`` code and for the lowering of
``scaled_dot_product_attention``:

- ``Qh = permute(reshape(Xq, [B, Sq, H, D]), [0, 2, 1, 3])``, ``Kt = permute(reshape(Xk, [B,
  Sk, H, D]), [0, 2, 3, 1])``, ``Vh = permute(reshape(Xv, [B, Sk, H, D]), [0, 2, 1, 3])``, where
  each ``X`` is ``[B, S, H*D]`` and may be a ``slice`` (step 1, static bounds) of the last axis
  of a packed ``[B, S, C]`` tensor (then the op reads the packed tensor at that offset); a
  ``[B, S, H, D]`` source made otherwise (llama's complex rotary embedding, grouped-query
  heads repeated by ``expand``) is read through a new ``reshape`` to ``[B, S, H*D]``;
- ``s = matmul(Qh, Kt)``; ``s = mul(s, c)``, ``mul(c, s)`` or ``div(s, c)`` with a one-element
  constant ``c``; optionally ``s = add(s, bias)`` or ``add(bias, s)`` with ``bias``
  broadcasting to ``[B, H, Sq, Sk]``; ``p = softmax(s, axis=-1)``;
- ``y = reshape(permute(matmul(p, Vh), [0, 2, 1, 3]), [B, Sq, H*D])``;
- every intermediate from ``s`` to the permute read only by the next step and not a method
  output.

``div`` by ``c`` becomes ``scale = 1 / c`` (the op multiplies: a rounding difference of an ulp).
The replaced per-head permutes and slices die in ``dce`` unless something else reads them.

Example:
    >>> import numpy as np
    >>> from torchship.edge.graph import Graph
    >>> g = Graph("f"); x = g.add_input("x", "F32", [1, 3, 8])
    >>> def heads(perm):
    ...     r = g.emit("reshape", [x], "F32", [1, 3, 2, 4], {"shape": [1, 3, 2, 4]})
    ...     return g.emit("permute", [r], "F32", [[1, 3, 2, 4][p] for p in perm], {"perm": perm})
    >>> q, kt, v = heads([0, 2, 1, 3]), heads([0, 2, 3, 1]), heads([0, 2, 1, 3])
    >>> s = g.emit("matmul", [q, kt], "F32", [1, 2, 3, 3])
    >>> s = g.emit("div", [s, g.add_const("c", np.array(2.0, np.float32))], "F32", [1, 2, 3, 3])
    >>> p = g.emit("softmax", [s], "F32", [1, 2, 3, 3], {"axis": -1})
    >>> y = g.emit("permute", [g.emit("matmul", [p, v], "F32", [1, 2, 3, 4])], "F32", [1, 3, 2, 4], {"perm": [0, 2, 1, 3]})
    >>> g.outputs = [g.emit("reshape", [y], "F32", [1, 3, 8], {"shape": [1, 3, 8]})]
    >>> fuse_attention(g), g.instrs[-1].op, g.instrs[-1].attrs["scale"]
    (1, 'attention', 0.5)
"""

from __future__ import annotations

from typing import Any

from torchship.edge.graph import GInstr, Graph
from torchship.edge.runtime import attention as _op  # noqa: F401  (registers attention)

_HEADS = [0, 2, 1, 3]
_KEYS_T = [0, 2, 3, 1]


class _Attention:
    """Finds and rewrites the pattern; one instance per pass run."""

    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.producer = {o: k for k, ins in enumerate(graph.instrs) for o in ins.outputs}
        self.users = graph.users()
        self.outputs = set(graph.outputs)
        self.views: list[int] = []  # [B, S, H, D] sources the current match must pack

    def _made_by(self, vid: int, op: str, reader: int | None = None) -> tuple[int, GInstr] | None:
        """The instruction defining ``vid`` when it is ``op`` on float32 values (and, with
        ``reader``, ``vid`` is read by that instruction alone, once, and is not an output)."""
        k = self.producer.get(vid)
        if k is None or self.g.instrs[k].op != op:
            return None
        ins = self.g.instrs[k]
        if any(self.g.values[v].dtype != "F32" for v in (*ins.inputs, *ins.outputs)):
            return None
        if reader is not None and (vid in self.outputs or self.users.get(vid, []) != [reader]):
            return None
        return k, ins

    def _heads(self, vid: int, perm: list[int]) -> tuple[int, int, int, int, Any] | None:
        """(packed input, column offset, heads, head_dim, rows) of a per-head permuted view.

        A ``[B, S, H, D]`` source that is not a reshape of a ``[B, S, H*D]`` tensor (rotary
        embeddings written with complex numbers or halves, grouped-query heads repeated with
        ``expand``) gets a new ``reshape`` to ``[B, S, H*D]`` (a view of the contiguous
        source), queued in ``self.views`` for the rewrite."""
        found = self._made_by(vid, "permute")
        if found is None or list(found[1].attrs["perm"]) != perm:
            return None
        src = found[1].inputs[0]
        ss = self.g.values[src].shape
        if len(ss) != 4 or not all(isinstance(d, int) for d in ss[2:]):
            return None
        found = self._made_by(src, "reshape")
        x = found[1].inputs[0] if found is not None else None
        xs = self.g.values[x].shape if x is not None else []
        if len(xs) != 3 or xs[:2] != ss[:2] or not isinstance(xs[2], int) or ss[2] * ss[3] != xs[2]:
            self.views.append(src)  # packed by a reshape once the whole pattern matched
            return -len(self.views), 0, ss[2], ss[3], ss[1]
        rs = ss
        offset = 0
        sl = self._made_by(x, "slice")
        if sl is not None:
            a, src = sl[1].attrs, sl[1].inputs[0]
            bounds = isinstance(a["start"], int) and isinstance(a["end"], int) and a.get("step", 1) == 1
            if bounds and a["axis"] in (2, -1) and len(self.g.values[src].shape) == 3 and a["start"] >= 0:
                x, offset = src, a["start"]
        return x, offset, rs[2], rs[3], rs[1]

    def _scale(self, ins: GInstr) -> tuple[float, int] | None:
        """(factor, scores) of ``mul(s, c)``/``mul(c, s)``/``div(s, c)``, c a one-element constant."""
        vals = [self.g.values[v] for v in ins.inputs]
        one = [v.const is not None and v.const.size == 1 for v in vals]
        if ins.op == "div" and one == [False, True]:
            return 1.0 / float(vals[1].const.reshape(())), ins.inputs[0]
        if ins.op == "mul" and sorted(one) == [False, True]:
            c = vals[one.index(True)].const
            return float(c.reshape(())), ins.inputs[one.index(False)]
        return None

    def match(self, k: int) -> tuple[list[int], list[GInstr]] | None:
        """(instruction indices replaced, the new instructions: packing reshapes and the
        ``attention``) for the pattern ending with the reshape at ``k``."""
        self.views = []
        g, end = self.g, self.g.instrs[k]
        if end.op != "reshape" or len(g.values[end.outputs[0]].shape) != 3:
            return None
        back = self._made_by(end.inputs[0], "permute", k)
        if back is None or list(back[1].attrs["perm"]) != _HEADS:
            return None
        pv = self._made_by(back[1].inputs[0], "matmul", back[0])
        if pv is None:
            return None
        sm = self._made_by(pv[1].inputs[0], "softmax", pv[0])
        if sm is None or sm[1].attrs["axis"] not in (-1, 3) or pv[1].inputs[0] == pv[1].inputs[1]:
            return None
        chain, s, bias = [k, back[0], pv[0], sm[0]], sm[1].inputs[0], None
        add = self._made_by(s, "add", sm[0])
        if add is not None:
            scores = g.values[add[1].outputs[0]].shape
            for a, b in (add[1].inputs, add[1].inputs[::-1]):
                if self._made_by(a, "mul", add[0]) or self._made_by(a, "div", add[0]):
                    s, bias = a, b
                    break
            if bias is None or bias == s or len(g.values[bias].shape) > 4 or g.values[s].shape != scores:
                return None
            chain.append(add[0])
        sc = self._made_by(s, "mul", chain[-1]) or self._made_by(s, "div", chain[-1])
        factor = None if sc is None else self._scale(sc[1])
        qk = None if sc is None or factor is None else self._made_by(factor[1], "matmul", sc[0])
        if factor is None or qk is None:
            return None
        chain += [sc[0], qk[0]]
        q, kt, v = self._heads(qk[1].inputs[0], _HEADS), self._heads(qk[1].inputs[1], _KEYS_T), self._heads(pv[1].inputs[1], _HEADS)
        if q is None or kt is None or v is None or q[2:4] != kt[2:4] or q[2:4] != v[2:4] or kt[4] != v[4]:
            return None
        if len({str(g.values[x[0]].shape[0]) for x in (q, kt, v)}) != 1:
            return None  # one batch (matmul would broadcast a batch of 1)
        heads, hd = q[2], q[3]
        if g.values[end.outputs[0]].shape != [*g.values[qk[1].outputs[0]].shape[:1], q[4], heads * hd]:
            return None
        attrs = {"heads": heads, "head_dim": hd, "scale": factor[0], "q_offset": q[1], "k_offset": kt[1], "v_offset": v[1]}
        inputs = [q[0], kt[0], v[0]] + ([] if bias is None else [bias])
        source = sm[1].source or end.source
        packs = []
        for n, src in enumerate(self.views, 1):  # placeholder -n: a view of src as [B, S, H*D]
            ss = g.values[src].shape
            flat = [*ss[:2], ss[2] * ss[3]]
            vid = g.add_value(f"{g.values[src].name}.packed", "F32", flat)
            packs.append(GInstr("reshape", [src], [vid], {"shape": flat}, source))
            inputs = [vid if i == -n else i for i in inputs]
        return chain, [*packs, GInstr("attention", inputs, list(end.outputs), attrs, source)]


def fuse_attention(graph: Graph) -> int:
    """Replace each float32 multi-head attention core by one ``attention``; return the count.

    Example:
        >>> # see the module example
    """
    found = _Attention(graph)
    replace: dict[int, list[GInstr]] = {}
    drop: set[int] = set()
    for k in range(len(graph.instrs)):
        hit = found.match(k)
        if hit is None or drop.intersection(hit[0]):
            continue
        replace[k] = hit[1]
        drop.update(i for i in hit[0] if i != k)
    graph.instrs = [new for k, ins in enumerate(graph.instrs) if k not in drop
                    for new in replace.get(k, [ins])]
    return len(replace)
