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
from torch.overrides import TorchFunctionMode

from torchship.kernels import language

__all__ = ["run", "kernel_device"]

_MATMULS = {torch.matmul, torch.mm, torch.bmm, torch.Tensor.matmul, torch.Tensor.__matmul__,
            torch.Tensor.mm, torch.Tensor.bmm}
_ADDMMS = {torch.addmm, torch.baddbmm, torch.Tensor.addmm, torch.Tensor.baddbmm}


class _MixedPrecisionMatmul(TorchFunctionMode):
    """Matrix products on blocks of different dtypes, as the compiler computes them.

    Eager torch refuses ``torch.addmm(acc_fp32, a_fp16, b_fp16)`` and ``a_fp16 @ b_fp32``; in a
    kernel they are the usual way to accumulate (the compiler promotes the operands, multiplies
    with float32 accumulation, then adds). Same-dtype calls go straight to torch.
    """

    def __torch_function__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in _MATMULS and len(args) == 2 and _mixed(args[0], args[1]):
            return _promoted_matmul(args[0], args[1])
        if func in _ADDMMS and len(args) >= 3 and _mixed(*args[:3]):
            bias, m1, m2 = args[:3]
            beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
            prod = _promoted_matmul(m1, m2)
            return (bias * beta if beta != 1 else bias) + (prod * alpha if alpha != 1 else prod)
        return func(*args, **kwargs)


def _mixed(*values: Any) -> bool:
    dtypes = {v.dtype for v in values if isinstance(v, torch.Tensor)}
    return len(dtypes) > 1


def _promoted_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    work = torch.promote_types(a.dtype, b.dtype)
    return torch.matmul(a.to(work), b.to(work))


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
    for ``ts.register_tunable`` knobs by name. Autograd is off, as in a compiled kernel, and
    matrix products of blocks with different dtypes (``torch.addmm(acc_fp32, a_fp16, b_fp16)``)
    promote like the compiler instead of raising, and tensor factories without ``device=``
    create on the device of the kernel's tensor arguments.

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
        # factories in the body (torch.arange(n), torch.full(...)) without device= land on the
        # kernel's device, as they do in a compiled kernel
        with torch.no_grad(), torch.device(device), _MixedPrecisionMatmul():
            return fn(*args, **kwargs)
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
