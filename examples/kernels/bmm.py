"""Batched matmul ``[b, m, k] @ [b, k, n]``: a 3-D tile grid, one batch entry per program.

Example:
    >>> a, b = make_inputs("test", seed=0)
    >>> bmm(a, b).shape  # doctest: +SKIP
    torch.Size([3, 65, 81])
"""

from __future__ import annotations

import torch

import torchship as ts
from examples.kernels._common import FLOAT_DTYPES, check_key, generator, nbytes, randn
from examples.kernels.matmul import TOLERANCE as _MM_TOLERANCE


@ts.kernel
def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.bmm(a, b)`` in a's dtype with float32 accumulation."""
    batch, m, k = a.size()
    batch2, k2, n = b.size()
    if batch != batch2 or k != k2:
        raise ValueError(f"bmm: shapes {tuple(a.shape)} and {tuple(b.shape)} do not match")
    out = torch.empty([batch, m, n], dtype=a.dtype, device=a.device)
    for tb, tm, tn in ts.tile([batch, m, n], block_size=[1, None, None]):
        i = tb.begin  # one batch entry per program: a scalar index keeps the blocks 2-D
        acc = ts.zeros([tm, tn], dtype=torch.float32)
        for tk in ts.tile(k):
            acc = ts.dot(a[i, tm, tk], b[i, tk, tn], acc=acc)
        out[i, tm, tn] = acc.to(a.dtype)
    return out


VARIANTS = {"bmm": (bmm, {})}
DTYPES = FLOAT_DTYPES
TOLERANCE = _MM_TOLERANCE
SHAPES = {
    "test": (3, 65, 97, 81),
    "gpu_small": (16, 1024, 1024, 1024),
    "gpu_large": (32, 2048, 2048, 2048),
}


def reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Plain torch.

    Example:
        >>> reference(torch.ones(2, 1, 3), torch.ones(2, 3, 1)).flatten().tolist()
        [3.0, 3.0]
    """
    return torch.bmm(a, b)


def make_inputs(
    shape_key: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    *, seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """a ``[b, m, k]`` and b ``[b, k, n]``.

    Example:
        >>> [tuple(t.shape) for t in make_inputs("test", seed=0)]
        [(3, 65, 97), (3, 97, 81)]
    """
    batch, m, k, n = check_key(shape_key, SHAPES)
    g = generator(device, seed)
    return randn((batch, m, k), device, dtype, gen=g), randn((batch, k, n), device, dtype, gen=g)


def BYTES(args: tuple[torch.Tensor, ...]) -> int:  # noqa: N802
    """Read a and b, write out.

    Example:
        >>> BYTES((torch.zeros(2, 2, 3), torch.zeros(2, 3, 4)))
        176
    """
    a, b = args[:2]
    return nbytes(a, b) + a.shape[0] * a.shape[1] * b.shape[2] * a.element_size()


def FLOPS(args: tuple[torch.Tensor, ...]) -> int:  # noqa: N802
    """``2 b m n k``.

    Example:
        >>> FLOPS((torch.zeros(2, 2, 3), torch.zeros(2, 3, 4)))
        96
    """
    a, b = args[:2]
    return 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
