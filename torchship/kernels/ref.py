"""Reference mode: run a kernel's Python body eagerly, tile by tile, with torch ops.

``TORCHSHIP_INTERPRET=1`` makes every ``@ts.kernel`` call go through :func:`run`. No IR and no
compiler are involved: ``ts.tile`` yields real tiles over real ranges and tensors indexed by
tiles act as slices (see :mod:`torchship.kernels.language`), so reference mode works on any
device and is the oracle the compiled kernels are tested against. Results never depend on the
block size; :func:`run` takes ``block_size=`` and ``tunables=`` so tests can check that.

Example:
    >>> import torch
    >>> import torchship.kernels.language as tsl
    >>> def double(x):
    ...     out = torch.empty_like(x)
    ...     for t in tsl.tile(x.size(0)):
    ...         out[t] = x[t] * 2
    ...     return out
    >>> run(double, (torch.arange(5.0),), {}, block_size=2).tolist()
    [0.0, 2.0, 4.0, 6.0, 8.0]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from torchship.kernels import language

__all__ = ["run", "kernel_device"]


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def kernel_device(args: Sequence[Any], kwargs: Mapping[str, Any] | None = None) -> torch.device:
    """The device a kernel runs on: that of its tensor arguments (CPU if it has none).

    Raises ``ValueError`` naming the arguments when they live on different devices.

    Example:
        >>> kernel_device((torch.zeros(1), 3.0))
        device(type='cpu')
    """
    tensors = _tensors(list(args)) + _tensors(dict(kwargs or {}))
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        listing = ", ".join(sorted(str(d) for d in devices))
        raise ValueError(f"kernel arguments are on different devices ({listing}); move them to one")
    return next(iter(devices)) if devices else torch.device("cpu")


def run(
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None = None,
    *,
    block_size: int | None = None,
    tunables: Mapping[str, Any] | None = None,
) -> Any:
    """Call ``fn(*args, **kwargs)`` in reference mode and return its result.

    ``block_size`` replaces the default block size of loops that give none (and the value
    ``register_block_size`` symbols take, clamped to their bounds); ``tunables`` picks values
    for ``ts.register_tunable`` knobs by name. Autograd is off, as in a compiled kernel.

    Example:
        >>> run(lambda x: x + 1, (torch.ones(2),)).tolist()
        [2.0, 2.0]
    """
    kwargs = dict(kwargs or {})
    if block_size is not None and (not isinstance(block_size, int) or block_size < 1):
        raise ValueError(f"ref.run(block_size={block_size!r}): expected a positive int")
    device = kernel_device(args, kwargs)
    tokens = [
        (language._ref_device, language._ref_device.set(device)),
        (language._ref_tunables, language._ref_tunables.set(dict(tunables or {}))),
    ]
    if block_size is not None:
        tokens.append((language._ref_block_size, language._ref_block_size.set(block_size)))
    try:
        with torch.no_grad():
            return fn(*args, **kwargs)
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
