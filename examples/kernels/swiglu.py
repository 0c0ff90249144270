"""SwiGLU activation ``silu(a) * b`` (the gated MLP of Llama-style models), element-wise.

Example:
    >>> a, b = make_inputs("test", seed=0)
    >>> swiglu(a, b).shape  # doctest: +SKIP
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
def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``silu(a) * b`` computed in float32, stored in a's dtype."""
    m, n = a.size()
    out = torch.empty_like(a)
    for tm, tn in ts.tile([m, n]):
        gate = a[tm, tn].to(torch.float32)
        out[tm, tn] = (F.silu(gate) * b[tm, tn].to(torch.float32)).to(a.dtype)
    return out


VARIANTS = {"swiglu": (swiglu, {})}
DTYPES = FLOAT_DTYPES
TOLERANCE = ROW_TOLERANCE
SHAPES = {"test": (67, 129), "gpu_small": (4096, 4096), "gpu_large": (8192, 14336)}


def reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Plain torch.

    Example:
        >>> reference(torch.zeros(1, 1), torch.ones(1, 1)).tolist()
        [[0.0]]
    """
    return F.silu(a) * b


def make_inputs(
    shape_key: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    *, seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gate a and up-projection b, both ``[m, n]`` (a with scale 3 to reach silu's tails).

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
    """exp, add, div, two muls: about 5 per element.

    Example:
        >>> FLOPS((torch.zeros(2, 2), torch.zeros(2, 2)))
        20
    """
    return 5 * args[0].numel()
