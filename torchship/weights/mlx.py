"""The ``safetensors.mlx`` API (``save``, ``save_file``, ``load``, ``load_file``) for mlx arrays,
through the numpy adapter; importing it without mlx installed raises a clear
``FrameworkMissingError`` (see ``torchship.weights.frameworks``).

Example:
    >>> from torchship.weights.mlx import load_file  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torchship.weights.frameworks import numpy_adapter, require

__all__ = ["load", "load_file", "save", "save_file"]

_framework = require("mlx.core", __name__, "mlx")

_fns = numpy_adapter(to_numpy=np.asarray, from_numpy=_framework.array)
save: Any = _fns["save"]
save_file: Any = _fns["save_file"]
load: Any = _fns["load"]
load_file: Any = _fns["load_file"]
