"""The low-level safetensors API: ``TensorSpec``, ``serialize``, ``serialize_file``, ``deserialize``.

The same calls as safetensors 0.8's module-level functions, which its framework adapters are
built on: a :class:`TensorSpec` describes one tensor by a torch-style dtype name
(``"float32"``, ``"bfloat16"``, ``"float4_e2m1fn_x2"``...), its shape, and a raw address and
length of its C-contiguous little-endian bytes; ``serialize`` returns the file's bytes
(byte-identical to safetensors' for the same specs and at most one metadata key),
``serialize_file`` writes them atomically, ``deserialize`` returns
``[(name, {"dtype", "shape", "data"}), ...]`` with each tensor's bytes in a ``bytearray``.

As with safetensors, the caller keeps every buffer a spec points to alive during the call.
Differences (docs/format.md): ``deserialize`` lists tensors in data order (safetensors: hash
order, different on every run) and also takes a ``bytearray`` or ``memoryview``; metadata keys
are written sorted; the reserved name ``__metadata__`` is refused.

Example:
    >>> import numpy as np
    >>> a = np.arange(3, dtype=np.float32)
    >>> spec = TensorSpec(dtype="float32", shape=a.shape, data_ptr=a.ctypes.data, data_len=a.nbytes)
    >>> spec
    TensorSpec(dtype='F32', shape=[3], data_ptr=..., data_len=12)
    >>> name, info = deserialize(serialize({"a": spec}))[0]
    >>> name, info["dtype"], info["shape"], np.frombuffer(info["data"], np.float32).tolist()
    ('a', 'F32', [3], [0.0, 1.0, 2.0])
"""

from __future__ import annotations

import ctypes
import io
import operator
import os
from collections.abc import Mapping, Sequence
from typing import Any

from torchship.weights.format import (
    TORCH_NAMES,
    SafetensorError,
    SafetensorTypeError,
    tensor_nbytes,
)
from torchship.weights.reader import parse_bytes
from torchship.weights.writer import Entry, save_entries, write_entries

__all__ = ["TensorSpec", "deserialize", "serialize", "serialize_file"]

_ORDER = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16",
          "float32", "float64", "bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2",
          "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn_x2", "complex64")
_SPEC_DTYPES: dict[str, str] = {name: code for code, name in TORCH_NAMES.items()}
_SUPPORTED = ", ".join(sorted(_SPEC_DTYPES, key=_ORDER.index))  # listed in safetensors' order
_U64_LIMIT = 1 << 64


class SpecOverflowError(SafetensorError, OverflowError):
    """A spec's size, address or dimension that is negative or does not fit 64 bits; also an
    OverflowError, which safetensors raises for these.

    Example:
        >>> issubclass(SpecOverflowError, OverflowError)
        True
    """


def _u64(value: Any, what: str) -> int:
    try:
        number = operator.index(value)
    except TypeError:
        raise SafetensorTypeError(f"TensorSpec {what} must be an integer, got {type(value).__name__}") from None
    if not 0 <= number < _U64_LIMIT:
        raise SpecOverflowError(f"TensorSpec {what} {number} is not an unsigned 64-bit integer")
    return number


