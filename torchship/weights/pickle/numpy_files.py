"""numpy ``.npz`` archives and ``.npy`` files as checkpoints ``convert`` accepts.

The arrays are read by numpy itself with ``allow_pickle=False`` (its header parser is
``ast.literal_eval``; nothing is unpickled), so an object array, whose data is a pickle, is
refused naming the file and the member instead of being run. An ``.npz`` becomes one tensor
per member (named as ``numpy.load`` names them, ``arr_0`` for positional ones); an ``.npy`` is
one tensor named ``array``. Numeric and bool arrays become tensors; other dtypes (strings,
dates) are reported as dropped, as for values in a pickle.

Example:
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "w.npz"); np.savez(p, w=np.ones(2, np.float32))
    >>> with NumpyFileContainer(p) as c:
    ...     c.kind, c.load().value["w"].array.tolist()
    ('npz', [1.0, 1.0])
"""

from __future__ import annotations

import zipfile
from typing import Any

import numpy as np

from torchship.weights.pickle.containers import Container, ContainerError, Loaded
from torchship.weights.pickle.numpy_values import NumpyArray

_OBJECT_ARRAY = "object array: its data is a pickle, which convert does not run"


def is_npz(path: str) -> bool:
    """Whether a zip file is a numpy archive (every member a ``.npy``), from its directory only.

    Example:
        >>> import numpy as np, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "a.npz"); np.savez(p, np.zeros(1))
        >>> is_npz(p)
        True
    """
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return bool(names) and all(n.endswith(".npy") for n in names)


def _array(value: np.ndarray) -> NumpyArray:
    out = NumpyArray()
    out.array = value
    return out


class NumpyFileContainer(Container):
    """An ``.npz`` archive or an ``.npy`` file, read by numpy without unpickling.

    Example:
        >>> import numpy as np, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "a.npy"); np.save(p, np.arange(3))
        >>> with NumpyFileContainer(p) as c:
        ...     c.kind, c.load().value.array.tolist()
        ('npy', [0, 1, 2])
    """

    def __init__(self, path: str, limits: Any = None) -> None:
        super().__init__(path, limits)
        self.kind = "npz" if zipfile.is_zipfile(path) else "npy"

    def _refuse(self, where: str, exc: Exception) -> ContainerError:
        if "allow_pickle" in str(exc):
            return ContainerError(where, _OBJECT_ARRAY)
        return ContainerError(where, f"unreadable numpy array: {exc}")

    def load(self, strict: bool = True) -> Loaded:
        """Read every array (``allow_pickle=False``). Example: see class."""
        if self.kind == "npy":
            try:
                with open(self.path, "rb") as f:  # numpy's header reader: ast.literal_eval only
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    has_object = read(f)[2].hasobject
                array = None if has_object else np.load(self.path, mmap_mode="r", allow_pickle=False)
            except ValueError as exc:
                raise self._refuse(self.path, exc) from None
            if array is None:  # np.load with a map would say "cannot be memory-mapped"
                raise ContainerError(self.path, _OBJECT_ARRAY)
            return Loaded(_array(array), [])
        value: dict[str, Any] = {}
        with np.load(self.path, allow_pickle=False) as archive:
            for name in archive.files:
                try:
                    value[name] = _array(archive[name])
                except (ValueError, OSError, zipfile.BadZipFile) as exc:
                    raise self._refuse(f"{self.path}!{name}.npy", exc) from None
        return Loaded(value, [])
