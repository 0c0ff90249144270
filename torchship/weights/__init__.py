"""torchship.weights: a strict, fast, drop-in safetensors-compatible weight format.

Importing this package never imports torch: ``torchship.weights.numpy`` works on a numpy-only
install, and ``torchship.weights.torch`` imports torch when it is itself imported.

Example:
    >>> from torchship.weights import safe_open, SafetensorError
    >>> from torchship.weights.numpy import save_file, load_file  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from torchship.weights.format import SafetensorError

__all__ = ["SafetensorError", "safe_open"]


def __getattr__(name: str) -> Any:
    if name == "safe_open":
        from torchship.weights.reader import safe_open

        globals()["safe_open"] = safe_open
        return safe_open
    raise AttributeError(f"module 'torchship.weights' has no attribute {name!r}")
