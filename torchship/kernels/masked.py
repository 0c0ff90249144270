"""``ts.load`` / ``ts.store``: loads and stores with an extra validity mask (Helion's
``hl.load(x, [idx], extra_mask=valid)`` / ``hl.store(out, [idx], v, extra_mask=valid)``).

``index`` holds one entry per tensor dimension, as for :func:`~torchship.kernels.atomic_add`
(tiles, ints, ``:``, ``None`` and integer blocks). Lanes where ``extra_mask`` is False are not
read (they hold ``other``) and not written, so their indices may be anything, out of range
included. These are the reference-mode (eager torch) versions; compiled kernels turn the call
into one masked ``tl.load`` / ``tl.store`` (see :mod:`torchship.kernels.frontend.masked`).

Example:
    >>> x = torch.arange(4.0)
    >>> idx = torch.tensor([0, 9, 3])
    >>> load(x, [idx], extra_mask=idx < 4, other=-1.0).tolist()
    [0.0, -1.0, 3.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from torchship.kernels.language import _convert_index

__all__ = ["load", "store"]


def _entries(target: torch.Tensor, index: Sequence[Any], what: str) -> tuple[Any, ...]:
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{what}: target must be a tensor, got {type(target).__name__}")
    entries = tuple(index) if isinstance(index, (list, tuple)) else (index,)
    real = [e for e in entries if e is not None]
    if len(real) != target.ndim:
        raise ValueError(f"{what}: index has {len(real)} entries for a {target.ndim}-D target "
                         "(one per dimension, e.g. [idx, tile_n])")
    return tuple(_convert_index(list(entries)) if entries else entries)


def _masked_index(target: torch.Tensor, entries: tuple[Any, ...], mask: Any,
                  what: str) -> tuple[tuple[Any, ...], torch.Tensor]:
    """(the index with integer blocks clamped into range, the mask broadcast to the indexed
    shape); raises IndexError when a lane the mask keeps is out of range."""
    idx: list[Any] = []
    bad: torch.Tensor | None = None
    before = 0  # result dims ahead of the integer blocks
    axis = 0
    for e in entries:
        if isinstance(e, torch.Tensor) and e.dim() > 0:
            n = target.size(axis)
            clamped = e.clamp(0, n - 1)
            oob = clamped != e
            bad = oob if bad is None else bad | oob
            idx.append(clamped)
        else:
            idx.append(e)
            if bad is None and (e is None or isinstance(e, slice)):
                before += 1
        axis += e is not None
    shape = target[tuple(idx)].shape
    keep = torch.as_tensor(mask, dtype=torch.bool, device=target.device).expand(shape)
    if bad is not None:
        after = len(shape) - before - bad.dim()
        lanes = bad.reshape([1] * before + list(bad.shape) + [1] * after).expand(shape)
        if bool((lanes & keep).any()):
            raise IndexError(f"{what}: a lane the extra_mask keeps indexes out of range")
    return tuple(idx), keep


def load(tensor: torch.Tensor, index: Sequence[Any], extra_mask: Any = None,
         other: float | int | bool = 0) -> torch.Tensor:
    """``tensor[index]`` where ``extra_mask`` is True, ``other`` elsewhere (those lanes are not
    read: their indices may be out of range).

    Example:
        >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> load(x, [torch.tensor([1, 5]), slice(None)], torch.tensor([[True], [False]])).tolist()
        [[3.0, 4.0], [0.0, 0.0]]
    """
    entries = _entries(tensor, index, "ts.load")
    if extra_mask is None:
        return tensor[entries]
    idx, keep = _masked_index(tensor, entries, extra_mask, "ts.load")
    return torch.where(keep, tensor[idx], torch.as_tensor(other, dtype=tensor.dtype))


def store(tensor: torch.Tensor, index: Sequence[Any], value: Any,
          extra_mask: Any = None) -> None:
    """``tensor[index] = value`` at the lanes where ``extra_mask`` is True (the others are
    neither written nor checked: their indices may be out of range).

    Example:
        >>> out = torch.zeros(3)
        >>> idx = torch.tensor([2, 7, 0])
        >>> store(out, [idx], torch.tensor([5.0, 6.0, 7.0]), extra_mask=idx < 3)
        >>> out.tolist()
        [7.0, 0.0, 5.0]
    """
    entries = _entries(tensor, index, "ts.store")
    mask = True if extra_mask is None else extra_mask
    idx, keep = _masked_index(tensor, entries, mask, "ts.store")
    positions = torch.arange(tensor.numel(), device=tensor.device).view(tensor.shape)[idx]
    vals = torch.as_tensor(value, device=tensor.device).to(tensor.dtype).expand(positions.shape)
    flat = tensor.view(-1) if tensor.is_contiguous() else tensor.reshape(-1).clone()
    flat[positions[keep]] = vals[keep]
    if not tensor.is_contiguous():
        tensor.copy_(flat.view(tensor.shape))
