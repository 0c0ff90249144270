"""Row sums, two ways: ``row_sum`` holds a whole row per program; ``long_sum`` loops over
the row in tiles with a float32 accumulator (for rows too long for one block).

Example:
    >>> (x,) = make_inputs("test", seed=0)
    >>> row_sum(x).shape  # doctest: +SKIP
    torch.Size([67])
"""

from __future__ import annotations

import torch

import torchship as ts
from examples.kernels._common import FLOAT_DTYPES, check_key, nbytes, randn


@ts.kernel
def row_sum(x: torch.Tensor) -> torch.Tensor:
    """``x.sum(dim=1)`` of a 2-D tensor, accumulated in float32, in x's dtype."""
    m = x.size(0)
    out = torch.empty([m], dtype=x.dtype, device=x.device)
    for tm in ts.tile(m):
        out[tm] = x[tm, :].to(torch.float32).sum(dim=1).to(x.dtype)
    return out


@ts.kernel
def long_sum(x: torch.Tensor) -> torch.Tensor:
    """``x.sum(dim=1)``, streaming each row in tiles into a float32 accumulator."""
    m, n = x.size()
    out = torch.empty([m], dtype=x.dtype, device=x.device)
    for tm in ts.tile(m):
        acc = ts.zeros([tm], dtype=torch.float32)
        for tn in ts.tile(n):
            acc = acc + x[tm, tn].to(torch.float32).sum(dim=1)
        out[tm] = acc.to(x.dtype)
    return out


VARIANTS = {"sum": (row_sum, {}), "long_sum": (long_sum, {})}
DTYPES = FLOAT_DTYPES
# Sums of n unit normals have magnitude ~sqrt(n) and float32 rounding error ~eps*sqrt(n)*log(n):
# ~5e-4 for the 256K-long rows of gpu_large, whatever the order of accumulation.
TOLERANCE = {
    torch.float32: {"atol": 1e-3, "rtol": 1e-5},
    torch.float16: {"atol": 2e-2, "rtol": 2e-3},
    torch.bfloat16: {"atol": 1e-1, "rtol": 1.6e-2},
}
SHAPES = {"test": (37, 1000), "gpu_small": (4096, 4096), "gpu_large": (1024, 262144)}


def reference(x: torch.Tensor) -> torch.Tensor:
    """Plain torch.

    Example:
        >>> reference(torch.ones(2, 3)).tolist()
        [3.0, 3.0]
    """
    return x.sum(dim=1)


def make_inputs(
    shape_key: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    *, seed: int | None = None,
) -> tuple[torch.Tensor]:
    """One random ``[m, n]`` tensor (``"gpu_large"``: long rows of 256K elements).

    Example:
        >>> make_inputs("test", seed=0)[0].shape
        torch.Size([37, 1000])
    """
    m, n = check_key(shape_key, SHAPES)
    return (randn((m, n), device, dtype, seed=seed),)


def BYTES(args: tuple[torch.Tensor, ...]) -> int:  # noqa: N802
    """Read x, write one value per row.

    Example:
        >>> BYTES((torch.zeros(2, 3),))
        32
    """
    x = args[0]
    return nbytes(x) + x.shape[0] * x.element_size()


def FLOPS(args: tuple[torch.Tensor, ...]) -> int:  # noqa: N802
    """One add per element.

    Example:
        >>> FLOPS((torch.zeros(2, 3),))
        6
    """
    return args[0].numel()
