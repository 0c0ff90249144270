"""Reductions, dots and looped-reduction chunk loops of the Triton code generator.

A mixin of :class:`~torchship.kernels.backends.triton.codegen.TritonCodegen`: reductions
re-mask padded lanes with their identity, dots mask the contracted dim with 0 (skipped when
the operand is a masked load), and a consumer of a rolled full dim gets a chunk loop that
recomputes the values it needs per chunk and folds the partial results into an accumulator.

Example:
    >>> hasattr(ReductionEmitter, "emit_chunk_loop")
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch

from torchship.kernels.ir import FullDim, Node, Value
from torchship.kernels.ops import reduce as red
from torchship.kernels.ops.matmul import compute_dtype, emit_dot


class ReductionEmitter:
    """Methods for reduce/dot nodes and chunk loops (state lives in TritonCodegen)."""

    # provided by TritonCodegen
    ctx: Any
    indent: int
    interpret: bool

    # ------------------------------------------------------------------ reductions / dots
    def masked_for(self, v: Value, pos: int, fill: str) -> str:
        """Operand ``v`` with lanes outside dim ``pos``'s mask set to ``fill``."""
        expr = self.ref(v)
        _, m, _ = self.dim_info(v.shape[pos])
        if m is None or (fill in ("0", "0.0") and _zero_padded(v, v.shape[pos])):
            return expr
        tmp = self.fresh(f"{v.name or 'v'}_masked")
        self.line(f"{tmp} = tl.where({self.expand(m, pos, v.ndim)}, {expr}, {fill})")
        return tmp

    def reduce_operand(self, node: Node) -> str:
        x = node.inputs[0]
        kind = node.attrs["kind"]
        work = red.work_dtype(kind, x.dtype)
        base = self.masked_for(x, node.attrs["dim"], red.identity(kind, x.dtype))
        return self.coerce(x, base, work)

    def reduce_expr(self, node: Node) -> str:
        x = node.inputs[0]
        expr = red.emit_part(self, node, self.reduce_operand(node))
        return self._finish_reduce(node, expr, x)

    def _finish_reduce(self, node: Node, expr: str, x: Value) -> str:
        kind = node.attrs["kind"]
        work = red.work_dtype(kind, x.dtype)
        out = node.out.dtype
        if red.KINDS[kind].index:
            return f"({expr}).to(tl.int64)"
        if work != out:
            return f"({expr}).to({self.tl(out)})"
        return expr

    def dot_operands(self, node: Node) -> tuple[str, str]:
        a, b = node.inputs[0], node.inputs[1]
        work = compute_dtype(a, b)
        if self.interpret and work == torch.bfloat16:
            work = torch.float32
        zero = "0.0" if work.is_floating_point else "0"
        ae = self.coerce(a, self.masked_for(a, a.ndim - 1, zero), work)
        be = self.coerce(b, self.masked_for(b, b.ndim - 2, zero), work)
        return ae, be

    def dot_expr(self, node: Node, acc: str | None) -> str:
        ae, be = self.dot_operands(node)
        acc_in = node.inputs[2] if len(node.inputs) > 2 else None
        work = compute_dtype(node.inputs[0], node.inputs[1])
        dot_out = torch.float64 if work == torch.float64 else \
            torch.int32 if not work.is_floating_point else torch.float32
        if acc is None and acc_in is not None:
            acc = self.coerce(acc_in, self.ref(acc_in), dot_out)
        expr = self.dot_call(node, ae, be, acc)
        if node.out.dtype != dot_out:
            expr = f"({expr}).to({self.tl(node.out.dtype)})"
        return expr

    def dot_call(self, node: Node, ae: str, be: str, acc: str | None) -> str:
        """``tl.dot``; a batched dot over one batch element runs as a 2-D dot (Triton's 3-D
        dot does not use the tensor cores' fast path)."""
        a, b = node.inputs[0], node.inputs[1]
        if a.ndim == 3 and self.block(a.shape[0]) == "1" and self.block(b.shape[0]) == "1":
            m, k = self.block(a.shape[1]), self.block(a.shape[2])
            n = self.block(b.shape[2])
            a2, b2 = f"tl.reshape({ae}, [{m}, {k}])", f"tl.reshape({be}, [{k}, {n}])"
            acc2 = f"tl.reshape({acc}, [{m}, {n}])" if acc is not None else None
            return f"tl.reshape({emit_dot(self, node, a2, b2, acc2)}, [1, {m}, {n}])"
        return emit_dot(self, node, ae, be, acc)

    # ------------------------------------------------------------------ chunk loops
    def emit_chunk_loop(self, node: Node, root: FullDim) -> None:
        chunk = self.chunk_of(root)
        size = self.ref(root.size)
        out = node.out
        acc = acc_i = None
        if node.op == "reduce":
            x = node.inputs[0]
            kind = node.attrs["kind"]
            work = red.work_dtype(kind, x.dtype)
            shape = self._shape_str(out.shape)
            acc = self.fresh(f"{out.name or 'v'}_acc")
            self.line(f"{acc} = tl.full({shape}, {red.identity(kind, x.dtype)}, "
                      f"{self.tl(work)})")
            if red.KINDS[kind].index:
                acc_i = self.fresh(f"{out.name or 'v'}_idx")
                self.line(f"{acc_i} = tl.zeros({shape}, tl.int32)")
        elif node.op == "dot":
            work = compute_dtype(node.inputs[0], node.inputs[1])
            dot_out = torch.float64 if work == torch.float64 else torch.float32
            acc = self.fresh(f"{out.name or 'v'}_acc")
            if len(node.inputs) > 2:
                self.line(f"{acc} = {self.coerce(node.inputs[2], self.ref(node.inputs[2]), dot_out)}")
            else:
                self.line(f"{acc} = tl.zeros({self._shape_str(out.shape)}, {self.tl(dot_out)})")
        off = self.fresh(f"{root.label.split('.')[0]}_roff")
        self.line(f"for {off} in tl.range(0, {size}, {chunk}):")
        self.indent += 1
        parent = self.ctx
        self.ctx = type(parent)(parent)  # a child context
        idx = self.fresh(f"{root.label.split('.')[0]}_r")
        mask = self.fresh(f"{idx}_mask")
        self.line(f"{idx} = {off} + tl.arange(0, {chunk})")
        self.line(f"{mask} = {idx} < {size}")
        self.ctx.dims[root.id] = (idx, mask, str(chunk), off)
        if node.op == "reduce":
            x = node.inputs[0]
            kind = node.attrs["kind"]
            part = red.emit_part(self, node, self.reduce_operand(node))
            if red.KINDS[kind].index:
                vfn = "tl.max" if red.KINDS[kind].larger else "tl.min"
                operand = self.reduce_operand(node)
                kd = ", keep_dims=True" if node.attrs["keepdim"] else ""
                cv = self.fresh("chunk_best")
                self.line(f"{cv} = {vfn}({operand}, axis={node.attrs['dim']}{kd})")
                ci = self.fresh("chunk_arg")
                self.line(f"{ci} = {part} + {off}")
                better = self.fresh("better")
                cmp = ">" if red.KINDS[kind].larger else "<"
                self.line(f"{better} = {cv} {cmp} {acc}")
                self.line(f"{acc_i} = tl.where({better}, {ci}, {acc_i})")
                self.line(f"{acc} = tl.where({better}, {cv}, {acc})")
            else:
                self.line(f"{acc} = {red.combine(kind, node.inputs[0].dtype, acc, part)}")
        elif node.op == "dot":
            ae, be = self.dot_operands(node)
            self.line(f"{acc} = {self.dot_call(node, ae, be, acc)}")
        else:
            self.emit_value_node(node)
        self.ctx = parent
        self.indent -= 1
        if out is None:
            return
        name = self.fresh(out.name or "v")
        if node.op == "reduce":
            x = node.inputs[0]
            if acc_i is not None:
                self.line(f"{name} = {acc_i}.to(tl.int64)")
            else:
                self.line(f"{name} = {self._finish_reduce(node, acc, x)}")
        else:
            work = compute_dtype(node.inputs[0], node.inputs[1])
            dot_out = torch.float64 if work == torch.float64 else torch.float32
            cast = f".to({self.tl(out.dtype)})" if out.dtype != dot_out else ""
            self.line(f"{name} = {acc}{cast}")
        self.ctx.names[out.id] = name

    def _shape_str(self, shape: tuple[Any, ...]) -> str:
        return "[" + ", ".join(self.block(d) for d in shape) + "]"


def _zero_padded(v: Value, d: Any) -> bool:
    """True when ``v``'s lanes outside dim ``d`` are known to be 0: a masked load (``other=0``),
    possibly cast or scaled by a finite python number or a 0-d value (``(x[tm, :] * s).to(...)``,
    e.g. attention's pre-scaled q), so dots need not re-mask it in every loop iteration."""
    node = v.node
    while node is not None and node.op in ("to", "mul"):
        if node.op == "mul":
            vals = [x for x in node.inputs if isinstance(x, Value) and x.ndim > 0]
            others = [x for x in node.inputs if not (isinstance(x, Value) and x.ndim > 0)]
            if len(vals) != 1 or not all(
                    isinstance(x, Value) or (isinstance(x, (int, float)) and math.isfinite(x))
                    for x in others):
                return False
            src: Any = vals[0]
        else:
            src = node.inputs[0]
        if not isinstance(src, Value):
            return False
        node = src.node
    if node is None or node.op != "load" or node.attrs.get("other", 0) != 0:
        return False
    return any(x.same(d) for x in node.out.shape)
