"""ATen -> core op handlers for mixture-of-experts grouped matmuls: ``aten._grouped_mm`` (2-D
input, 3-D expert weights, ``offs``) and transformers' own ``transformers::grouped_mm_fallback``
custom op (what its default ``experts_implementation="grouped_mm"`` calls on a CPU or in float32;
Mixtral, Qwen2-MoE, OLMoE), which torch.export keeps whole.

Rows of ``input [S, K]`` are sorted by expert and ``offs [E]`` holds the cumulative row counts:
row ``s`` belongs to expert ``g(s) = #{e : offs[e] <= s}`` and gets ``input[s] @ weight[g(s)]``,
rows at or past ``offs[E - 1]`` get zeros. Written as one ``matmul`` of the rows with all
experts' weights side by side (``[K, E·N]``, folded at export when constant), the expert of each
row counted with ``arange`` + ``le`` + ``sum``, and a ``gather`` of its ``N`` columns: ``E``
times the multiply-adds of the grouped product, with no data-dependent shapes, so the token count
may be dynamic.

Example:
    >>> from torchship.edge.lower import HANDLERS
    >>> import torchship.edge.lower_moe  # registers
    >>> "transformers.grouped_mm_fallback.default" in HANDLERS
    True
"""

from __future__ import annotations

import torch

from torchship.edge.lower import HANDLERS, Lowering, handles
from torchship.edge.lower_nn import Emit

aten = torch.ops.aten
Node = torch.fx.Node


@handles(aten._grouped_mm.default)
def _grouped_mm(lw: Lowering, node: Node) -> int:
    """``y[s] = x[s] @ w[g(s)]`` for the 2-D × 3-D form with ``offs`` (no bias, no out dtype).

    Example:
        >>> _grouped_mm(lw, node)  # doctest: +SKIP
    """
    x, w, offs = node.args[:3]
    extra = [*node.args[3:], *node.kwargs.values()]
    if offs is None or any(a is not None for a in extra):
        raise lw.fail("grouped_mm is supported as (2-D input, 3-D expert weights, offs) without bias or out_dtype")
    xv, wv, ov = lw.val(x), lw.val(w), lw.val(offs)
    xs, ws = lw.shape_of(xv), lw.shape_of(wv)
    if len(xs) != 2 or len(ws) != 3 or not all(isinstance(d, int) for d in ws):
        raise lw.fail("grouped_mm is supported for a 2-D input and 3-D expert weights of static sizes")
    e = Emit(lw, lw.g.values[xv].dtype)
    s, (n_exp, k, n) = xs[0], ws
    side = e("reshape", [e("permute", [wv], [k, n_exp, n], {"perm": [1, 0, 2]})], [k, n_exp * n],
             {"shape": [k, n_exp * n]})
    every = e("reshape", [e("matmul", [xv, side], [s, n_exp * n])], [s, n_exp, n], {"shape": [s, n_exp, n]})
    rows = e("reshape", [e("arange", [], [s], {"start": 0, "end": s, "step": 1, "dtype": "I64"}, dtype="I64")],
             [s, 1], {"shape": [s, 1]}, dtype="I64")
    ends = e("reshape", [e("cast", [ov], [n_exp], {"dtype": "I64"}, dtype="I64")], [1, n_exp],
             {"shape": [1, n_exp]}, dtype="I64")
    done = e("cast", [e("le", [ends, rows], dtype="BOOL")], [s, n_exp], {"dtype": "I64"}, dtype="I64")
    expert = e("sum", [done], [s, 1], {"axes": [1], "keepdim": True}, dtype="I64")
    inside = e("lt", [expert, lw.const(n_exp, "I64")], dtype="BOOL")  # [s, 1]: rows before offs[-1]
    pick = e("expand", [e("reshape", [e("minimum", [expert, lw.const(n_exp - 1, "I64")], dtype="I64")],
                          [s, 1, 1], {"shape": [s, 1, 1]}, dtype="I64")], [s, 1, n], {"shape": [s, 1, n]}, dtype="I64")
    y = e("reshape", [e("gather", [every, pick], [s, 1, n], {"axis": 1})], [s, n], {"shape": [s, n]})
    return e("where", [inside, y, e.c(0.0)], [s, n])


HANDLERS["transformers.grouped_mm_fallback.default"] = _grouped_mm  # a custom op: known by name
