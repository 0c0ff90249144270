"""numpy adapter with the ``safetensors.numpy`` API: ``save``, ``save_file``, ``load``, ``load_file``.

Works without torch installed. bf16 and float8 arrays use ml_dtypes; F4 arrays
(``ml_dtypes.float4_e2m1fn``) are packed two per byte on save and unpacked on load. Arrays that
are not C-contiguous or not little-endian are saved with their correct values. Loading from a
file gives zero-copy views of a private (copy-on-write) mapping.

Example:
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.safetensors")
    >>> save_file({"x": np.arange(3, dtype=np.int32)}, p)
    >>> load_file(p)["x"].tolist()
    [0, 1, 2]
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

from torchship.weights import shards as _shards
from torchship.weights.format import SafetensorError, SafetensorValueError, dtype_from_numpy
from torchship.weights.reader import check_backend, numpy_view, parse_bytes, safe_open
from torchship.weights.writer import Entry, save_entries, write_entries

__all__ = ["load", "load_file", "safe_open", "save", "save_file", "save_sharded", "to_entries"]

_F4 = np.dtype(ml_dtypes.float4_e2m1fn)


def _pack_f4(array: np.ndarray) -> np.ndarray:
    codes = np.ascontiguousarray(array).view(np.uint8).reshape(-1) & 0x0F
    return (codes[0::2] | (codes[1::2] << 4)).astype(np.uint8)


def to_entries(tensor_dict: Mapping[str, Any]) -> dict[str, Entry]:
    """Describe numpy arrays as writer entries (data prepared lazily, one array at a time).

    Example:
        >>> to_entries({"x": np.zeros((2, 2), np.float16)})["x"].dtype
        'F16'
    """
    if not isinstance(tensor_dict, Mapping):
        raise SafetensorValueError(f"expected a dict of str -> numpy.ndarray, got {type(tensor_dict).__name__}")
    entries: dict[str, Entry] = {}
    for key, value in tensor_dict.items():
        if not isinstance(value, (np.ndarray, np.generic)):
            raise SafetensorValueError(f"tensor {key!r}: expected a numpy.ndarray, got {type(value).__name__}")
        array = np.asarray(value)
        if array.dtype == _F4:
            if array.size % 2:
                raise SafetensorError(f"tensor {key!r}: F4 needs an even number of elements, got {array.size}")
            entries[key] = Entry("F4", array.shape, lambda a=array: _pack_f4(a))
            continue
        dtype = dtype_from_numpy(array.dtype, name=key)
        entries[key] = Entry(dtype, array.shape, array)
    return entries


def save(tensor_dict: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialize arrays to safetensors bytes.

    Example:
        >>> len(save({"x": np.zeros(2, np.uint8)}))
        66
    """
    buf = io.BytesIO()
    write_entries(buf, to_entries(tensor_dict), metadata)
    return buf.getvalue()


def save_file(
    tensor_dict: Mapping[str, np.ndarray],
    filename: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    *,
    fsync: bool = True,
) -> None:
    """Save arrays to ``filename`` (temp file in the same directory, fsync, rename).

    Example:
        >>> save_file({"x": np.ones(4, np.float32)}, "x.safetensors")  # doctest: +SKIP
    """
    save_entries(to_entries(tensor_dict), filename, metadata, fsync=fsync)


def save_sharded(
    tensor_dict: Mapping[str, np.ndarray],
    directory: str | os.PathLike[str],
    max_shard_size: int | str = "5GB",
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
    """Save arrays as ``model-0000k-of-0000n.safetensors`` shards plus an index.

    Example:
        >>> save_sharded({"x": np.ones(4, np.float32)}, "ckpt", "1MB")  # doctest: +SKIP
        ['model.safetensors']
    """
    return _shards.save_sharded(to_entries(tensor_dict), directory, max_shard_size, metadata)


def load(data: bytes) -> dict[str, np.ndarray]:
    """Load arrays from safetensors bytes (arrays are views of one private copy of ``data``).

    Example:
        >>> load(save({"x": np.arange(2, dtype=np.int8)}))["x"].tolist()
        [0, 1]
    """
    buf, header, order = parse_bytes(data)
    return {key: numpy_view(buf, header, key, name="<bytes>") for key in order}


def load_file(filename: str | os.PathLike[str], *, backend: str = "mmap") -> dict[str, np.ndarray]:
    """Load every array of a file, or of a sharded checkpoint (directory or index file).

    ``backend`` (``"mmap"``/``"pread"``) is checked as safetensors checks it (see ``safe_open``).

    Example:
        >>> load_file("x.safetensors")["x"]  # doctest: +SKIP
        array([1., 1., 1., 1.], dtype=float32)
    """
    check_backend(backend)
    return _shards.load_checkpoint(filename, "np")
