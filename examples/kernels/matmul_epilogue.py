"""Matmul with a fused epilogue: ``relu(a @ b + bias)`` in one kernel.

Example:
    >>> a, b, bias = make_inputs("test", seed=0)
    >>> matmul_bias_relu(a, b, bias).min() >= 0  # doctest: +SKIP
    tensor(True)
"""

from __future__ import annotations

import torch

import torchship as ts
from examples.kernels import matmul as _mm
from examples.kernels._common import FLOAT_DTYPES, check_key, generator, nbytes, randn


@ts.kernel
def matmul_bias_relu(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``relu(a @ b + bias)``; bias ``[n]`` is added to the float32 accumulator."""
    m, k = a.size()
    k2, n = b.size()
    if k != k2 or bias.shape != (n,):
        raise ValueError(
            f"matmul_bias_relu: expected a [m, k], b [k, n], bias [n]; got {tuple(a.shape)}, "
            f"{tuple(b.shape)}, {tuple(bias.shape)}"
        )
    out = torch.empty([m, n], dtype=a.dtype, device=a.device)
    for tm, tn in ts.tile([m, n]):
        acc = ts.zeros([tm, tn], dtype=torch.float32)
        for tk in ts.tile(k):
            acc = ts.dot(a[tm, tk], b[tk, tn], acc=acc)
        acc = acc + bias[tn].to(torch.float32)
        out[tm, tn] = torch.relu(acc).to(a.dtype)
    return out


VARIANTS = {"matmul_bias_relu": (matmul_bias_relu, {})}
DTYPES = FLOAT_DTYPES
TOLERANCE = _mm.TOLERANCE
SHAPES = _mm.SHAPES


def reference(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Plain torch.

    Example:
        >>> reference(torch.eye(2), -torch.eye(2), torch.tensor([0.5, 2.0])).tolist()
        [[0.0, 2.0], [0.5, 1.0]]
    """
    return torch.relu(a @ b + bias)


def make_inputs(
    shape_key: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    *, seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """a ``[m, k]``, b ``[k, n]``, bias ``[n]``.

    Example:
        >>> [tuple(t.shape) for t in make_inputs("test", seed=0)]
        [(65, 97), (97, 81), (81,)]
    """
    m, k, n = check_key(shape_key, SHAPES)
    g = generator(device, seed)
    a = randn((m, k), device, dtype, gen=g)
    b = randn((k, n), device, dtype, gen=g)
    return a, b, randn((n,), device, dtype, gen=g)


def BYTES(args: tuple[torch.Tensor, ...]) -> int:  # noqa: N802
    """Matmul traffic plus the bias.

    Example:
        >>> BYTES((torch.zeros(2, 3), torch.zeros(3, 4), torch.zeros(4)))
        104
    """
    return _mm.BYTES(args[:2]) + nbytes(args[2])


def FLOPS(args: tuple[torch.Tensor, ...]) -> int:  # noqa: N802
    """``2 m n k`` plus the epilogue's add and max.

    Example:
        >>> FLOPS((torch.zeros(2, 3), torch.zeros(3, 4), torch.zeros(4)))
        64
    """
    return _mm.FLOPS(args[:2]) + 2 * args[0].shape[0] * args[1].shape[1]
