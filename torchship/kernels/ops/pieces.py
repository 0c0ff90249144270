"""Joining, splitting and regrouping blocks along dims of known size: the ops under
``torch.cat``, ``torch.stack``, ``chunk``/``split``, half-slices of a block (``x[..., :h]``),
``permute`` and ``flatten``/``unflatten``, built on Triton's ``tl.join`` / ``tl.split`` /
``tl.permute`` / ``tl.reshape``.

* ``join(a, b, dim, stack)``: ``tl.join`` puts the two blocks side by side in a new last
  axis of size 2; ``tl.permute`` moves that axis to ``dim`` — that is ``torch.stack`` — and
  for ``torch.cat`` a ``tl.reshape`` merges it with the next axis (row-major, so the first
  block's elements come first).
* ``half(x, dim, which)``: the reverse: ``tl.reshape`` splits ``dim`` (size ``2k``) into
  ``(2, k)``, ``tl.permute`` moves the 2 last and ``tl.split`` returns the halves.
* ``permute(x, perm)`` is ``tl.permute``; ``regroup(x, dims)`` is ``tl.reshape`` to the new
  dims (row-major, like torch's ``view`` of a contiguous tensor); ``broadcast(x, dims)`` is
  ``tl.broadcast_to``; ``flip(x, dim)`` is ``tl.flip``.

Larger powers of two are trees of these (:mod:`torchship.kernels.frontend.pieces`); the
frontend makes sure the dims are of a fixed size (Triton blocks have power-of-two shapes and
cannot be sliced at other offsets).

Example:
    >>> import torch
    >>> from torchship.kernels.ir import ConstDim, Value
    >>> from torchship.kernels.ops import OPS
    >>> a = Value((ConstDim(4), ConstDim(8)), torch.float32)
    >>> OPS["join"].infer([a, a], {"dim": 1, "stack": False})[0]
    (4, 16)
    >>> OPS["half"].infer([a], {"dim": 1, "which": 0})[0]
    (4, 4)
"""

from __future__ import annotations

from typing import Any

import torch

from torchship.kernels.ir import ConstDim, Value
from torchship.kernels.ops import OpDef, register


def _size(d: Any) -> int:
    r = d.find()
    return r.n if isinstance(r, ConstDim) else r.static


def _join_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    a: Value = inputs[0]
    d = attrs["dim"]
    shape = list(a.shape)
    if attrs["stack"]:
        shape.insert(d, ConstDim(2))
    else:
        shape[d] = ConstDim(2 * _size(shape[d]))
    return tuple(shape), a.dtype


def _move(rank: int, src: int, dst: int) -> tuple[int, ...]:
    """A permutation taking axis ``src`` to position ``dst``."""
    perm = [i for i in range(rank) if i != src]
    perm.insert(dst, src)
    return tuple(perm)


def _join_emit(cg: Any, node: Any, args: list[str]) -> str:
    a, d = node.inputs[0], node.attrs["dim"]
    dims = ", ".join(cg.block(x) for x in a.shape)
    ops = [f"tl.broadcast_to({e}, [{dims}])" if a.shape else e for e in args]
    out = f"tl.join({ops[0]}, {ops[1]})"
    if d != a.ndim:
        out = f"tl.permute({out}, {_move(a.ndim + 1, a.ndim, d)})"
    if node.attrs["stack"]:
        return out
    return f"tl.reshape({out}, [{', '.join(cg.block(x) for x in node.out.shape)}])"


register(OpDef("join", _join_infer, _join_emit, "view"))


def _half_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    x: Value = inputs[0]
    shape = list(x.shape)
    shape[attrs["dim"]] = ConstDim(_size(shape[attrs["dim"]]) // 2)
    return tuple(shape), x.dtype


def _half_emit(cg: Any, node: Any, args: list[str]) -> str:
    x, d = node.inputs[0], node.attrs["dim"]
    k = _size(x.shape[d]) // 2
    dims = [cg.block(s) for s in x.shape]
    dims[d:d + 1] = ["2", str(k)]
    split = f"tl.reshape({args[0]}, [{', '.join(dims)}])"
    return f"tl.split(tl.permute({split}, {_move(x.ndim + 1, d, x.ndim)}))[{node.attrs['which']}]"


register(OpDef("half", _half_infer, _half_emit, "view"))


def _permute_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    x: Value = inputs[0]
    return tuple(x.shape[p] for p in attrs["perm"]), x.dtype


register(OpDef("permute", _permute_infer,
               lambda cg, node, args: f"tl.permute({args[0]}, {tuple(node.attrs['perm'])})",
               "view"))


def _regroup_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    return tuple(attrs["dims"]), inputs[0].dtype


register(OpDef("regroup", _regroup_infer, lambda cg, node, args: (
    f"tl.reshape({args[0]}, [{', '.join(cg.block(d) for d in node.out.shape)}])"), "view"))


def _broadcast_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    return tuple(attrs["dims"]), inputs[0].dtype


register(OpDef("broadcast", _broadcast_infer, lambda cg, node, args: (
    f"tl.broadcast_to({args[0]}, [{', '.join(cg.block(d) for d in node.out.shape)}])"), "view"))


def _flip_infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    return tuple(inputs[0].shape), inputs[0].dtype


register(OpDef("flip", _flip_infer,
               lambda cg, node, args: f"tl.flip({args[0]}, {node.attrs['dim']})", "view"))
