"""Shared fixtures for the kernels tests: repo root on sys.path (for ``examples.kernels``),
output poisoning, and switching between reference and compiled mode.

Example:
    def test_something(poison_empty, ref_mode): ...
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

def _poison(t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point() or t.is_complex():
        return t.fill_(float("nan"))
    if t.dtype == torch.bool:
        return t.fill_(True)
    info = torch.iinfo(t.dtype)
    return t.fill_(info.min if t.dtype.is_signed else info.max)


def _poisoning(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
        return _poison(fn(*args, **kwargs))

    wrapper.__name__ = getattr(fn, "__name__", "empty")
    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


@pytest.fixture
def poison_empty(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make torch.empty / empty_like / empty_strided / Tensor.new_empty fill with NaN (floats)
    or a sentinel (ints), so any output element a kernel forgets to write fails the check."""
    monkeypatch.setattr(torch, "empty", _poisoning(torch.empty))
    monkeypatch.setattr(torch, "empty_like", _poisoning(torch.empty_like))
    monkeypatch.setattr(torch, "empty_strided", _poisoning(torch.empty_strided))
    monkeypatch.setattr(torch.Tensor, "new_empty", _poisoning(torch.Tensor.new_empty))
    yield


@pytest.fixture
def ref_mode(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run ``@ts.kernel`` calls in reference mode (TORCHSHIP_INTERPRET=1)."""
    monkeypatch.setenv("TORCHSHIP_INTERPRET", "1")
    yield


@pytest.fixture
def compiled_mode(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run ``@ts.kernel`` calls through the compiler (Triton interpreter on CPU tensors),
    with no autotuning."""
    monkeypatch.delenv("TORCHSHIP_INTERPRET", raising=False)
    monkeypatch.setenv("TORCHSHIP_AUTOTUNE_EFFORT", "none")
    monkeypatch.delenv("TORCHSHIP_FORCE_AUTOTUNE", raising=False)
    yield
