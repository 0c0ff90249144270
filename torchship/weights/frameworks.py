"""The ``safetensors.flax`` / ``.mlx`` / ``.tensorflow`` / ``.paddle`` counterparts, built on the
numpy adapter.

``torchship.weights.flax``, ``.mlx`` and ``.tensorflow`` offer ``save``, ``save_file``, ``load``
and ``load_file`` as safetensors does: arrays go through numpy (``np.asarray`` / the
framework's own array constructor), so bytes and dtypes are those of the numpy adapter. Unlike
safetensors, saving leaves the caller's dict untouched (safetensors' flax and tensorflow
adapters replace its values with numpy arrays). Where the framework is not installed,
importing the module raises :class:`FrameworkMissingError` (a ``ModuleNotFoundError``) that
says what to install and what to use meanwhile. ``torchship.weights.paddle`` is refused
outright: paddle's dtypes do not survive a numpy round trip (bfloat16 arrives as uint16).

Example:
    >>> import numpy as np
    >>> fns = numpy_adapter(to_numpy=np.asarray, from_numpy=list)
    >>> fns["load"](fns["save"]({"x": np.arange(3, dtype=np.int8)}))
    {'x': [np.int8(0), np.int8(1), np.int8(2)]}
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from typing import Any

from torchship.weights.format import SafetensorError, SafetensorValueError


class FrameworkMissingError(SafetensorError, ModuleNotFoundError):
    """A framework adapter was imported without its framework installed (or it is not offered).

    Example:
        >>> issubclass(FrameworkMissingError, ImportError)
        True
    """


def require(module: str, adapter: str, install: str) -> Any:
    """Import ``module`` for the adapter ``adapter``, or raise a clear FrameworkMissingError.

    Example:
        >>> require("numpy", "torchship.weights.numpy", "numpy").__name__
        'numpy'
        >>> require("jaxx", "torchship.weights.flax", "jax")
        Traceback (most recent call last):
        ...
        torchship.weights.frameworks.FrameworkMissingError: torchship.weights.flax needs jaxx, which is not installed (pip install jax); meanwhile torchship.weights.numpy reads and writes the same files
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise FrameworkMissingError(
            f"{adapter} needs {module}, which is not installed (pip install {install}); "
            "meanwhile torchship.weights.numpy reads and writes the same files",
            name=module,
        ) from None


def refuse(adapter: str, reason: str) -> FrameworkMissingError:
    """The error for an adapter torchship does not offer.

    Example:
        >>> str(refuse("torchship.weights.paddle", "no"))
        'torchship.weights.paddle is not offered: no; torchship.weights.numpy reads and writes the same files'
    """
    return FrameworkMissingError(
        f"{adapter} is not offered: {reason}; torchship.weights.numpy reads and writes the same files"
    )


def numpy_adapter(to_numpy: Callable[[Any], Any], from_numpy: Callable[[Any], Any]) -> dict[str, Callable[..., Any]]:
    """``save``/``save_file``/``load``/``load_file`` for a framework, through the numpy adapter.

    Example:
        >>> sorted(numpy_adapter(to_numpy=list, from_numpy=list))
        ['load', 'load_file', 'save', 'save_file']
    """
    from torchship.weights import numpy as np_adapter

    def as_numpy(tensors: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(tensors, Mapping):
            raise SafetensorValueError(f"expected a dict of str -> array, got {type(tensors).__name__}")
        return {key: to_numpy(value) for key, value in tensors.items()}

    def save(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
        return np_adapter.save(as_numpy(tensors), metadata=metadata)

    def save_file(
        tensors: Mapping[str, Any], filename: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
    ) -> None:
        np_adapter.save_file(as_numpy(tensors), filename, metadata=metadata)

    def load(data: bytes) -> dict[str, Any]:
        return {key: from_numpy(value) for key, value in np_adapter.load(data).items()}

    def load_file(filename: str | os.PathLike[str], *, backend: str = "mmap") -> dict[str, Any]:
        loaded = np_adapter.load_file(filename, backend=backend)
        return {key: from_numpy(value) for key, value in loaded.items()}

    return {"save": save, "save_file": save_file, "load": load, "load_file": load_file}
