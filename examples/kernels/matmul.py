"""Tiled matrix multiply ``a @ b`` with float32 accumulation (fp32, fp16, bf16 inputs).

Example:
    >>> a, b = make_inputs("test", seed=0)
    >>> matmul(a, b).shape  # doctest: +SKIP
    torch.Size([65, 81])
"""

from __future__ import annotations

import torch

import torchship as ts
from examples.kernels._common import FLOAT_DTYPES, check_key, generator, nbytes, randn


@ts.kernel
def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[m, k] @ [k, n] -> [m, n]`` in a's dtype; each program owns one output tile."""
    m, k = a.size()
    k2, n = b.size()
    if k != k2:
        raise ValueError(f"matmul: inner sizes differ: a is {m}x{k}, b is {k2}x{n}")
    out = torch.empty([m, n], dtype=a.dtype, device=a.device)
    for tm, tn in ts.tile([m, n]):
        acc = ts.zeros([tm, tn], dtype=torch.float32)
        for tk in ts.tile(k):
            acc = ts.dot(a[tm, tk], b[tk, tn], acc=acc)
        out[tm, tn] = acc.to(a.dtype)
    return out


@ts.kernel
def matmul_split_k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` with the k dimension split across programs, partial tiles summed with
    ``ts.atomic_add`` into a float32 buffer (more parallelism when m and n are small)."""
    m, k = a.size()
    k2, n = b.size()
    if k != k2:
        raise ValueError(f"matmul_split_k: inner sizes differ: a is {m}x{k}, b is {k2}x{n}")
    out = torch.zeros([m, n], dtype=torch.float32, device=a.device)
    split = ts.register_block_size(64, 1024)
    for tm, tn, ts_k in ts.tile([m, n, k], block_size=[None, None, split]):
        acc = ts.zeros([tm, tn], dtype=torch.float32)
        for tk in ts.tile(ts_k.begin, ts_k.end):
            acc = ts.dot(a[tm, tk], b[tk, tn], acc=acc)
        ts.atomic_add(out, [tm, tn], acc)
    return out.to(a.dtype)


VARIANTS = {"matmul": (matmul, {}), "matmul_split_k": (matmul_split_k, {})}
DTYPES = FLOAT_DTYPES
# Inputs have unit variance, so outputs grow like sqrt(k) and float32 accumulation error like
# eps*sqrt(k)*log(k) (~1e-4 at k=4096, also for outputs near zero): tolerances follow that and
# the output dtype's rounding.
TOLERANCE = {
    torch.float32: {"atol": 5e-4, "rtol": 1e-4},
    torch.float16: {"atol": 2e-2, "rtol": 5e-3},
    torch.bfloat16: {"atol": 1e-1, "rtol": 1.6e-2},
}
SHAPES = {
    "test": (65, 97, 81),
    "gpu_small": (2048, 2048, 2048),
    "gpu_large": (4096, 4096, 4096),
}


def reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Plain torch.

    Example:
        >>> reference(torch.eye(2), torch.ones(2, 3)).tolist()
        [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    return a @ b


def make_inputs(
    shape_key: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    *, seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """a ``[m, k]`` and b ``[k, n]`` (``"test"``: 65x97 @ 97x81, ragged).

    Example:
        >>> [tuple(t.shape) for t in make_inputs("test", seed=0)]
        [(65, 97), (97, 81)]
    """
    m, k, n = check_key(shape_key, SHAPES)
    g = generator(device, seed)
    return randn((m, k), device, dtype, gen=g), randn((k, n), device, dtype, gen=g)


def BYTES(args: tuple[torch.Tensor, ...]) -> int:  # noqa: N802
    """Read a and b once, write out once.

    Example:
        >>> BYTES((torch.zeros(2, 3), torch.zeros(3, 4)))
        88
    """
    a, b = args[:2]
    return nbytes(a, b) + a.shape[0] * b.shape[1] * a.element_size()


def FLOPS(args: tuple[torch.Tensor, ...]) -> int:  # noqa: N802
    """``2 m n k``.

    Example:
        >>> FLOPS((torch.zeros(2, 3), torch.zeros(3, 4)))
        48
    """
    a, b = args[:2]
    return 2 * a.shape[0] * a.shape[1] * b.shape[1]
