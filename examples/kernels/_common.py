"""Helpers shared by the example files: seeded random inputs and default tolerances.

Example:
    >>> import torch
    >>> randn((2, 3), "cpu", torch.float16, seed=0).dtype
    torch.float16
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

#: Default tolerances of a kernel output against a float64 reference, per input dtype.
ROW_TOLERANCE: dict[torch.dtype, dict[str, float]] = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float16: {"atol": 2e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 1.6e-2, "rtol": 1.6e-2},
}

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def generator(device: str | torch.device, seed: int | None) -> torch.Generator | None:
    """A torch generator on ``device``, seeded by ``seed`` (fresh random seed if None).

    The meta device (shapes only, for benchmark tables) has no generator: None.

    Example:
        >>> generator("cpu", 3).initial_seed()
        3
    """
    if torch.device(device).type == "meta":
        return None
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(random.getrandbits(62) if seed is None else seed)
    return g


def randn(
    shape: Sequence[int],
    device: str | torch.device,
    dtype: torch.dtype,
    *,
    seed: int | None = None,
    gen: torch.Generator | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """Standard-normal values (times ``scale``) of ``dtype`` on ``device``.

    Example:
        >>> randn((4,), "cpu", torch.float32, seed=1).shape
        torch.Size([4])
    """
    g = gen if gen is not None else generator(device, seed)
    out = torch.randn(tuple(shape), device=device, dtype=torch.float32, generator=g)
    if scale != 1.0:
        out = out * scale
    return out.to(dtype)


def nbytes(*tensors: torch.Tensor) -> int:
    """Total bytes of ``tensors``.

    Example:
        >>> nbytes(torch.zeros(4), torch.zeros(2, dtype=torch.float16))
        20
    """
    return sum(t.numel() * t.element_size() for t in tensors)


def check_key(shape_key: str, shapes: dict[str, object]) -> object:
    """Look up ``shape_key`` with a clear error listing the valid keys.

    Example:
        >>> check_key("test", {"test": (1, 2)})
        (1, 2)
    """
    if shape_key not in shapes:
        raise KeyError(f"unknown shape key {shape_key!r}; expected one of {sorted(shapes)}")
    return shapes[shape_key]
