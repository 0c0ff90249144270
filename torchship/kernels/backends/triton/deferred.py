"""Deferred reductions: a loop-carried ``acc = acc + x.sum(dim)`` folded per element.

In a tile loop, ``acc = acc + block.sum(dim=1)`` reduces the block across its lanes on every
iteration: a tree of shuffles and, when the dim spans warps, a shared-memory round trip and a
barrier. When ``acc`` is used for nothing else in the loop, the reduction can wait: the
unmasked part of a peeled tile loop adds the blocks element-wise into a block-shaped
accumulator, and one reduction after the loop folds it into ``acc`` before the ragged last
block runs as written. The same holds for ``max``/``min``/``prod`` with their element-wise
combine. Cross entropy's picked-logit sum, ``long_sum`` and similar kernels lose one block
reduction per iteration (on an H100 the picked-logit sum alone cost 13% of cross entropy's
time at 8192 x 128256).

The accumulator costs registers: a reduction is deferred only when its block holds at most
``MAX_PER_THREAD`` values per thread under the config's block sizes and warps.

Example:
    >>> COMBINE_OP["sum"], COMBINE_OP["max"]
    ('add', 'maximum')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torchship.kernels.ir import ConstDim, Loop, Node, TileDim, Value
from torchship.kernels.ops import reduce as red

#: the element-wise op that folds a loop-carried value with a reduction of each kind
COMBINE_OP = {"sum": "add", "max": "maximum", "min": "minimum", "prod": "mul"}
#: largest deferred accumulator, in values per thread (32-bit registers for float32)
MAX_PER_THREAD = 32


@dataclass
class Deferral:
    """One deferred reduction: the reduce node, the combine node, the carried value's phi."""

    reduce: Node
    combine: Node
    phi: Value
    acc: str = ""


def _uses(items: list[Any], counts: dict[int, int]) -> None:
    """Count, per value id, how many node inputs / nested-loop bounds and carries use it."""
    for it in items:
        if isinstance(it, Loop):
            for v in [*it.begins, *it.ends, *(c.init for c in it.carried),
                      *(c.final for c in it.carried)]:
                if isinstance(v, Value):
                    counts[v.id] = counts.get(v.id, 0) + 1
            _uses(it.body, counts)
            continue
        for v in it.inputs:
            if isinstance(v, Value):
                counts[v.id] = counts.get(v.id, 0) + 1
        for v in it.attrs.values():
            if isinstance(v, Value):
                counts[v.id] = counts.get(v.id, 0) + 1


class DeferredReductions:
    """Methods of :class:`TritonCodegen` that plan and emit deferred reductions."""

    # provided by TritonCodegen
    config: Any
    constexprs: dict[str, str]
    ctx: Any
    deferred: dict[int, Deferral]

    def plan_deferred(self, loop: Loop) -> list[Deferral]:
        """The loop's carried values that only fold a reduction of a block each iteration."""
        counts: dict[int, int] = {}
        _uses(loop.body, counts)
        nodes = {id(n): n for n in loop.body if isinstance(n, Node)}
        plans: list[Deferral] = []
        for c in loop.carried:
            comb = c.final.node if isinstance(c.final, Value) else None
            if comb is None or id(comb) not in nodes or len(comb.inputs) != 2:
                continue
            other = [v for v in comb.inputs if v is not c.phi]
            r = other[0] if len(other) == 1 and isinstance(other[0], Value) else None
            node = r.node if r is not None else None
            if node is None or node.op != "reduce" or id(node) not in nodes:
                continue
            kind = node.attrs["kind"]
            x = node.inputs[0]
            if COMBINE_OP.get(kind) != comb.op or self.has_rolled(x) or \
                    not (c.phi.dtype == r.dtype == c.final.dtype == red.work_dtype(kind, x.dtype)) or \
                    len(c.phi.shape) != len(r.shape) or \
                    not all(a.same(b) for a, b in zip(c.phi.shape, r.shape)) or \
                    counts.get(c.phi.id) != 1 or \
                    counts.get(r.id) != 1 or counts.get(c.final.id, 0) != 0:
                continue
            blocks = [self._block_of(d, loop) for d in x.shape]
            if any(b is None for b in blocks):
                continue
            numel = 1
            for b in blocks:
                numel *= int(b[1])
            if numel > MAX_PER_THREAD * 32 * self.config.num_warps:
                continue
            plans.append(Deferral(node, comb, c.phi))
        return plans

    def _block_of(self, d: Any, loop: Loop) -> tuple[str, int] | None:
        """(block expression, its value) of dim ``d``: the loop's own tile is not open yet."""
        r = d.find()
        if isinstance(r, ConstDim):
            return str(r.n), r.n
        if isinstance(r, TileDim) and r.tile is loop.tiles[0]:
            expr = self.block_name(r.tile)
        elif isinstance(r, TileDim) and self.ctx.dim(id(r.tile)) is None:
            return None
        else:
            try:
                expr = self.block(d)
            except AssertionError:  # a dim not open here
                return None
        value = expr if expr.isdigit() else self.constexprs.get(expr, "")
        return (expr, int(value)) if value.isdigit() else None

    def open_deferred(self, loop: Loop, plans: list[Deferral]) -> None:
        """Before the unmasked loop: a block-shaped accumulator (the identity) per plan."""
        for p in plans:
            x = p.reduce.inputs[0]
            kind = p.reduce.attrs["kind"]
            work = red.work_dtype(kind, x.dtype)
            shape = ", ".join(self._block_of(d, loop)[0] for d in x.shape)
            p.acc = self.fresh(f"{p.phi.name or 'acc'}_lanes")
            self.line(f"{p.acc} = tl.full([{shape}], {red.identity(kind, work)}, {self.tl(work)})")
            self.deferred[id(p.reduce)] = p
            self.deferred[id(p.combine)] = p

    def close_deferred(self, plans: list[Deferral]) -> None:
        """After the unmasked loop: fold each accumulator into its carried value."""
        for p in plans:
            kind = p.reduce.attrs["kind"]
            name = self.ctx.names[p.phi.id]
            part = red.emit_part(self, p.reduce, p.acc)
            self.line(f"{name} = {red.KINDS[kind].combine.format(acc=name, part=part)}")
            del self.deferred[id(p.reduce)], self.deferred[id(p.combine)]

    def emit_deferred(self, node: Node) -> None:
        """Inside the unmasked loop: the reduce folds its block into the accumulator; the
        combine becomes the carried value itself (it is folded after the loop)."""
        p = self.deferred[id(node)]
        if node is p.reduce:
            self.comment_for(node)
            part = self.reduce_operand(node)
            kind = node.attrs["kind"]
            self.line(f"{p.acc} = {red.KINDS[kind].combine.format(acc=p.acc, part=part)}")
        else:
            self.ctx.names[node.out.id] = self.ctx.names[p.phi.id]
