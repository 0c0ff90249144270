"""torchship.kernels: a tile language embedded in Python, compiled to Triton.

Example:
    >>> import torch, torchship.kernels as tk
    >>> @tk.kernel
    ... def double(x: torch.Tensor) -> torch.Tensor:   # doctest: +SKIP
    ...     out = torch.empty_like(x)
    ...     for t in tk.tile(x.size(0)):
    ...         out[t] = x[t] * 2
    ...     return out
"""

from __future__ import annotations

from torchship.kernels.config import Config, ConfigSpace
from torchship.kernels.errors import (
    KernelConfigError,
    KernelError,
    KernelLaunchError,
    KernelSyntaxError,
    KernelTypeError,
)
from torchship.kernels.language import (
    Tile,
    associative_scan,
    atomic_add,
    dot,
    full,
    grid,
    rand,
    randn,
    reduce,
    register_block_size,
    register_tunable,
    static_range,
    tile,
    zeros,
)
from torchship.kernels.masked import load, store
from torchship.kernels.runtime import BoundKernel, Kernel, kernel

__all__ = [
    "BoundKernel",
    "Config",
    "ConfigSpace",
    "Kernel",
    "KernelConfigError",
    "KernelError",
    "KernelLaunchError",
    "KernelSyntaxError",
    "KernelTypeError",
    "Tile",
    "associative_scan",
    "atomic_add",
    "dot",
    "full",
    "grid",
    "kernel",
    "load",
    "rand",
    "randn",
    "reduce",
    "register_block_size",
    "register_tunable",
    "static_range",
    "store",
    "tile",
    "zeros",
]
