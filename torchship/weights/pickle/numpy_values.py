"""numpy values in a checkpoint, rebuilt as data: ``numpy.dtype`` from a validated type string,
``numpy.core.multiarray._reconstruct`` / ``_frombuffer`` / ``scalar`` from raw bytes. Nothing of
numpy's pickle support is ever called (see :mod:`torchship.weights.pickle.allowlist`).

Example:
    >>> np_scalar(np_dtype("<i4"), b"\\x07\\x00\\x00\\x00")
    7
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from torchship.weights.pickle.values import int_tuple
from torchship.weights.pickle.vm import Callable_

_NP_DESCR = re.compile(r"^[<>|=]?(?:[biufc]\d{1,2}|\?|b1|O|O8|[SUV]\d{1,6})$")


def numpy_dtype(descr: Any) -> np.dtype:
    """A numpy dtype from a validated type string (no fields, no objects besides 'O').

    Example:
        >>> numpy_dtype("<f4")
        dtype('float32')
    """
    if not isinstance(descr, str) or not _NP_DESCR.match(descr):
        raise ValueError(f"numpy dtype {descr!r} is not a plain numeric, bool, string or object type")
    return np.dtype(descr)


class NumpyDtype(Callable_):
    """``numpy.dtype(...)`` followed by BUILD with its byte-order state.

    Example:
        >>> d = NumpyDtype(numpy_dtype("f8")); d.setstate((3, ">", None, None, None, -1, -1, 0))
        >>> d.dtype.str
        '>f8'
    """

    def __init__(self, dtype: np.dtype) -> None:
        super().__init__("numpy.dtype")
        self.dtype = dtype

    def setstate(self, state: Any) -> None:
        """Apply numpy's dtype state tuple (only the byte order matters for plain types).

        Example:
            >>> d = NumpyDtype(np.dtype("<i4")); d.setstate((3, ">", None, None, None, -1, -1, 0))
            >>> d.dtype.byteorder
            '>'
        """
        if not isinstance(state, tuple) or len(state) < 2 or not isinstance(state[1], str):
            raise TypeError("unexpected numpy dtype state")
        if state[1] in "<>" and state[1] and self.dtype.itemsize > 1:
            self.dtype = self.dtype.newbyteorder(state[1])


def np_dtype(descr: Any, align: Any = False, copy: Any = True) -> NumpyDtype:
    return NumpyDtype(numpy_dtype(descr))


NDARRAY = Callable_("numpy.ndarray")


class NumpyArray:
    """``numpy.core.multiarray._reconstruct(ndarray, shape, typecode)`` then BUILD with the
    array state: builds a real numpy array from the raw bytes (or keeps an object list).

    Example:
        >>> a = NumpyArray(); a.setstate((1, (2,), NumpyDtype(numpy_dtype("<i2")), False, b"\\x01\\x00\\x02\\x00"))
        >>> a.array.tolist()
        [1, 2]
    """

    def __init__(self) -> None:
        self.array: Any = None

    def setstate(self, state: Any) -> None:
        """Fill from numpy's ndarray state tuple. Example: see class."""
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise TypeError("unexpected numpy array state")
        if len(state) == 5:
            state = state[1:]
        shape, dtype, fortran, raw = state
        shape = int_tuple(shape, "numpy shape")
        if not isinstance(dtype, NumpyDtype):
            raise TypeError("numpy array state without a dtype")
        if dtype.dtype.kind == "O":
            if not isinstance(raw, list):
                raise TypeError("object array state must be a list")
            self.array = raw
            return
        if isinstance(raw, str):
            raw = raw.encode("latin-1")
        if not isinstance(raw, bytes | bytearray):
            raise TypeError("numpy array data must be bytes")
        count = math.prod(shape)  # exact (numpy.prod would wrap around on huge shapes)
        if count * dtype.dtype.itemsize != len(raw):
            raise ValueError(f"numpy array of shape {shape} {dtype.dtype} needs "
                             f"{count * dtype.dtype.itemsize} bytes, state holds {len(raw)}")
        flat = np.frombuffer(bytes(raw), dtype=dtype.dtype)
        self.array = flat.reshape(shape, order="F" if fortran else "C")


def np_reconstruct(subtype: Any, shape: Any, typecode: Any) -> NumpyArray:
    if subtype is not NDARRAY:
        raise TypeError("only numpy.ndarray can be reconstructed")
    return NumpyArray()


def np_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> NumpyArray:
    if not isinstance(dtype, NumpyDtype):
        raise TypeError("numpy _frombuffer needs a dtype")
    out = NumpyArray()
    out.setstate((int_tuple(shape, "numpy shape"), dtype, order == "F", buf))
    return out


def np_scalar(dtype: Any, raw: Any = None) -> Any:
    if not isinstance(dtype, NumpyDtype) or dtype.dtype.kind == "O":
        raise TypeError("numpy scalar needs a plain dtype")
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    if not isinstance(raw, bytes) or len(raw) != dtype.dtype.itemsize:
        raise ValueError("numpy scalar bytes do not match its dtype")
    return np.frombuffer(raw, dtype=dtype.dtype)[0].item()
