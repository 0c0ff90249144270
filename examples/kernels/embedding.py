"""Embedding lookup: ``out[i, :] = weight[ids[i], :]`` -- a gather by loaded indices.

Example:
    >>> ids, weight = make_inputs("test", seed=0)
    >>> embedding(ids, weight).shape  # doctest: +SKIP
    torch.Size([75, 67])
"""

from __future__ import annotations

import torch

import torchship as ts
from examples.kernels._common import FLOAT_DTYPES, check_key, generator, nbytes, randn


@ts.kernel
def embedding(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Rows of ``weight [v, d]`` selected by int64 ``ids [n]`` -> ``[n, d]``."""
    n = ids.size(0)
    dim = weight.size(1)
    out = torch.empty([n, dim], dtype=weight.dtype, device=weight.device)
    for tn, td in ts.tile([n, dim]):
        rows = ids[tn]
        out[tn, td] = weight[rows, td]
    return out


@ts.kernel
def embedding_rows(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The same lookup with one program per id (``ts.grid``) copying its row in tiles."""
    n = ids.size(0)
    dim = weight.size(1)
    out = torch.empty([n, dim], dtype=weight.dtype, device=weight.device)
    for i in ts.grid(n):
        row = ids[i]
        for td in ts.tile(dim):
            out[i, td] = weight[row, td]
    return out


VARIANTS = {"embedding": (embedding, {}), "embedding_rows": (embedding_rows, {})}
DTYPES = FLOAT_DTYPES
TOLERANCE = {dt: {"atol": 0.0, "rtol": 0.0} for dt in FLOAT_DTYPES}  # a copy: exact
SHAPES = {
    "test": (75, 103, 67),
    "gpu_small": (8192, 32000, 4096),
    "gpu_large": (32768, 128256, 4096),
}


def reference(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Plain torch.

    Example:
        >>> reference(torch.tensor([1, 1]), torch.eye(2)).tolist()
        [[0.0, 1.0], [0.0, 1.0]]
    """
    return torch.nn.functional.embedding(ids, weight)


def make_inputs(
    shape_key: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    *, seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 ids ``[n]`` (with repeats) in ``[0, v)`` and a weight table ``[v, d]``.

    Example:
        >>> ids, w = make_inputs("test", seed=0)
        >>> tuple(ids.shape), tuple(w.shape), ids.dtype
        ((75,), (103, 67), torch.int64)
    """
    n, vocab, dim = check_key(shape_key, SHAPES)
    g = generator(device, seed)
    ids = torch.randint(0, vocab, (n,), device=device, generator=g, dtype=torch.int64)
    return ids, randn((vocab, dim), device, dtype, gen=g)


def BYTES(args: tuple[torch.Tensor, ...]) -> int:  # noqa: N802
    """Read the ids and the selected rows, write out.

    Example:
        >>> BYTES((torch.zeros(2, dtype=torch.int64), torch.zeros(5, 3)))
        64
    """
    ids, weight = args[:2]
    rows = ids.numel() * weight.shape[1] * weight.element_size()
    return nbytes(ids) + 2 * rows


def FLOPS(args: tuple[torch.Tensor, ...]) -> int:  # noqa: N802
    """None: a pure copy.

    Example:
        >>> FLOPS((torch.zeros(2, dtype=torch.int64), torch.zeros(5, 3)))
        0
    """
    return 0
