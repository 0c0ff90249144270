"""Ops with no lowering whose inputs are all weights (parameters, buffers, constants, or values
computed from them alone), evaluated by torch at export and stored as constants: the
orthogonal parametrization's ``linalg_matrix_exp`` / ``householder_product``, or any other
computation a model does on its own weights only. Inputs the program receives at run time
never take this path.

Example:
    >>> # eval_weights_only(lw, node)  -> a constant value id, or None when an input is not constant
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ml_dtypes
import numpy as np
import torch

if TYPE_CHECKING:
    from torchship.edge.lower import Lowering


class _NotConstant(Exception):
    pass


def eval_weights_only(lw: Lowering, node: torch.fx.Node) -> Any:
    """``node`` run by torch on its constant inputs, its tensor results added as constants
    (float16 / bfloat16 ones stored in 2 bytes and read through a cast, as weights are); None
    when an input is not constant or a result is not a real tensor.

    Example:
        >>> # eval_weights_only(lw, matrix_exp_node)  -> value id of exp(A) for a parameter A
    """
    def arg(a: Any) -> Any:
        if isinstance(a, (list, tuple)):
            return type(a)(arg(x) for x in a)
        if not isinstance(a, torch.fx.Node):
            return a
        meta, vid = a.meta.get("val"), lw.env.get(a)
        if not isinstance(meta, torch.Tensor) or not isinstance(vid, int) or meta.dtype.is_complex:
            raise _NotConstant
        value = lw.const_value(vid)
        if value is None:
            raise _NotConstant
        return torch.from_numpy(np.ascontiguousarray(value)).to(meta.dtype)

    target = node.target
    if not isinstance(target, torch._ops.OpOverload) or "empty" in str(target) or not node.all_input_nodes \
            or torch.Tag.nondeterministic_seeded in target.tags:  # (uninitialised or random values)
        return None
    try:
        args = arg(tuple(node.args))
        kwargs = {k: arg(v) for k, v in node.kwargs.items()}
    except _NotConstant:
        return None
    with torch.no_grad():
        out = target(*args, **kwargs)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    if not all(isinstance(t, torch.Tensor) and not t.dtype.is_complex for t in outs):
        return None
    ids = []
    for k, t in enumerate(outs):
        t = t.detach().contiguous()
        arr = t.float().numpy().astype(ml_dtypes.bfloat16) if t.dtype is torch.bfloat16 else t.numpy().copy()
        ids.append(lw.widened(lw.g.add_const(f"{lw.g.name}.{node.name}" + (f".{k}" if len(outs) > 1 else ""), arr)))
    return ids if isinstance(out, (list, tuple)) else ids[0]
