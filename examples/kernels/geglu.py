"""GeGLU activation ``gelu(a) * b`` with torch's default (exact, erf) GELU, element-wise.

Example:
    >>> a, b = make_inputs("test", seed=0)
    >>> geglu(a, b).shape  # doctest: +SKIP
    torch.Size([67, 129])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
def geglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``gelu(a) * b`` (erf GELU) computed in float32, stored in a's dtype."""
    m, n = a.size()
    out = torch.empty_like(a)
    for tm, tn in ts.tile([m, n]):
        gate = a[tm, tn].to(torch.float32)
        out[tm, tn] = (F.gelu(gate) * b[tm, tn].to(torch.float32)).to(a.dtype)
    return out


VARIANTS = {"geglu": (geglu, {})}
DTYPES = FLOAT_DTYPES
TOLERANCE = ROW_TOLERANCE
SHAPES = {"test": (67, 129), "gpu_small": (4096, 4096), "gpu_large": (8192, 14336)}


def reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Plain torch.

    Example:
        >>> reference(torch.zeros(1, 1), torch.ones(1, 1)).tolist()
        [[0.0]]
    """
    return F.gelu(a) * b


def make_inputs(
    shape_key: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    *, seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gate a and up-projection b, both ``[m, n]`` (a with scale 3 to reach gelu's tails).

    Example:
        >>> [tuple(t.shape) for t in make_inputs("test", seed=0)]
        [(67, 129), (67, 129)]
    """
    m, n = check_key(shape_key, SHAPES)
    g = generator(device, seed)
    return randn((m, n), device, dtype, gen=g, scale=3.0), randn((m, n), device, dtype, gen=g)


def BYTES(args: tuple[torch.Tensor, ...]) -> int:  # noqa: N802
    """Read a and b, write out.

    Example:
        >>> BYTES((torch.zeros(2, 2), torch.zeros(2, 2)))
        48
    """
    return 3 * nbytes(args[0])


def FLOPS(args: tuple[torch.Tensor, ...]) -> int:  # noqa: N802
    """erf, mul, add, two muls: about 6 per element (erf counted as one).

    Example:
        >>> FLOPS((torch.zeros(2, 2), torch.zeros(2, 2)))
        24
    """
    return 6 * args[0].numel()
