"""int8 weight-only quantisation of linear and conv2d weights.

Each weight ``w`` (output channels on axis 0) becomes ``q = round(w / s)`` clipped to
[-127, 127] with one float32 scale per output channel, ``s = max|w[c]| / 127``; a
``dequantize`` instruction rebuilds a float32 copy in the arena right before the op, so the file
and the resident weights shrink ~4x while the math stays float32.

Example:
    >>> import numpy as np
    >>> q, s = quantize_tensor(np.array([[1.0, -0.5], [0.25, 0.0]], np.float32))
    >>> q.tolist(), s.tolist()
    ([[127, -64], [127, 0]], [0.007874015718698502, 0.0019685039296746254])
"""

from __future__ import annotations

import numpy as np

from torchship.edge.graph import Graph

MIN_ELEMENTS = 256  # smaller weights stay float32 (no gain)


def quantize_tensor(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 quantisation of ``w``; returns (q, scale).

    Example:
        >>> quantize_tensor(np.zeros((2, 2), np.float32))[1].tolist()
        [1.0, 1.0]
    """
    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    amax = np.abs(flat).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(flat / scale[:, None].astype(np.float64)), -127, 127).astype(np.int8)
    return q.reshape(w.shape), scale


def transpose_linear_weights(graph: Graph) -> int:
    """Store constant float linear weights as [K, N] (``transposed=True``) so the matmul reads
    them row-major (BLAS "NN", measurably faster than "NT"); returns how many.

    Example:
        >>> # run after quantize_int8: int8 weights keep [N, K] (per-row scales)
    """
    users = graph.users()
    done: dict[int, int] = {}
    count = 0
    for ins in graph.instrs:
        if ins.op != "linear" or ins.attrs.get("transposed"):
            continue
        wid = ins.inputs[1]
        w = graph.values[wid]
        if w.const is None or w.dtype not in ("F32", "F64") or wid in graph.outputs:
            continue
        if any(graph.instrs[k].op != "linear" for k in users.get(wid, [])):
            continue
        if wid not in done:
            done[wid] = graph.add_const(f"{w.name}.T", np.ascontiguousarray(w.const.T))
        ins.inputs = [ins.inputs[0], done[wid], *ins.inputs[2:]]
        ins.attrs = {**ins.attrs, "transposed": True}
        count += 1
    return count


def quantize_int8(graph: Graph) -> int:
    """Quantise the constant float32 weights of every linear/conv2d; return how many.

    Example:
        >>> # quantize_int8(graph) after folding, before memory planning
    """
    count = 0
    new_instrs = []
    cache: dict[int, int] = {}
    for ins in graph.instrs:
        if ins.op in ("linear", "conv2d"):
            w = graph.values[ins.inputs[1]]
            if w.const is not None and w.dtype == "F32" and w.const.size >= MIN_ELEMENTS:
                if ins.inputs[1] not in cache:
                    q, s = quantize_tensor(w.const)
                    qv = graph.add_const(f"{w.name}.int8", q)
                    sv = graph.add_const(f"{w.name}.scale", s)
                    cache[ins.inputs[1]] = graph.add_value(f"{w.name}.dq", "F32", list(w.shape))
                    cache[ins.inputs[1]] = (qv, sv)  # type: ignore[assignment]
                qv, sv = cache[ins.inputs[1]]  # type: ignore[misc]
                dq = graph.add_value(f"{w.name}.dq", "F32", list(w.shape))
                from torchship.edge.graph import GInstr

                new_instrs.append(GInstr("dequantize", [qv, sv], [dq], {}, ins.source))
                ins.inputs = [ins.inputs[0], dq, *ins.inputs[2:]]
                count += 1
        new_instrs.append(ins)
    graph.instrs = new_instrs
    return count
