"""The ``safetensors.tensorflow`` API (``save``, ``save_file``, ``load``, ``load_file``) for TensorFlow tensors,
through the numpy adapter; importing it without tensorflow installed raises a clear
``FrameworkMissingError`` (see ``torchship.weights.frameworks``).

Example:
    >>> from torchship.weights.tensorflow import load_file  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torchship.weights.frameworks import numpy_adapter, require

__all__ = ["load", "load_file", "save", "save_file"]

_framework = require("tensorflow", __name__, "tensorflow")


def _to_numpy(tensor: Any) -> np.ndarray:
    return tensor.numpy() if hasattr(tensor, "numpy") else np.asarray(tensor)


from_numpy = _framework.convert_to_tensor
"""A numpy array as a TensorFlow tensor (what ``safe_open(framework="tf")`` returns)."""

save, save_file, load, load_file = numpy_adapter(to_numpy=_to_numpy, from_numpy=from_numpy).values()
