"""User combine functions: ``ts.reduce(fn, x, dim)`` and ``ts.associative_scan(fn, x, dim)``.

The frontend traces ``fn`` (a plain ``def`` of two values, or of two tuples of values) on
0-d placeholder values into a :class:`CombineFn`: straight-line element-wise nodes. The code
generator writes it once per kernel as a module-level ``@triton.jit`` function (the nodes
emitted by the kernel's own emitters into a separate line buffer) and passes it to
``tl.reduce``/``tl.associative_scan``. Tuple inputs reduce together (an argmax with its
index); each output is its own node (``attrs["output"]``), so a tuple reduction is computed
once per output. Padded lanes of the reduced dim (and, for a reverse scan, of the scanned
dim) hold ``other`` (one number per input), which must be ``fn``'s identity; half types
combine in float32.

Example:
    >>> import torch
    >>> from torchship.kernels.ir import ConstDim, Value
    >>> from torchship.kernels.ops import OPS
    >>> x = Value((ConstDim(4), ConstDim(8)), torch.float16)
    >>> fn = CombineFn([], [], [])
    >>> attrs = {"fn": fn, "dim": 1, "keepdim": False, "output": 0, "other": (0,)}
    >>> OPS["custom_reduce"].infer([x], attrs)
    ((4,), torch.float16)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from torchship.kernels.ir import Node, Value
from torchship.kernels.ops import OpDef, register

_HALF = (torch.float16, torch.bfloat16)


@dataclass(eq=False)
class CombineFn:
    """A traced combine function: ``params`` (0-d values: the left operands, then the right
    ones), ``body`` (element-wise nodes), ``results`` (one value per input)."""

    params: list[Value]
    body: list[Node]
    results: list[Value]
    names: dict[int, str] = field(default_factory=dict)  # id(codegen) -> helper name

    def __repr__(self) -> str:
        return f"<combine fn of {len(self.results)}>"


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a combine function sees for an input of ``dtype`` (half types: float32).

    Example:
        >>> work_dtype(torch.bfloat16), work_dtype(torch.int32)
        (torch.float32, torch.int32)
    """
    return torch.float32 if dtype in _HALF else dtype


def helper_name(cg: Any, fn: CombineFn) -> str:
    """Write ``fn`` as a module-level ``@triton.jit`` function of the generated kernel (once
    per kernel) and return its name."""
    name = fn.names.get(id(cg))
    if name is not None and name in cg.helpers:
        return name
    name = cg.fresh(f"_ts_combine{len(cg.helpers)}")
    saved = cg.lines, cg.indent, cg.ctx, cg.last_loc
    cg.lines, cg.indent, cg.ctx = [], 1, type(cg.ctx)()
    try:
        params = []
        for p in fn.params:
            params.append(cg.fresh(p.name or "v"))
            cg.ctx.names[p.id] = params[-1]
        for node in fn.body:
            cg.emit_value_node(node)
        results = [cg.ref(r) for r in fn.results]
        cg.line(f"return {', '.join(results)}")
        body = cg.lines
    finally:
        cg.lines, cg.indent, cg.ctx, cg.last_loc = saved
    cg.helpers[name] = "\n".join([f"@triton.jit\ndef {name}({', '.join(params)}):", *body,
                                  "", ""])
    fn.names[id(cg)] = name
    return name


def _infer(keep_axis: bool) -> Any:
    def infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
        x = inputs[attrs["output"]]
        shape = list(x.shape)
        if not keep_axis and not attrs["keepdim"]:
            del shape[attrs["dim"]]
        elif not keep_axis:
            from torchship.kernels.ir import ConstDim

            shape[attrs["dim"]] = ConstDim(1)
        return tuple(shape), x.dtype

    return infer


def _operands(cg: Any, node: Any, masked: bool) -> str:
    """The inputs in the work dtype, padded lanes of the dim set to ``other`` if ``masked``."""
    dim = node.attrs["dim"]
    out = []
    for x, other in zip(node.inputs, node.attrs["other"]):
        expr = cg.masked_for(x, dim, cg.literal(other)) if masked else cg.ref(x)
        out.append(cg.coerce(x, expr, work_dtype(x.dtype)))
    return out[0] if len(out) == 1 else f"({', '.join(out)})"


def _finish(cg: Any, node: Any, expr: str, single: bool = False) -> str:
    if len(node.inputs) > 1 and not single:
        expr = f"{expr}[{node.attrs['output']}]"
    out = node.out.dtype
    return expr if work_dtype(out) == out else f"({expr}).to({cg.tl(out)})"


def _reduce_emit(cg: Any, node: Any, args: list[str]) -> str:
    fn = helper_name(cg, node.attrs["fn"])
    kd = ", keep_dims=True" if node.attrs["keepdim"] else ""
    dim = node.attrs["dim"]
    if not node.attrs.get("ordered"):
        return _finish(cg, node, f"tl.reduce({_operands(cg, node, True)}, {dim}, {fn}{kd})")
    # A combine function that is not commutative: on a GPU tl.reduce reassociates AND swaps
    # operands (in-thread, then across lanes), so it folds in an order of its own. A scan
    # keeps the order; with the padded lanes at the identity its last lane is the fold,
    # picked out by a reduce that keeps the operand of the higher lane (commutative).
    n = len(node.inputs)
    scan = cg.fresh("ordered_scan")
    cg.line(f"{scan} = tl.associative_scan({_operands(cg, node, True)}, {dim}, {fn})")
    x = node.inputs[0]
    lane = cg.expand(f"tl.arange(0, {cg.block(x.shape[dim])})", dim, x.ndim)
    full = "[" + ", ".join(cg.block(d) for d in x.shape) + "]"
    parts = [f"{scan}[{i}]" for i in range(n)] if n > 1 else [scan]
    pick = _pick_last_helper(cg, n)
    return _finish(cg, node, f"tl.reduce(({', '.join(parts)}, tl.broadcast_to({lane}, {full})),"
                             f" {dim}, {pick}{kd})[{node.attrs['output']}]", single=True)


def _pick_last_helper(cg: Any, n: int) -> str:
    """A ``@triton.jit`` combine of ``n`` values and a lane number that keeps the values of
    the higher lane: commutative and associative, so any reduction order picks the last."""
    name = f"_ts_pick_last{n}"
    if name not in cg.helpers:
        a = [f"a{i}" for i in range(n)]
        b = [f"b{i}" for i in range(n)]
        picks = ", ".join(f"tl.where(later, {y}, {x})" for x, y in zip(a, b))
        cg.helpers[name] = (f"@triton.jit\ndef {name}({', '.join(a)}, lane_a, {', '.join(b)}, "
                            f"lane_b):\n    later = lane_b > lane_a\n"
                            f"    return {picks}, tl.maximum(lane_a, lane_b)\n\n")
    return name


def _scan_emit(cg: Any, node: Any, args: list[str]) -> str:
    fn = helper_name(cg, node.attrs["fn"])
    reverse = node.attrs["reverse"]
    x = _operands(cg, node, reverse)  # padded lanes come last: only a reverse scan sees them
    return _finish(cg, node, f"tl.associative_scan({x}, {node.attrs['dim']}, {fn}, "
                             f"reverse={reverse})")


register(OpDef("custom_reduce", _infer(False), _reduce_emit, "reduce"))
register(OpDef("custom_scan", _infer(True), _scan_emit, "scan"))
