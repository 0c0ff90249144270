"""Constant folding (with the runtime's own kernels) and affine folding into conv2d/linear.

Example:
    >>> import numpy as np
    >>> from torchship.edge.graph import Graph, GInstr
    >>> g = Graph("f"); a = g.add_const("a", np.ones(3, np.float32))
    >>> b = g.emit("add", [a, a], "F32", [3]); g.outputs = [b]
    >>> _ = constant_fold(g)
    >>> g.values[b].const.tolist()
    [2.0, 2.0, 2.0]
"""

from __future__ import annotations

import numpy as np

from torchship.edge.graph import GInstr, Graph
from torchship.edge.runtime import nn_ops, ops  # noqa: F401  (register ops)
from torchship.edge.runtime.dims import DTYPES
from torchship.edge.runtime.registry import OPS, has_symbolic_attrs

GROWTH_LIMIT = 1 << 16  # a folded constant may exceed its inputs by at most this many bytes


def constant_fold(graph: Graph) -> int:
    """Evaluate instructions whose inputs are all constants; return how many were folded.

    A result much larger than its inputs (an ``expand`` of a scalar to a big tensor) is left to
    run time so the file does not grow.

    Example:
        >>> # see the module example
    """
    folded = 0
    keep = []
    for ins in graph.instrs:
        op = OPS[ins.op]
        vals = [graph.values[i] for i in ins.inputs]
        out = graph.values[ins.outputs[0]]
        static = all(isinstance(d, int) for d in out.shape) and not has_symbolic_attrs(op, ins.attrs)
        widen = ins.op == "cast" and vals[0].dtype in ("F16", "BF16")  # 2-byte weights stay 2-byte in the file
        if static and all(v.const is not None for v in vals) and ins.op != "dequantize" and not widen:
            size = int(np.prod(out.shape, dtype=np.int64)) * DTYPES[out.dtype].itemsize
            if size <= sum(v.const.nbytes for v in vals) + GROWTH_LIMIT:
                out.const = _run(graph, ins, [v.const for v in vals])
                out.name = f"{graph.name}.{out.name}"
                folded += 1
                continue
        keep.append(ins)
    graph.instrs = keep
    return folded


def _run(graph: Graph, ins: GInstr, inputs: list[np.ndarray]) -> np.ndarray:
    """Instruction ``ins`` (static shapes) evaluated on the constant ``inputs``."""
    op, out = OPS[ins.op], graph.values[ins.outputs[0]]
    result = np.empty(out.shape, DTYPES[out.dtype])
    attrs = {k: (float(v) if isinstance(v, str) and op.attrs[k][0].startswith("float") else v) for k, v in ins.attrs.items()}
    op.kernel(inputs, [result], {k: attrs.get(k, d) for k, (_, d) in op.attrs.items()})
    return result


def evaluate(graph: Graph, vid: int) -> np.ndarray | None:
    """The value ``vid`` computed from constants alone, without changing the graph (None when it
    depends on an input or a dynamic size): a weight read through a cast (a float16 model's
    weights) or computed from parameters (``weight_norm``), for lowerings that need the array.

    Example:
        >>> g = Graph("f"); a = g.add_const("a", np.ones(2, np.float16))
        >>> b = g.emit("cast", [a], "F32", [2], {"dtype": "F32"})
        >>> evaluate(g, b).dtype
        dtype('float32')
    """
    producer = {ins.outputs[0]: ins for ins in graph.instrs}
    memo: dict[int, np.ndarray | None] = {}

    def value(v: int) -> np.ndarray | None:
        if graph.values[v].const is not None:
            return graph.values[v].const
        if v not in memo:
            ins = producer.get(v)
            static = ins is not None and all(isinstance(d, int) for d in graph.values[v].shape) \
                and not has_symbolic_attrs(OPS[ins.op], ins.attrs)
            inputs = [value(i) for i in ins.inputs] if static else [None]
            memo[v] = None if any(x is None for x in inputs) else _run(graph, ins, inputs)
        return memo[v]

    return value(vid)


def _channel_vector(c: np.ndarray, out_rank: int, axis: int, channels: int) -> np.ndarray | None:
    """``c`` as a length-``channels`` vector if it varies only along ``axis`` of the output."""
    if c.ndim > out_rank:
        return None
    full = (1,) * (out_rank - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(full) if i != axis) or full[axis] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1) if c.size > 1 else c.reshape(()), (channels,)).astype(np.float64)


def fold_affine(graph: Graph) -> int:
    """Fold ``mul``/``add``/``sub`` by per-output-channel constants into the preceding conv2d or
    linear (this is batch-norm folding: lowering turns an eval-mode batch norm into mul + add).

    Example:
        >>> # conv2d -> mul(scale[C,1,1]) -> add(shift[C,1,1])  becomes  conv2d(w*scale, b*scale+shift)
    """
    count = 0
    changed = True
    while changed:
        changed = False
        users = graph.users()
        producer = {o: k for k, ins in enumerate(graph.instrs) for o in ins.outputs}
        for k, ins in enumerate(graph.instrs):
            if ins.op not in ("mul", "add", "sub") or len(ins.inputs) != 2:
                continue
            a, b = ins.inputs
            if graph.values[a].const is not None and ins.op != "sub":
                a, b = b, a
            c = graph.values[b].const
            if c is None or a not in producer or a in graph.outputs or len(users.get(a, [])) != 1:
                continue
            pk = producer[a]
            prod = graph.instrs[pk]
            if prod.op not in ("conv2d", "linear"):
                continue
            w = graph.values[prod.inputs[1]]
            bias = graph.values[prod.inputs[2]] if len(prod.inputs) > 2 else None
            if w.const is None or (bias is not None and bias.const is None) or w.dtype != "F32":
                continue
            out = graph.values[a]
            channels = w.shape[0]
            axis = 1 if prod.op == "conv2d" else len(out.shape) - 1
            vec = _channel_vector(c, len(out.shape), axis, channels)
            if vec is None or not np.all(np.isfinite(vec)):
                continue
            b64 = bias.const.astype(np.float64) if bias is not None else np.zeros(channels)
            w64 = w.const.astype(np.float64)
            if ins.op == "mul":
                w64 = w64 * vec.reshape((-1,) + (1,) * (w64.ndim - 1))
                b64 = b64 * vec
            else:
                b64 = b64 + vec if ins.op == "add" else b64 - vec
            new_w = graph.add_const(f"{graph.name}.{out.name}.w", w64.astype(np.float32))
            new_b = graph.add_const(f"{graph.name}.{out.name}.b", b64.astype(np.float32))
            prod.inputs = [prod.inputs[0], new_w, new_b]
            prod.outputs = [ins.outputs[0]]
            graph.values[ins.outputs[0]].shape = out.shape
            del graph.instrs[k]
            count += 1
            changed = True
            break
    return count
