"""torchship.weights: a strict, fast, drop-in safetensors-compatible weight format.

Importing this package never imports torch: ``torchship.weights.numpy`` works on a numpy-only
install, and ``torchship.weights.torch`` imports torch when it is itself imported. As in
``safetensors``, the package offers ``safe_open`` and the low-level ``TensorSpec``,
``serialize``, ``serialize_file`` and ``deserialize`` (see ``torchship.weights.raw``).

Example:
    >>> from torchship.weights import safe_open, SafetensorError, serialize, deserialize
    >>> deserialize(serialize({}))
    []
"""

from __future__ import annotations

import importlib
from typing import Any

from torchship.weights.format import SafetensorError

__all__ = ["SafetensorError", "TensorSpec", "deserialize", "safe_open", "serialize", "serialize_file"]

_LAZY = {
    "safe_open": "torchship.weights.reader",
    "TensorSpec": "torchship.weights.raw",
    "serialize": "torchship.weights.raw",
    "serialize_file": "torchship.weights.raw",
    "deserialize": "torchship.weights.raw",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'torchship.weights' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
