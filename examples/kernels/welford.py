"""Row variance and mean (``torch.var_mean(x, dim=1)``) with Welford/Chan merging.

The row is streamed in tiles; each tile's mean and sum of squared deviations are merged
into running statistics, which stays accurate when the mean is large compared to the spread
(the naive ``E[x^2] - E[x]^2`` does not).

Example:
    >>> (x,) = make_inputs("test", seed=0)
    >>> var, mean = var_mean(x)  # doctest: +SKIP
"""

from __future__ import annotations

import torch

import torchship as ts
from examples.kernels._common import FLOAT_DTYPES, check_key, nbytes, randn


@ts.kernel
def var_mean(x: torch.Tensor, correction: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row ``(var, mean)`` of a 2-D tensor, statistics in float32, outputs in x's dtype."""
    m, n = x.size()
    var = torch.empty([m], dtype=x.dtype, device=x.device)
    mean_out = torch.empty([m], dtype=x.dtype, device=x.device)
    for tm in ts.tile(m):
        count = ts.zeros([tm, 1], dtype=torch.float32)
        mean = ts.zeros([tm, 1], dtype=torch.float32)
        m2 = ts.zeros([tm, 1], dtype=torch.float32)
        for tn in ts.tile(n):
            chunk = x[tm, tn].to(torch.float32)
            chunk_count = tn.end - tn.begin
            chunk_mean = chunk.mean(dim=1, keepdim=True)
            dev = chunk - chunk_mean
            chunk_m2 = (dev * dev).sum(dim=1, keepdim=True)
            new_count = count + chunk_count
            delta = chunk_mean - mean
            mean = mean + delta * (chunk_count / new_count)
            m2 = m2 + chunk_m2 + delta * delta * (count * chunk_count / new_count)
            count = new_count
        var[tm] = (m2 / (n - correction)).to(x.dtype)[:, 0]
        mean_out[tm] = mean.to(x.dtype)[:, 0]
    return var, mean_out


VARIANTS = {"var_mean": (var_mean, {}), "var_mean_population": (var_mean, {"correction": 0})}
DTYPES = FLOAT_DTYPES
TOLERANCE = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float16: {"atol": 2e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 1.6e-2, "rtol": 1.6e-2},
}
SHAPES = {"test": (37, 1000), "gpu_small": (4096, 4096), "gpu_large": (1024, 262144)}


def reference(x: torch.Tensor, correction: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain torch.

    Example:
        >>> [t.tolist() for t in reference(torch.tensor([[1.0, 3.0]]))]
        [[2.0], [2.0]]
    """
    return torch.var_mean(x, dim=1, correction=correction)


def make_inputs(
    shape_key: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    *, seed: int | None = None,
) -> tuple[torch.Tensor]:
    """One ``[m, n]`` tensor with mean 10 and spread 2 (so naive formulas would lose digits).

    Example:
        >>> make_inputs("test", seed=0)[0].shape
        torch.Size([37, 1000])
    """
    m, n = check_key(shape_key, SHAPES)
    x = randn((m, n), device, torch.float32, seed=seed, scale=2.0) + 10.0
    return (x.to(dtype),)


def BYTES(args: tuple[torch.Tensor, ...], **kwargs: object) -> int:  # noqa: N802
    """Read x, write two values per row.

    Example:
        >>> BYTES((torch.zeros(2, 3),))
        40
    """
    x = args[0]
    return nbytes(x) + 2 * x.shape[0] * x.element_size()


def FLOPS(args: tuple[torch.Tensor, ...], **kwargs: object) -> int:  # noqa: N802
    """Sum, subtract, square, sum: about 4 per element.

    Example:
        >>> FLOPS((torch.zeros(2, 3),))
        24
    """
    return 4 * args[0].numel()
