"""Host values captured by a launch site, as the device code sees them.

A captured tensor becomes a :class:`TensorRef` (a pointer argument plus size/stride arguments
created on demand); ints and floats become scalar kernel arguments; bools, dtypes, ``None`` and
strings are compile-time constants (part of the specialisation key); ``ts.register_block_size``
symbols name a block-size parameter. Each kernel argument is a :class:`Param` with the host
expression the launcher evaluates to pass it.

Example:
    >>> spec_of(3), spec_of(True), spec_of(2.5)
    ('i', ('b', True), 'f')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from torchship.kernels.ir import Value

__all__ = ["BlockSym", "NoHostArithmetic", "Param", "TensorRef", "spec_of"]


class NoHostArithmetic:
    """Refuses host arithmetic on a ``ts.register_block_size(lo, hi)`` symbol (Helion sizes
    partial sums by ``cdiv(m, block)``) in both modes: the host code is traced once for every
    block size the config space offers, so a size computed from the symbol has no value.

    Example:
        >>> try:
        ...     BlockSym(0, 32, 64) + 1
        ... except Exception as e:
        ...     print(e.hint)
        fix the block with an int in host code (block = 64; ts.tile(m, block_size=block)), or size the partials by the smallest block ((m + 31) // 32) and index them with the tile's id
    """

    lo: int
    hi: int

    def _host_arithmetic(self, *_: Any) -> Any:
        from torchship.kernels.errors import KernelTypeError

        raise KernelTypeError(
            f"host code computes with a ts.register_block_size({self.lo}, {self.hi}) symbol "
            "(e.g. cdiv(m, block) rows of partial sums); it is a block size only inside tile "
            "loops", hint="fix the block with an int in host code (block = 64; ts.tile(m, "
            "block_size=block)), or size the partials by the smallest block "
            f"((m + {self.lo - 1}) // {self.lo}) and index them with the tile's id")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _host_arithmetic
    __floordiv__ = __rfloordiv__ = __truediv__ = __rtruediv__ = __mod__ = _host_arithmetic
    __rmod__ = __divmod__ = __rdivmod__ = __pow__ = __rpow__ = __neg__ = _host_arithmetic
    __lshift__ = __rlshift__ = __rshift__ = __rrshift__ = _host_arithmetic
    __lt__ = __le__ = __gt__ = __ge__ = _host_arithmetic
    # int(bs), range(0, n, bs): a size computed from the symbol
    __int__ = __index__ = __float__ = _host_arithmetic


@dataclass(eq=False)
class BlockSym(NoHostArithmetic):
    """A ``ts.register_block_size(lo, hi)`` symbol in compiled mode (``index``: call order)."""

    index: int
    lo: int
    hi: int

    def __repr__(self) -> str:
        return f"BlockSym(#{self.index}, lo={self.lo}, hi={self.hi})"


@dataclass(eq=False)
class Param:
    """One kernel parameter: its name in the generated code and how the host computes it."""

    name: str
    getter: str  # python expression over (a: tile args, c: captures)
    value: Value | None  # the device-side scalar value (None for pointers)
    constexpr: bool = False
    hint: Any = None  # the value seen when the kernel was traced


@dataclass(eq=False)
class TensorRef:
    """A captured tensor: pointer parameter plus size/stride parameters made on demand."""

    name: str
    getter: str
    dtype: torch.dtype
    ndim: int
    hint_shape: tuple[int, ...]
    hint_strides: tuple[int, ...]
    ptr: Param
    tdesc_ok: bool = False  # last stride 1, other strides and base 16-byte aligned
    big: bool = False  # 2**31 elements or more: 64-bit offsets
    sizes: dict[int, Param] = field(default_factory=dict)
    strides: dict[int, Param] = field(default_factory=dict)


#: tensors with this many elements or more get 64-bit offsets (tests lower it)
BIG_TENSOR = 2**31


def _big() -> int:
    return BIG_TENSOR


def tdesc_ok(t: torch.Tensor) -> bool:
    """Whether a tensor can be read through a TMA tensor descriptor.

    Example:
        >>> tdesc_ok(torch.zeros(4, 8)), tdesc_ok(torch.zeros(4, 8).t())
        (True, False)
    """
    if t.dim() == 0 or t.stride(-1) != 1:
        return False
    size = t.element_size()
    return t.data_ptr() % 16 == 0 and all((s * size) % 16 == 0 for s in t.stride()[:-1])


def tdesc_spec(values: tuple[Any, ...]) -> tuple[bool, ...]:
    """TMA eligibility of each captured tensor (part of the key in tensor_descriptor mode)."""
    return tuple(tdesc_ok(v) for v in values if isinstance(v, torch.Tensor))


def spec_of(value: Any) -> Any:
    """The part of a captured value that the compiled code depends on.

    Example:
        >>> import torch
        >>> spec_of(torch.zeros(2, 3, dtype=torch.float16))
        ('t', torch.float16, 2, 'cpu', False)
    """
    t = type(value)
    if t is torch.Tensor or isinstance(value, torch.Tensor):
        return ("t", value.dtype, value.dim(), value.device.type, value.numel() >= _big())
    if t is bool:
        return ("b", value)
    if t is int:
        return "i"
    if t is float:
        return "f"
    if value is None or t is str or t is torch.dtype:
        return ("c", value)
    if t is BlockSym:
        return ("bs", value.index)
    if isinstance(value, (tuple, list, torch.Size)):
        return tuple(spec_of(v) for v in value)
    return ("?", t.__name__)
