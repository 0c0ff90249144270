"""torch's block factories in device code: ``torch.zeros/ones/empty/full(shape, ...)`` with
tiles and ints in the shape (Helion writes ``torch.zeros([tile_m, tile_n], device=x.device)``)
``t.new_zeros/new_ones/new_empty/new_full`` of a tensor argument (its dtype by default), and
``torch.arange(start, end, step)`` with compile-time ints; ``device=`` is accepted and
ignored (a block lives where the kernel runs).

They become the same ops as ``ts.zeros``/``ts.full`` (a shape entry that is a tile is the
tile's block, masked on the ragged last tile) and, for ``arange``, positions along a constant
dim (a power-of-two length: Triton's ``tl.arange``), int64 like torch.

Example:
    >>> sorted(COMPOSED)
    ['arange', 'empty', 'ones', 'torch_full', 'torch_zeros']
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

import torch

from torchship.kernels.errors import KernelTypeError
from torchship.kernels.ir import ConstDim, Value


def _shape(args: list[Any], kwargs: dict[str, Any]) -> Any:
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return tuple(args) if args else kwargs.get("size")


def factory(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Value:
    """``torch.zeros/ones/empty/full/arange`` called in device code."""
    from torchship.kernels.frontend import funcs

    dtype = kwargs.get("dtype")
    if name == "arange":
        return _arange(h, args, dtype, node)
    if name == "torch_full":
        shape, value = args[0] if args else kwargs.get("size"), \
            args[1] if len(args) > 1 else kwargs.get("fill_value")
        if dtype is None:  # torch infers it from the fill value
            dtype = torch.bool if isinstance(value, bool) else torch.int64 if \
                isinstance(value, int) else value.dtype if isinstance(value, Value) else \
                torch.get_default_dtype()
    else:
        shape, value = _shape(args, kwargs), 1 if name == "ones" else 0
    dtype = dtype or torch.get_default_dtype()
    return funcs.call(h, "full", [shape, value, dtype], {}, node)


NEW_METHODS = {"new_zeros": "torch_zeros", "new_ones": "ones", "new_empty": "empty",
        "new_full": "torch_full"}


def new_block(h: Any, dtype: torch.dtype, meth: str, args: list[Any], kwargs: dict[str, Any],
              node: ast.AST) -> Value:
    """``t.new_zeros/new_ones/new_empty/new_full(shape, ...)`` of a tensor argument ``t`` in
    device code: the torch factory with ``t``'s dtype unless ``dtype=`` says otherwise
    (Helion's RMS-norm backward: ``x.new_zeros(n, dtype=torch.float32)``)."""
    return factory(h, NEW_METHODS[meth], args, {**kwargs, "dtype": kwargs.get("dtype") or dtype}, node)


def _arange(h: Any, args: list[Any], dtype: Any, node: ast.AST) -> Value:
    text = ast.unparse(node)
    ints = [h.b.const_int(a, f"an argument of `{text}`",
                          hint="arange needs compile-time ints; for a tile's positions use "
                          "tile.index") for a in args]
    start, end, step = (0, ints[0], 1) if len(ints) == 1 else (*ints, 1)[:3]
    n = max(0, -((start - end) // step))
    if n < 1 or n & (n - 1):
        raise h.err(KernelTypeError, f"`{text}` has {n} elements: blocks have power-of-two "
                    "sizes", hint="make the length a power of two and mask the extra "
                    "positions with torch.where; for a tile's positions use tile.index",
                    node=node)
    base = h.b.emit("full", [], {"shape": (ConstDim(n),), "dtype": torch.int64, "value": 0})
    out = h.b.emit("dim_index", [base], {"dim": 0})
    if step != 1:
        out = h.b.emit("mul", [out, step])
    if start:
        out = h.b.emit("add", [out, start])
    return out if dtype in (None, torch.int64) else h.b.emit("to", [out], {"dtype": dtype})


COMPOSED: dict[str, Callable[..., Any]] = {
    n: factory for n in ("torch_zeros", "ones", "empty", "torch_full", "arange")}
_TORCH = torch._C._VariableFunctions  # the builtins themselves, even if torch.empty is patched
#: torch callables of device code -> composition name ("zeros"/"full" are ts.zeros/ts.full)
FUNCTIONS: dict[Any, str] = {_TORCH.zeros: "torch_zeros", _TORCH.ones: "ones",
                             _TORCH.empty: "empty", _TORCH.full: "torch_full",
                             _TORCH.arange: "arange"}
