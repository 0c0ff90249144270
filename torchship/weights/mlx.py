"""The ``safetensors.mlx`` API (``save``, ``save_file``, ``load``, ``load_file``) for mlx arrays,
through the numpy adapter; importing it without mlx installed raises a clear
``FrameworkMissingError`` (see ``torchship.weights.frameworks``).

Example:
    >>> from torchship.weights.mlx import load_file  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from torchship.weights.frameworks import numpy_adapter, require

__all__ = ["load", "load_file", "save", "save_file"]

_framework = require("mlx.core", __name__, "mlx")

from_numpy = _framework.array
"""A numpy array as this framework's array (what ``safe_open(framework=...)`` returns)."""

save, save_file, load, load_file = numpy_adapter(to_numpy=np.asarray, from_numpy=from_numpy).values()
