"""Slices with bounds on tensor loads and stores: ``qkv[tm, d:2 * d]``, ``out[tm, :h] = v``.

A bounded slice ``a:b`` of a tensor dim is a whole dim (like ``:``) of extent ``b - a``
starting at ``a``: padded to a power of two and masked, unified with the full dims it meets.
The bounds must be known on the host at launch: python ints, tensor sizes, int arguments and
``+ - * //`` of them. Python's slice rules apply (negative bounds count from the end, bounds
clamp to the size), computed by the launcher: the extent and the start become two int kernel
arguments whose host expressions are ``slice(a, b).indices(n)``. A start computed on the
device is taken when the width is known at launch (:mod:`.affine`: ``qkv[tm, h * d:(h + 1) *
d]`` with ``h`` a grid index, ``x[i, s:s + w]``): it must not be negative, and the window is
masked at the tensor's end too (it reads zeros and writes nothing past it, where torch would
give a shorter slice). A positive step (a literal or an int argument: ``x[tm, 1::2]``)
multiplies the dim's stride; steps below 1 are refused, as torch refuses them.

Example:
    >>> host_bound(None, 3)
    ('3', 3)
"""

from __future__ import annotations

import ast
import operator
from typing import Any

import torch

from torchship.kernels.errors import KernelSyntaxError, KernelTypeError
from torchship.kernels.frontend import affine
from torchship.kernels.frontend.captures import TensorRef
from torchship.kernels.ir import FullDim, Value
from torchship.kernels.ops.memory import Index

__all__ = ["bounded_slice", "host_bound"]

_HOST_OPS = {"add": ("+", operator.add), "sub": ("-", operator.sub),
             "mul": ("*", operator.mul), "floordiv": ("//", operator.floordiv)}


def host_bound(b: Any, x: Any) -> tuple[str, Any] | None:
    """``(host expression, traced value)`` of a slice bound, or None when it is computed on the
    device (a tile's position, a loaded value). ``b`` is the launch builder.

    Example:
        >>> host_bound(None, None), host_bound(None, -2)
        (('None', None), ('-2', -2))
    """
    if x is None or (isinstance(x, int) and not isinstance(x, bool)):
        return repr(x), x
    if not isinstance(x, Value) or x.dtype.is_floating_point or x.dtype == torch.bool:
        return None
    node = x.node
    if node is None:
        param = next((p for p in b.params if p.value is x), None)
        return None if param is None else (param.getter, b.hints.get(x.id))
    if node.op == "neg":
        inner = host_bound(b, node.inputs[0])
        return None if inner is None else (f"(-{inner[0]})", -inner[1])
    if node.op not in _HOST_OPS:
        return None
    parts = [host_bound(b, v) for v in node.inputs]
    if any(p is None for p in parts):
        return None
    sym, fn = _HOST_OPS[node.op]
    return f"({parts[0][0]} {sym} {parts[1][0]})", fn(parts[0][1], parts[1][1])


def _step(h: Any, ref: TensorRef, e: ast.Slice, node: ast.AST) -> int:
    """The slice's step: a positive compile-time int (torch slices take no negative steps)."""
    if e.step is None:
        return 1
    step = h.b.const_int(h.expr(e.step), "a slice step",
                         hint=f"use a literal or an int argument: {ref.name}[tm, 0::2]")
    if step < 1:
        raise h.err(KernelSyntaxError, f"the slice `{ast.unparse(e)}` of tensor {ref.name!r} "
                    "has a step below 1 (torch slices take positive steps)", hint="flip the "
                    "loaded block instead (v.flip(1)) or make the view in host code",
                    node=node)
    return step


def bounded_slice(h: Any, ref: TensorRef, axis: int, e: ast.Slice, node: ast.AST) -> Index:
    """The index entry of ``ref[..., a:b:s, ...]`` on ``axis`` (``h``: the call handler)."""
    step = _step(h, ref, e, node)
    b = h.b
    values = [h.expr(side) if side is not None else None for side in (e.lower, e.upper)]
    bounds = [host_bound(b, v) for v in values]
    if None in bounds:
        return _moving_slice(h, ref, axis, e, values, step, node)
    size = b.tensor_size(ref, axis)
    n_expr = next(p.getter for p in b.params if p.value is size)
    n = b.hints[size.id]
    (lo, lo_hint), (hi, hi_hint) = bounds
    start_h, stop_h, _ = slice(lo_hint, hi_hint, step).indices(n)
    sl = f"slice({lo}, {hi}{f', {step}' if step != 1 else ''}).indices({n_expr})"
    width = b.param(f"{ref.name}_w{axis}", f"len(range(*{sl}))", torch.int32,
                    len(range(start_h, stop_h, step)))
    if isinstance(lo_hint, int) and lo_hint >= 0 and lo == repr(lo_hint):
        # a literal start (clamping only matters when the extent is 0); 0 is a plain full dim
        start: Any = lo_hint or None
    else:
        start = b.param(f"{ref.name}_o{axis}", f"{sl}[0]", torch.int32, start_h).value
    dim = FullDim(width.name, width.value)
    b.full_dims.append(dim)
    return Index("full", axis, full=dim, start=start, step=step if step != 1 else None)


def _moving_slice(h: Any, ref: TensorRef, axis: int, e: ast.Slice, values: list[Any],
                  step: int, node: ast.AST) -> Index:
    """``a:b`` with a start computed on the device and a width ``b - a`` known at launch
    (the device terms cancel: ``h * d:(h + 1) * d``). The start must not be negative; the
    window is masked at the tensor's end as well as at its width."""
    lo, hi = values
    forms = [affine.form_of(h.b, v, host_bound) if v is not None else None for v in values]
    width = affine.difference(forms[1], forms[0]) if None not in forms else None
    if width is None:
        side = e.lower if host_bound(h.b, lo) is None else e.upper
        raise h.err(KernelTypeError, f"the slice `{ast.unparse(e)}` of tensor {ref.name!r} "
                    f"has a bound computed on the device (`{ast.unparse(side)}`) and a width "
                    "that is not known at launch: a device start needs a launch-time width "
                    "(python ints, tensor sizes, int arguments and + - * of them, as in "
                    "x[i, s:s + w] or qkv[tm, h * d:(h + 1) * d])", hint="for a range that "
                    "moves with a tile, index with the tile (`for t in ts.tile(begin, end)`, "
                    "then x[tm, t]) or gather with an integer block (x[tm, start + "
                    "torch.arange(0, 32)]); for a range twice a tile's (int4 GEMM's A[tm, 2 * "
                    "tk.begin:2 * tk.begin + 64] dotted with interleaved nibbles) index host "
                    "views A[:, 0::2], A[:, 1::2] (a_even, a_odd) with the tile", node=node)
    expr, hint = width
    if step != 1:
        expr, hint = f"({expr} + {step - 1}) // {step}", (hint + step - 1) // step
    param = h.b.param(f"{ref.name}_w{axis}", f"max(0, {expr})", torch.int32, max(0, hint))
    dim = FullDim(param.name, param.value)
    h.b.full_dims.append(dim)
    return Index("full", axis, full=dim, start=h.operand(lo), step=step if step != 1 else None,
                 clip=h.b.tensor_size(ref, axis))
