"""Element-wise add of two 2-D tensors: the smallest tile kernel.

Run: ``python -m examples.kernels add`` (reference mode and compiled, checked against torch).

Example:
    >>> x, y = make_inputs("test", seed=0)
    >>> torch.equal(add(x, y), x + y)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import torch

import torchship as ts
from examples.kernels._common import (
    FLOAT_DTYPES,
    ROW_TOLERANCE,
    check_key,
    generator,
    nbytes,
    randn,
)


@ts.kernel
def add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + y`` for two tensors of the same 2-D shape and dtype."""
    m, n = x.size()
    out = torch.empty_like(x)
    for tm, tn in ts.tile([m, n]):
        out[tm, tn] = x[tm, tn] + y[tm, tn]
    return out


VARIANTS = {"add": (add, {})}
DTYPES = FLOAT_DTYPES
TOLERANCE = ROW_TOLERANCE
SHAPES = {"test": (67, 129), "gpu_small": (4096, 4096), "gpu_large": (8192, 8192)}


def reference(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Plain torch.

    Example:
        >>> reference(torch.ones(1, 2), torch.ones(1, 2)).tolist()
        [[2.0, 2.0]]
    """
    return x + y


def make_inputs(
    shape_key: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    *, seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random ``[m, n]`` tensors.

    Example:
        >>> [t.shape for t in make_inputs("test", seed=0)]
        [torch.Size([67, 129]), torch.Size([67, 129])]
    """
    m, n = check_key(shape_key, SHAPES)
    g = generator(device, seed)
    return randn((m, n), device, dtype, gen=g), randn((m, n), device, dtype, gen=g)


def BYTES(args: tuple[torch.Tensor, ...]) -> int:  # noqa: N802 - benchmark interface name
    """Read x and y, write out.

    Example:
        >>> BYTES((torch.zeros(2, 2), torch.zeros(2, 2)))
        48
    """
    return nbytes(args[0]) * 3


def FLOPS(args: tuple[torch.Tensor, ...]) -> int:  # noqa: N802
    """One add per element.

    Example:
        >>> FLOPS((torch.zeros(2, 2), torch.zeros(2, 2)))
        4
    """
    return args[0].numel()
