"""Row softmax, two ways: one pass with the whole row in registers, and the online
two-pass form that streams the row in tiles (for rows too long for one block).

Example:
    >>> (x,) = make_inputs("test", seed=0)
    >>> torch.allclose(softmax(x), torch.softmax(x, dim=1))  # doctest: +SKIP
    True
"""

from __future__ import annotations

import torch

import torchship as ts
from examples.kernels._common import FLOAT_DTYPES, ROW_TOLERANCE, check_key, nbytes, randn


@ts.kernel
def softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1 of a 2-D tensor; each program owns whole rows."""
    out = torch.empty_like(x)
    for tm in ts.tile(x.size(0)):
        row = x[tm, :].to(torch.float32)
        e = torch.exp(row - row.amax(dim=1, keepdim=True))
        out[tm, :] = (e / e.sum(dim=1, keepdim=True)).to(x.dtype)
    return out


@ts.kernel
def softmax_two_pass(x: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1: an online pass for max and normaliser, then a pass to write."""
    m, n = x.size()
    out = torch.empty_like(x)
    for tm in ts.tile(m):
        row_max = ts.full([tm, 1], float("-inf"), dtype=torch.float32)
        denom = ts.zeros([tm, 1], dtype=torch.float32)
        for tn in ts.tile(n):
            chunk = x[tm, tn].to(torch.float32)
            new_max = torch.maximum(row_max, chunk.amax(dim=1, keepdim=True))
            denom = denom * torch.exp(row_max - new_max) + torch.exp(chunk - new_max).sum(
                dim=1, keepdim=True
            )
            row_max = new_max
        for tn in ts.tile(n):
            chunk = x[tm, tn].to(torch.float32)
            out[tm, tn] = (torch.exp(chunk - row_max) / denom).to(x.dtype)
    return out


VARIANTS = {"softmax": (softmax, {}), "softmax_two_pass": (softmax_two_pass, {})}
DTYPES = FLOAT_DTYPES
TOLERANCE = ROW_TOLERANCE
SHAPES = {"test": (67, 129), "gpu_small": (4096, 4096), "gpu_large": (8192, 8192)}


def reference(x: torch.Tensor) -> torch.Tensor:
    """Plain torch (computed in x's dtype).

    Example:
        >>> reference(torch.zeros(1, 2)).tolist()
        [[0.5, 0.5]]
    """
    return torch.softmax(x, dim=1)


def make_inputs(
    shape_key: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    *, seed: int | None = None,
) -> tuple[torch.Tensor]:
    """One random ``[m, n]`` tensor with a spread of magnitudes (scale 3).

    Example:
        >>> make_inputs("test", seed=0)[0].shape
        torch.Size([67, 129])
    """
    m, n = check_key(shape_key, SHAPES)
    return (randn((m, n), device, dtype, seed=seed, scale=3.0),)


def BYTES(args: tuple[torch.Tensor, ...]) -> int:  # noqa: N802 - benchmark interface name
    """Read x once, write out once.

    Example:
        >>> BYTES((torch.zeros(2, 2),))
        32
    """
    return 2 * nbytes(args[0])


def FLOPS(args: tuple[torch.Tensor, ...]) -> int:  # noqa: N802
    """max, sub, exp, sum, div: about 5 per element.

    Example:
        >>> FLOPS((torch.zeros(2, 2),))
        20
    """
    return 5 * args[0].numel()