class TensorSpec:
    """One tensor for :func:`serialize`: dtype, logical shape, and the address/length of its bytes.

    Keyword-only, as in safetensors. ``dtype`` is the torch/numpy-style name and is checked
    here (``"F32"`` or ``"float"`` are refused); the ``dtype`` property then reads the
    safetensors code. For ``"float4_e2m1fn_x2"`` (two values a byte) ``shape`` may be torch's
    storage shape: its last dimension is doubled to the logical element count.

    Example:
        >>> TensorSpec(dtype="float4_e2m1fn_x2", shape=(2, 3), data_ptr=0, data_len=6).shape
        [2, 6]
    """

    __slots__ = ("_data_len", "_data_ptr", "_dtype", "_shape")

    def __init__(self, *, dtype: str, shape: Sequence[int], data_ptr: int, data_len: int) -> None:
        if not isinstance(dtype, str):
            raise SafetensorTypeError(f"TensorSpec dtype must be a str, got {type(dtype).__name__}")
        code = _SPEC_DTYPES.get(dtype)
        if code is None:
            raise SafetensorError(f'Unknown dtype "{dtype}". Supported dtypes: {_SUPPORTED}')
        if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
            raise SafetensorTypeError(f"TensorSpec shape must be a sequence of ints, got {type(shape).__name__}")
        dims = [_u64(d, "dimension") for d in shape]
        if code == "F4" and dims:
            dims[-1] = _u64(dims[-1] * 2, "dimension")
        self._dtype = code
        self._shape = dims
        self._data_ptr = _u64(data_ptr, "data_ptr")
        self._data_len = _u64(data_len, "data_len")

    @property
    def dtype(self) -> str:
        """The safetensors dtype code. Example: ``TensorSpec(dtype="bfloat16", ...).dtype`` -> ``'BF16'``."""
        return self._dtype

    @property
    def shape(self) -> list[int]:
        """The logical shape written to the header. Example: ``spec.shape`` -> ``[2, 3]``."""
        return list(self._shape)

    @property
    def data_ptr(self) -> int:
        """The address of the tensor's first byte. Example: ``spec.data_ptr == a.ctypes.data``."""
        return self._data_ptr

    @property
    def data_len(self) -> int:
        """The length of the tensor's bytes. Example: ``spec.data_len`` -> ``24``."""
        return self._data_len

    def __repr__(self) -> str:
        return (
            f"TensorSpec(dtype={self._dtype!r}, shape={self._shape!r}, "
            f"data_ptr={self._data_ptr}, data_len={self._data_len})"
        )


def _entries(tensor_dict: Any) -> dict[str, Entry]:
    if not isinstance(tensor_dict, Mapping):
        raise SafetensorTypeError(f"tensor_dict must be a dict of str -> TensorSpec, got {type(tensor_dict).__name__}")
    entries: dict[str, Entry] = {}
    for key, spec in tensor_dict.items():
        if not isinstance(spec, TensorSpec):
            raise SafetensorTypeError(f"tensor {key!r}: expected a TensorSpec, got {type(spec).__name__}")
        needed = tensor_nbytes(spec.dtype, spec.shape, name=str(key))
        if spec.data_len != needed:
            raise SafetensorError(
                f"tensor {key!r}: data_len is {spec.data_len} bytes but {spec.dtype} {spec.shape} needs {needed}"
            )
        data = (ctypes.c_char * needed).from_address(spec.data_ptr) if needed else b""
        entries[key] = Entry(spec.dtype, tuple(spec.shape), data)
    return entries


def serialize(tensor_dict: Mapping[str, TensorSpec], metadata: Mapping[str, str] | None = None) -> bytes:
    """Return the safetensors bytes of the tensors ``tensor_dict`` describes.

    Example:
        >>> serialize({}, {"format": "pt"})[8:]
        b'{"__metadata__":{"format":"pt"}}'
    """
    buf = io.BytesIO()
    write_entries(buf, _entries(tensor_dict), metadata)
    return buf.getvalue()


def serialize_file(
    tensor_dict: Mapping[str, TensorSpec],
    filename: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    *,
    fsync: bool = True,
) -> None:
    """Write the bytes :func:`serialize` returns to ``filename`` (temp file, fsync, rename).

    Example:
        >>> serialize_file({}, "empty.safetensors")  # doctest: +SKIP
    """
    if not isinstance(filename, (str, os.PathLike)) or isinstance(os.fspath(filename), bytes):
        raise SafetensorTypeError(f"filename must be a str or os.PathLike, got {type(filename).__name__}")
    save_entries(_entries(tensor_dict), filename, metadata, fsync=fsync)


def deserialize(bytes: Any) -> list[tuple[str, dict[str, Any]]]:  # noqa: A002 - safetensors' keyword
    """Validate a safetensors blob and return ``(name, {"dtype", "shape", "data"})`` in data order.

    ``data`` is a ``bytearray`` copy of the tensor's bytes (a sub-byte F4 tensor's packed bytes).

    Example:
        >>> deserialize(serialize({}))
        []
    """
    buf, header, order = parse_bytes(bytes)
    start = header.data_start
    out = []
    for key in order:
        info = header.tensors[key]
        data = buf[start + info.start : start + info.end]
        out.append((key, {"dtype": info.dtype, "shape": list(info.shape), "data": data}))
    return out
