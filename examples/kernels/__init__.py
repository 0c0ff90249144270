"""Example kernels written in the torchship tile language, one file per example.

Every module exports the same small interface, so tests and benchmarks can treat them alike:

- ``VARIANTS``: ``{name: (kernel, kwargs)}`` -- each ``kernel(*args, **kwargs)`` computes
  ``reference(*args, **kwargs)``; the first entry is the example's main kernel.
- ``reference(*args, **kwargs)``: the same computation in plain torch.
- ``make_inputs(shape_key, device="cpu", dtype=torch.float32, *, seed=None) -> tuple``: shape
  keys ``"test"`` (small and ragged: sizes that are not multiples of block sizes),
  ``"gpu_small"`` and ``"gpu_large"`` (realistic sizes for an H100).
- ``BYTES(args, **kwargs)`` / ``FLOPS(args, **kwargs)``: minimal memory traffic and useful
  floating-point operations, for achieved GB/s and TFLOP/s.
- ``TOLERANCE``: ``{dtype: {"atol": ..., "rtol": ...}}`` against a float64 reference.
- ``DTYPES``: the input dtypes the example supports.

Example:
    >>> from examples.kernels import EXAMPLES, load
    >>> "softmax" in EXAMPLES
    True
    >>> mod = load("softmax")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXAMPLES: tuple[str, ...] = (
    "add",
    "softmax",
    "layer_norm",
    "rms_norm",
    "matmul",
    "matmul_epilogue",
    "bmm",
    "attention",
    "cross_entropy",
    "swiglu",
    "geglu",
    "embedding",
    "sum",
    "welford",
)


def load(name: str) -> ModuleType:
    """Import ``examples.kernels.<name>`` (a name from :data:`EXAMPLES`).

    Example:
        >>> load("add").__name__  # doctest: +SKIP
        'examples.kernels.add'
    """
    if name not in EXAMPLES:
        raise KeyError(f"unknown kernel example {name!r}; known: {', '.join(EXAMPLES)}")
    return importlib.import_module(f"examples.kernels.{name}")
