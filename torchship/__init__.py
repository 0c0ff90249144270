"""torchship: ship PyTorch models to production.

Three pillars behind one package:

- ``torchship.kernels``: a tile language compiled to Triton (``ts.kernel``, ``ts.tile``, ...).
- ``torchship.weights``: a strict, safetensors-compatible weight format.
- ``torchship.edge``: export a model to one program file and run it without PyTorch.

Importing ``torchship`` imports neither torch nor triton: the kernel names below are
resolved lazily, so the numpy weights API and the edge runtime work on a numpy-only install.

Example:
    >>> import torchship as ts
    >>> ts.__version__
    '0.1.0'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it; resolved on first access (PEP 562).
_LAZY: dict[str, str] = {
    # kernels
    "kernel": "torchship.kernels",
    "tile": "torchship.kernels",
    "grid": "torchship.kernels",
    "Config": "torchship.kernels",
    "zeros": "torchship.kernels",
    "full": "torchship.kernels",
    "dot": "torchship.kernels",
    "atomic_add": "torchship.kernels",
    "rand": "torchship.kernels",
    "randn": "torchship.kernels",
    "reduce": "torchship.kernels",
    "associative_scan": "torchship.kernels",
    "register_block_size": "torchship.kernels",
    "register_tunable": "torchship.kernels",
    "static_range": "torchship.kernels",
    "load": "torchship.kernels",
    "store": "torchship.kernels",
    "Tile": "torchship.kernels",
    "ConfigSpace": "torchship.kernels",
    "KernelError": "torchship.kernels",
    "KernelSyntaxError": "torchship.kernels",
    "KernelTypeError": "torchship.kernels",
    "KernelConfigError": "torchship.kernels",
    "KernelLaunchError": "torchship.kernels",
    # weights
    "safe_open": "torchship.weights",
    "SafetensorError": "torchship.weights",
    "save_file": "torchship.weights.torch",
    "load_file": "torchship.weights.torch",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'torchship' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
