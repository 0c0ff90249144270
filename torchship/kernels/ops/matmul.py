"""Matrix products: ``a @ b``, ``torch.matmul/mm/bmm/addmm`` and ``ts.dot(a, b, acc=)``.

One node, ``dot(a, b[, acc])``, 2-D or batched 3-D, accumulating in float32 (``tl.dot`` with
``input_precision="ieee"`` for float32 inputs so results match a float64 reference), or in
int32 for two int8 operands (``ts.dot`` with an int32 ``acc``).
``attrs["out_dtype"]`` is the result dtype (torch's promotion for ``matmul``, float32 or
``acc``'s dtype for ``ts.dot``).

Example:
    >>> import torch
    >>> from torchship.kernels.ir import ConstDim, Value
    >>> from torchship.kernels.ops import OPS
    >>> a = Value((ConstDim(16), ConstDim(32)), torch.float16)
    >>> b = Value((ConstDim(32), ConstDim(64)), torch.float16)
    >>> OPS["dot"].infer([a, b], {"out_dtype": torch.float16})
    ((16, 64), torch.float16)
"""

from __future__ import annotations

from typing import Any

import torch

from torchship.kernels.errors import KernelTypeError
from torchship.kernels.ir import FullDim, Value
from torchship.kernels.ops import OpDef, broadcast_shapes, promote, register


def _infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    a, b = inputs[0], inputs[1]
    if not (isinstance(a, Value) and isinstance(b, Value)):
        raise KernelTypeError("matmul operands must be tile values (blocks loaded from tensors)")
    if a.ndim not in (2, 3) or a.ndim != b.ndim:
        raise KernelTypeError(
            f"matmul needs two 2-D or two 3-D blocks, got {a.shape_str()} and {b.shape_str()}",
            hint="index the tensors so the blocks are [M, K] and [K, N]",
        )
    if is_int8_dot(a, b):
        if attrs["out_dtype"] != torch.int32:
            raise KernelTypeError(
                "a product of int8 blocks accumulates in int32 (torch's int8 matmul would "
                "wrap around in int8)", hint="acc = ts.zeros([tm, tn], dtype=torch.int32); "
                "acc = ts.dot(a[tm, tk], b[tk, tn], acc=acc)")
    else:
        for v in (a, b):
            if not v.dtype.is_floating_point:
                raise KernelTypeError(f"matmul of {v.dtype} blocks is not supported",
                                      hint="convert with .to(torch.float32) first, or use "
                                      "int8 for both operands with an int32 ts.dot acc")
    ka, kb = a.shape[-1].find(), b.shape[-2].find()
    if isinstance(ka, FullDim) and isinstance(kb, FullDim):
        ka.union(kb)
    elif not ka.same(kb):
        raise KernelTypeError(
            f"matmul inner dimensions differ: {a.shape_str()} @ {b.shape_str()}",
            hint="load both operands with the same K tile, e.g. x[tm, tk] @ w[tk, tn]",
        )
    k = ka.find()
    if isinstance(k, FullDim):
        k.used_in_dot = True
    batch: tuple[Any, ...] = ()
    if a.ndim == 3:
        batch = broadcast_shapes([a.shape[:1], b.shape[:1]])
    shape = (*batch, a.shape[-2], b.shape[-1])
    if len(inputs) > 2 and inputs[2] is not None:
        shape = broadcast_shapes([shape, inputs[2].shape])
    return shape, attrs["out_dtype"]


def is_int8_dot(a: Value, b: Value) -> bool:
    """Both operands int8: the integer tensor-core product, accumulated in int32.

    Example:
        >>> from torchship.kernels.ir import Value
        >>> is_int8_dot(Value((), torch.int8), Value((), torch.int8))
        True
    """
    return a.dtype == torch.int8 and b.dtype == torch.int8


def compute_dtype(a: Value, b: Value) -> torch.dtype:
    """The dtype both operands are converted to before ``tl.dot``.

    Example:
        >>> from torchship.kernels.ir import Value
        >>> compute_dtype(Value((), torch.float16), Value((), torch.float32))
        torch.float32
    """
    return promote([a, b])[0]


def emit_dot(cg: Any, node: Any, a: str, b: str, acc: str | None) -> str:
    """``tl.dot`` of two (masked, converted) operand blocks, optionally into ``acc`` (fp32)."""
    work = compute_dtype(node.inputs[0], node.inputs[1])
    if getattr(cg, "interpret", False) and work == torch.bfloat16:
        work = torch.float32  # operands were upcast (see TritonCodegen.dot_operands)
    prec = ', input_precision="ieee"' if work in (torch.float32, torch.float64) else ""
    if is_int8_dot(node.inputs[0], node.inputs[1]):
        prec = ", out_dtype=tl.int32"  # Triton 3.6 checks the acc against out_dtype (fp32)
    acc_part = f", acc={acc}" if acc is not None else ""
    return f"tl.dot({a}, {b}{acc_part}{prec})"


register(OpDef("dot", _infer, lambda cg, node, args: "", "dot"))
