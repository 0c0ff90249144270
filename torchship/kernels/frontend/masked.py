"""``ts.load(x, [idx], extra_mask=valid, other=0)`` / ``ts.store(out, [idx], v,
extra_mask=valid)`` in device code: a load or store node whose extra mask is one more input.

The mask is a bool block that broadcasts (right-aligned) to the indexed block; the backend
ands it into the access's own edge masks and reads ``other`` (a Python number) at the lanes
it drops. Without ``extra_mask`` the calls are plain ``x[idx]`` / ``out[idx] = v``.

Example:
    >>> _other_ok(0.5, torch.float32), _other_ok(0.5, torch.int32)
    (True, False)
"""

from __future__ import annotations

import ast
from typing import Any

import torch

from torchship.kernels.errors import KernelSyntaxError, KernelTypeError
from torchship.kernels.ir import Value
from torchship.kernels.masked import load, store
from torchship.kernels.ops import broadcast_shapes
from torchship.kernels.ops.memory import index_shape

__all__ = ["FUNCTIONS", "masked_access"]

FUNCTIONS: dict[Any, str] = {load: "ts_load", store: "ts_store"}

_HINT = "e.g. ts.store(out, [idx], v, extra_mask=idx < n) or ts.load(x, [idx, tn], " \
        "extra_mask=valid[:, None], other=0.0)"


def _other_ok(other: Any, dtype: torch.dtype) -> bool:
    """Whether the Python number ``other`` fits a tensor of ``dtype`` (no float for ints)."""
    if not isinstance(other, (bool, int, float)):
        return False
    return dtype.is_floating_point or not isinstance(other, float)


def _arg(args: list[Any], kwargs: dict[str, Any], pos: int, key: str, default: Any) -> Any:
    return args[pos] if len(args) > pos else kwargs.get(key, default)


def masked_access(h: Any, name: str, args: list[Any], kwargs: dict[str, Any],
                  node: ast.AST) -> Value | None:
    """The load (``ts_load``) or store (``ts_store``) node of a ``ts.load/ts.store`` call."""
    from torchship.kernels.frontend.captures import TensorRef
    from torchship.kernels.frontend.funcs import _as_slice

    what = "ts.load" if name == "ts_load" else "ts.store"
    target = args[0] if args else kwargs.get("tensor")
    if not isinstance(target, TensorRef):
        raise h.err(KernelTypeError, f"{what} target must be a tensor argument", hint=_HINT,
                    node=node)
    assert isinstance(node, ast.Call)
    idx_ast = node.args[1] if len(node.args) > 1 else None
    if not isinstance(idx_ast, (ast.List, ast.Tuple)):
        raise h.err(KernelSyntaxError, f"{what} index must be a literal list, e.g. [idx, tn]",
                    hint=_HINT, node=node)
    index = h.tensor_index(target, ast.Tuple([_as_slice(e) for e in idx_ast.elts],
                                             ast.Load()), node)
    shape = index_shape(index)
    first = 3 if name == "ts_store" else 2
    mask = _arg(args, kwargs, first, "extra_mask", None)
    if mask is True:
        mask = None
    if mask is not None:
        if not isinstance(mask, Value) or mask.dtype != torch.bool:
            raise h.err(KernelTypeError, f"{what}: extra_mask must be a bool block (a "
                        "comparison), or None", hint=_HINT, node=node)
        if mask.ndim > len(shape) or any(
                not a.same(b) for a, b in zip(shape, broadcast_shapes([shape, mask.shape]))):
            raise h.err(KernelTypeError, f"{what}: extra_mask of shape {mask.shape_str()} does "
                        f"not broadcast to the indexed block {list(shape)}", hint="index the "
                        "mask with None to line its dims up (valid[:, None])", node=node)
    attrs = {"tensor": target, "index": index}
    if name == "ts_store":
        value = h.operand(_arg(args, kwargs, 2, "value", None))
        h.b.emit("store", [value] + ([mask] if mask is not None else []), attrs)
        return None
    other = _arg(args, kwargs, 3, "other", 0)
    if not _other_ok(other, target.dtype):
        raise h.err(KernelTypeError, f"{what}: other={other!r} must be a Python number of "
                    f"the tensor's kind ({target.dtype})", hint=_HINT, node=node)
    if mask is None:
        return h.b.emit("load", [], attrs)
    return h.b.emit("load", [mask], {**attrs, "other": other})
