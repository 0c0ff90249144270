"""RMSNorm forward over the last dim of a 2-D tensor: ``x / sqrt(mean(x^2) + eps) * weight``.

Example:
    >>> x, w = make_inputs("test", seed=0)
    >>> rms_norm(x, w).shape  # doctest: +SKIP
    torch.Size([67, 129])
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
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMS-normalise each row in float32, scale by ``weight``, cast back to x's dtype."""
    m, n = x.size()
    out = torch.empty_like(x)
    for tm in ts.tile(m):
        row = x[tm, :].to(torch.float32)
        inv_rms = torch.rsqrt((row * row).mean(dim=1, keepdim=True) + eps)
        out[tm, :] = (row * inv_rms * weight[None, :].to(torch.float32)).to(x.dtype)
    return out


VARIANTS = {"rms_norm": (rms_norm, {}), "rms_norm_eps": (rms_norm, {"eps": 0.5})}
DTYPES = FLOAT_DTYPES
TOLERANCE = ROW_TOLERANCE
SHAPES = {"test": (67, 129), "gpu_small": (4096, 4096), "gpu_large": (8192, 8192)}


def reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Plain torch.

    Example:
        >>> reference(torch.tensor([[3.0, 4.0]]), torch.ones(2), 0.0).tolist()[0][0] > 0.84
        True
    """
    return torch.nn.functional.rms_norm(x, (x.size(-1),), weight, eps)


def make_inputs(
    shape_key: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    *, seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x ``[m, n]`` and weight ``[n]``.

    Example:
        >>> [tuple(t.shape) for t in make_inputs("test", seed=0)]
        [(67, 129), (129,)]
    """
    m, n = check_key(shape_key, SHAPES)
    g = generator(device, seed)
    return randn((m, n), device, dtype, gen=g), randn((n,), device, dtype, gen=g)


def BYTES(args: tuple[torch.Tensor, ...], **kwargs: object) -> int:  # noqa: N802
    """Read x and weight, write out.

    Example:
        >>> BYTES((torch.zeros(2, 2), torch.zeros(2)))
        40
    """
    return 2 * nbytes(args[0]) + nbytes(args[1])


def FLOPS(args: tuple[torch.Tensor, ...], **kwargs: object) -> int:  # noqa: N802
    """Square, sum, scale twice: about 4 per element.

    Example:
        >>> FLOPS((torch.zeros(2, 2), torch.zeros(2)))
        16
    """
    return 4 * args[0].numel()
