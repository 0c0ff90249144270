"""LayerNorm forward over the last dim of a 2-D tensor, with weight, bias and eps.

Example:
    >>> x, w, b = make_inputs("test", seed=0)
    >>> layer_norm(x, w, b).shape  # doctest: +SKIP
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
def layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps) * weight + bias`` per row, statistics in float32."""
    m, n = x.size()
    out = torch.empty_like(x)
    for tm in ts.tile(m):
        row = x[tm, :].to(torch.float32)
        mean = row.mean(dim=1, keepdim=True)
        centered = row - mean
        var = (centered * centered).mean(dim=1, keepdim=True)
        normed = centered * torch.rsqrt(var + eps)
        y = normed * weight[None, :].to(torch.float32) + bias[None, :].to(torch.float32)
        out[tm, :] = y.to(x.dtype)
    return out


VARIANTS = {"layer_norm": (layer_norm, {}), "layer_norm_eps": (layer_norm, {"eps": 1e-2})}
DTYPES = FLOAT_DTYPES
TOLERANCE = ROW_TOLERANCE
SHAPES = {"test": (67, 129), "gpu_small": (4096, 4096), "gpu_large": (8192, 8192)}


def reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Plain torch.

    Example:
        >>> reference(torch.tensor([[1.0, 3.0]]), torch.ones(2), torch.zeros(2), 0.0).tolist()
        [[-1.0, 1.0]]
    """
    return torch.nn.functional.layer_norm(x, (x.size(-1),), weight, bias, eps)


def make_inputs(
    shape_key: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    *, seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x ``[m, n]`` (offset from zero, so centering matters), weight and bias ``[n]``.

    Example:
        >>> [tuple(t.shape) for t in make_inputs("test", seed=0)]
        [(67, 129), (129,), (129,)]
    """
    m, n = check_key(shape_key, SHAPES)
    g = generator(device, seed)
    x = (randn((m, n), device, torch.float32, gen=g) * 2.0 + 0.5).to(dtype)
    weight = randn((n,), device, dtype, gen=g)
    bias = randn((n,), device, dtype, gen=g)
    return x, weight, bias


def BYTES(args: tuple[torch.Tensor, ...], **kwargs: object) -> int:  # noqa: N802
    """Read x, weight, bias; write out.

    Example:
        >>> BYTES((torch.zeros(2, 2), torch.zeros(2), torch.zeros(2)))
        48
    """
    x, w, b = args[:3]
    return 2 * nbytes(x) + nbytes(w, b)


def FLOPS(args: tuple[torch.Tensor, ...], **kwargs: object) -> int:  # noqa: N802
    """About 8 flops per element (two reductions, center, square, scale, affine).

    Example:
        >>> FLOPS((torch.zeros(2, 2), torch.zeros(2), torch.zeros(2)))
        32
    """
    return 8 * args[0].numel()
