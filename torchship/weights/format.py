"""The safetensors file format: dtype table, header parsing with full validation, serialization.

A safetensors blob is an 8-byte little-endian header length ``N`` (``N <= 100,000,000``), ``N``
bytes of UTF-8 JSON, then the data buffer. The JSON maps tensor names to
``{"dtype", "shape", "data_offsets"}`` (offsets relative to the data buffer) and may hold one
``"__metadata__"`` map of string to string. Every rule is checked here, in one place, before any
tensor byte is touched; this module imports numpy and ml_dtypes only (never torch).

Stricter than safetensors 0.8 where its behaviour is unsafe (see docs/format.md): duplicate JSON
keys are rejected at every level instead of silently keeping the last one.

Example:
    >>> blob = serialize_header([("w", TensorInfo("F32", (2,), 0, 8))], None) + bytes(8)
    >>> header = parse_header(blob)
    >>> header.tensors["w"], header.data_start
    (TensorInfo(dtype='F32', shape=(2,), start=0, end=8), 64)
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import mmap
import re
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import ml_dtypes
import numpy as np

MAX_HEADER_SIZE = 100_000_000
"""Largest accepted JSON header, in bytes (same limit as safetensors)."""

_U64_LIMIT = 1 << 64
_METADATA_KEY = "__metadata__"
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


class SafetensorError(Exception):
    """A file, buffer or tensor breaks a rule of the format (the message names which).

    Example:
        >>> try:
        ...     parse_header(b"abc", name="x.safetensors")
        ... except SafetensorError as exc:
        ...     print(exc)
        x.safetensors: file is 3 bytes, shorter than the 8-byte header length
    """


class SafetensorTypeError(SafetensorError, TypeError):
    """An argument of the wrong type (a non-str name or metadata value, bytes that are not
    bytes); also a TypeError, which safetensors raises for these.

    Example:
        >>> issubclass(SafetensorTypeError, TypeError)
        True
    """


class SafetensorValueError(SafetensorError, ValueError):
    """A value safetensors cannot store (not a tensor, a sparse tensor, not a dict); also a
    ValueError, which safetensors raises for these.

    Example:
        >>> issubclass(SafetensorValueError, ValueError)
        True
    """


class SafetensorFileNotFoundError(SafetensorError, FileNotFoundError):
    """A file to read does not exist; also a FileNotFoundError, as in safetensors.

    Example:
        >>> str(SafetensorFileNotFoundError("x.safetensors: cannot open: No such file"))
        'x.safetensors: cannot open: No such file'
    """


@functools.cache
def os_error_kind(kind: type[OSError]) -> type[OSError]:
    """The exception type that is both the OSError subtype ``kind`` and a SafetensorError, for
    I/O failures (safetensors raises ``SafetensorError`` or ``OSError`` for them; ours is both).

    Example:
        >>> err = os_error_kind(IsADirectoryError)("w.safetensors: cannot open: Is a directory")
        >>> isinstance(err, IsADirectoryError), isinstance(err, SafetensorError)
        (True, True)
    """
    if issubclass(kind, FileNotFoundError):
        return SafetensorFileNotFoundError
    doc = f"A {kind.__name__} reading or writing weights; also a SafetensorError."
    return type(f"Safetensor{kind.__name__}", (SafetensorError, kind), {"__module__": __name__, "__doc__": doc})


@dataclass(frozen=True)
class DType:
    """One safetensors dtype: its name, size in bits, writer order rank and numpy dtype.

    ``rank`` is the position in safetensors' dtype enum; the writer orders tensors by rank
    descending (wider alignment first), then by name. ``numpy`` is None for sub-byte types that
    numpy cannot view in place (F4 is unpacked on load; F6 has no numpy view).

    Example:
        >>> DTYPES["BF16"].bits, DTYPES["BF16"].numpy
        (16, dtype(bfloat16))
    """

    name: str
    bits: int
    rank: int
    numpy: np.dtype | None


def _table() -> dict[str, DType]:
    rows: list[tuple[str, int, Any]] = [
        ("BOOL", 8, np.bool_),
        ("F4", 4, None),
        ("F6_E2M3", 6, None),
        ("F6_E3M2", 6, None),
        ("U8", 8, np.uint8),
        ("I8", 8, np.int8),
        ("F8_E5M2", 8, ml_dtypes.float8_e5m2),
        ("F8_E4M3", 8, ml_dtypes.float8_e4m3fn),
        ("F8_E8M0", 8, ml_dtypes.float8_e8m0fnu),
        ("F8_E4M3FNUZ", 8, ml_dtypes.float8_e4m3fnuz),
        ("F8_E5M2FNUZ", 8, ml_dtypes.float8_e5m2fnuz),
        ("I16", 16, np.int16),
        ("U16", 16, np.uint16),
        ("F16", 16, np.float16),
        ("BF16", 16, ml_dtypes.bfloat16),
        ("I32", 32, np.int32),
        ("U32", 32, np.uint32),
        ("F32", 32, np.float32),
        ("C64", 64, np.complex64),
        ("F64", 64, np.float64),
        ("I64", 64, np.int64),
        ("U64", 64, np.uint64),
    ]
    return {
        name: DType(name, bits, rank, None if np_type is None else np.dtype(np_type).newbyteorder("<"))
        for rank, (name, bits, np_type) in enumerate(rows)
    }


DTYPES: dict[str, DType] = _table()
"""Every safetensors dtype by its header name, in safetensors' enum order."""

TORCH_NAMES: dict[str, str] = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "C64": "complex64",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "U16": "uint16", "U32": "uint32", "U64": "uint64",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz", "F8_E8M0": "float8_e8m0fnu", "F4": "float4_e2m1fn_x2",
}
"""safetensors dtype name -> name of the ``torch`` dtype holding it (F4 is torch's packed
``float4_e2m1fn_x2``, two values a byte). Plain strings, so torch-free code (the pickle
converter) shares the table with the torch adapter.

Example:
    >>> TORCH_NAMES["BF16"]
    'bfloat16'
"""

_NUMPY_TO_NAME: dict[np.dtype, str] = {
    d.numpy.newbyteorder("="): d.name for d in DTYPES.values() if d.numpy is not None
}


def dtype_from_numpy(dtype: np.dtype, *, name: str = "<tensor>") -> str:
    """Return the safetensors dtype name for a numpy (or ml_dtypes) dtype, either byte order.

    Example:
        >>> dtype_from_numpy(np.dtype("float32")), dtype_from_numpy(np.dtype(">i2"))
        ('F32', 'I16')
    """
    found = _NUMPY_TO_NAME.get(np.dtype(dtype).newbyteorder("="))
    if found is None:
        supported = ", ".join(str(k) for k in _NUMPY_TO_NAME)
        raise SafetensorError(
            f"tensor {name!r}: numpy dtype {dtype} has no safetensors equivalent "
            f"(supported: {supported})"
        )
    return found


class TensorInfo(NamedTuple):
    """Where one tensor lives: dtype name, shape, and byte offsets relative to the data buffer.

    Example:
        >>> TensorInfo("F16", (3, 2), 0, 12).nbytes
        12
    """

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes.

        Example:
            >>> TensorInfo("U8", (0,), 4, 4).nbytes
            0
        """
        return self.end - self.start


@dataclass(frozen=True)
class Header:
    """A parsed, fully validated header.

    ``tensors`` keeps the order of the JSON object; ``data_start`` is the absolute offset of the
    data buffer in the parsed buffer and ``data_len`` its length (it runs to the buffer's end).

    Example:
        >>> h = parse_header(serialize_header([], {"k": "v"}))
        >>> h.metadata, h.data_len
        ({'k': 'v'}, 0)
    """

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] | None
    data_start: int
    data_len: int
    header_len: int


def tensor_nbytes(dtype: str, shape: Iterable[int], *, name: str = "<tensor>") -> int:
    """Bytes taken by a tensor of ``dtype`` and ``shape``, with overflow-checked arithmetic.

    Raises SafetensorError when the dtype is unknown, a dimension is negative, the element or
    bit count overflows 64 bits, or the bit count is not a whole number of bytes.

    Example:
        >>> tensor_nbytes("F4", (2, 3))
        3
    """
    info = DTYPES.get(dtype)
    if info is None:
        raise SafetensorError(f"tensor {name!r}: unknown dtype {dtype!r} (expected one of {', '.join(DTYPES)})")
    numel = 1
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise SafetensorError(f"tensor {name!r}: shape dimension {dim!r} is not a non-negative integer")
        numel *= dim
        if numel >= _U64_LIMIT:
            raise SafetensorError(f"tensor {name!r}: shape {list(shape)} overflows the element count")
    bits = numel * info.bits
    if bits >= _U64_LIMIT:
        raise SafetensorError(f"tensor {name!r}: shape {list(shape)} overflows the bit count")
    if bits % 8:
        raise SafetensorError(
            f"tensor {name!r}: {numel} elements of {dtype} make {bits} bits, not a whole number of bytes"
        )
    return bits // 8


# ---------------------------------------------------------------------------------------------
# parsing


class _Float:
    """Marker for a JSON number with a fraction or exponent (never valid in a header)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _reject_constant(text: str) -> Any:
    raise ValueError(f"{text} is not valid JSON")


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)  # at C speed; a duplicate shows as a shorter dict
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _parse_int(text: str) -> int | _Float:
    # a negative number is never a valid shape or offset; "-0" must not turn into 0 (safetensors
    # reads it as the float -0.0 and refuses the file: a parser differential otherwise)
    return _Float(text) if text.startswith("-") else int(text)


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs_no_duplicates, parse_float=_Float, parse_int=_parse_int,
    parse_constant=_reject_constant,
)


def _u64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _U64_LIMIT


def _check_text(text: str, what: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SafetensorError(f"{where}: {what} {text!r} is not valid Unicode (lone surrogate)") from exc


def _parse_entry(where: str, key: str, value: Any) -> tuple[str, tuple[int, ...], int, int]:
    tensor = f"{where}: tensor {key!r}"
    if not isinstance(value, dict):
        raise SafetensorError(f"{tensor}: entry must be a JSON object, got {type(value).__name__}")
    for field in ("dtype", "shape", "data_offsets"):
        if field not in value:
            raise SafetensorError(f"{tensor}: missing field {field!r}")
    dtype = value["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise SafetensorError(
            f"{tensor}: unknown dtype {dtype!r} (dtypes are case-sensitive: {', '.join(DTYPES)})"
        )
    shape = value["shape"]
    if not isinstance(shape, list) or not all(map(_u64, shape)):
        raise SafetensorError(f"{tensor}: shape {shape!r} must be a list of non-negative integers")
    offsets = value["data_offsets"]
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_u64, offsets)):
        raise SafetensorError(
            f"{tensor}: data_offsets {offsets!r} must be a list of two non-negative integers"
        )
    return dtype, tuple(shape), offsets[0], offsets[1]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: a header makes a few objects per tensor and no cycles,
    and the collections they trigger doubled the parse time of large headers (300,000 tensors:
    3.3 s -> 1.6 s)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_header(buf: Any, *, name: str = "<buffer>", base: int = 0) -> Header:
    """Parse and fully validate the safetensors blob in ``buf[base:]`` (it runs to the end).

    ``buf`` is any bytes-like object or mmap. Nothing is trusted: the length prefix, UTF-8, JSON
    syntax, duplicate keys, field types, dtypes, shapes, the byte size of every tensor, offsets
    that tile the data buffer exactly, and a buffer that ends exactly at the end of ``buf``.

    Example:
        >>> parse_header(serialize_header([], None)).tensors
        {}
    """
    with _gc_paused():
        return _parse_header(buf, name, base)


def _parse_header(buf: Any, name: str, base: int) -> Header:
    view = buf if isinstance(buf, (bytes, bytearray, mmap.mmap)) else memoryview(buf).cast("B")
    total = len(view)
    if base < 0 or base > total:
        raise SafetensorError(f"{name}: blob offset {base} is outside the file ({total} bytes)")
    size = total - base
    if size < 8:
        raise SafetensorError(f"{name}: file is {size} bytes, shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", bytes(view[base : base + 8]))
    if n > MAX_HEADER_SIZE:
        raise SafetensorError(f"{name}: header length {n} exceeds the limit of {MAX_HEADER_SIZE} bytes")
    if 8 + n > size:
        raise SafetensorError(
            f"{name}: header length {n} runs past the end of the file ({size} bytes after the prefix offset)"
        )
    raw = bytes(view[base + 8 : base + 8 + n])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SafetensorError(f"{name}: header is not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    if text.startswith("\ufeff"):
        raise SafetensorError(f"{name}: header starts with a UTF-8 byte order mark; JSON must not")
    try:  # JSON whitespace around the object, matched by a regex: str.strip(" \t\n\r") took 0.65 s on a 100 MB padding
        obj, end = _DECODER.raw_decode(text, _JSON_SPACE.match(text).end())
        if _JSON_SPACE.match(text, end).end() != len(text):
            raise ValueError(f"trailing characters at character {end}")
    except _DuplicateKey as exc:
        raise SafetensorError(f"{name}: duplicate key {exc.key!r} in header JSON") from None
    except RecursionError:
        raise SafetensorError(f"{name}: header JSON is nested too deeply") from None
    except ValueError as exc:
        raise SafetensorError(f"{name}: header is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise SafetensorError(f"{name}: header must be a JSON object, got {type(obj).__name__}")

    metadata: dict[str, str] | None = None
    entries: dict[str, TensorInfo] = {}
    for key, value in obj.items():
        _check_text(key, "key", name)
        if key == _METADATA_KEY:
            if value is not None:
                if not isinstance(value, dict):
                    raise SafetensorError(
                        f"{name}: __metadata__ must be a map of string to string or null, got {type(value).__name__}"
                    )
                for mk, mv in value.items():
                    _check_text(mk, "metadata key", name)
                    if not isinstance(mv, str):
                        raise SafetensorError(
                            f"{name}: __metadata__[{mk!r}] must be a string, got {type(mv).__name__} (nested metadata is not allowed)"
                        )
                    _check_text(mv, "metadata value", name)
                metadata = dict(value)
            continue
        dtype, shape, start, end = _parse_entry(name, key, value)
        try:
            expected = tensor_nbytes(dtype, shape, name=key)
        except SafetensorError as exc:
            raise SafetensorError(f"{name}: {exc}") from None
        if end < start:
            raise SafetensorError(f"{name}: tensor {key!r}: data_offsets [{start}, {end}] end before they start")
        if end - start != expected:
            raise SafetensorError(
                f"{name}: tensor {key!r}: data_offsets [{start}, {end}] hold {end - start} bytes but "
                f"{dtype} {list(shape)} needs {expected}"
            )
        entries[key] = TensorInfo(dtype, shape, start, end)

    cursor = 0
    for key, info in sorted(entries.items(), key=lambda kv: (kv[1].start, kv[1].end)):
        if info.start > cursor:
            raise SafetensorError(
                f"{name}: tensor {key!r} starts at {info.start} but the previous data ends at {cursor} (hole in the data buffer)"
            )
        if info.start < cursor:
            raise SafetensorError(
                f"{name}: tensor {key!r} starts at {info.start}, overlapping data that ends at {cursor}"
            )
        cursor = info.end
    data_start = base + 8 + n
    data_len = total - data_start
    if cursor != data_len:
        what = "trailing bytes after the last tensor" if data_len > cursor else "data buffer is truncated"
        raise SafetensorError(
            f"{name}: tensors cover {cursor} bytes but the data buffer holds {data_len} ({what})"
        )
    return Header(entries, metadata, data_start, data_len, n)


# ---------------------------------------------------------------------------------------------
# layout and serialization


def plan_layout(specs: Mapping[str, tuple[str, tuple[int, ...]]]) -> list[tuple[str, TensorInfo]]:
    """Order tensors as safetensors 0.8 does (dtype rank descending, then name) and give offsets.

    ``specs`` maps name -> (dtype, shape). Refuses the reserved name ``__metadata__`` and
    invalid dtypes/shapes.

    Example:
        >>> [(n, i.start) for n, i in plan_layout({"b": ("U8", (2,)), "a": ("F32", (1,))})]
        [('a', 0), ('b', 4)]
    """
    rows = []
    for key, (dtype, shape) in specs.items():
        if not isinstance(key, str):
            raise SafetensorTypeError(f"tensor name {key!r} must be a str")
        if key == _METADATA_KEY:
            raise SafetensorError(
                "tensor name '__metadata__' is reserved for the metadata map (such a file could not be read back)"
            )
        _check_text(key, "tensor name", "<writer>")
        shape = tuple(int(d) for d in shape)
        rows.append((key, dtype, shape, tensor_nbytes(dtype, shape, name=key)))
    rows.sort(key=lambda r: (-DTYPES[r[1]].rank, r[0]))
    out: list[tuple[str, TensorInfo]] = []
    cursor = 0
    for key, dtype, shape, nbytes in rows:
        out.append((key, TensorInfo(dtype, shape, cursor, cursor + nbytes)))
        cursor += nbytes
    return out


def serialize_header(
    tensors: Iterable[tuple[str, TensorInfo]], metadata: Mapping[str, str] | None
) -> bytes:
    """Return the 8-byte length prefix plus the JSON header, space-padded to a multiple of 8.

    Keys appear as safetensors writes them: ``__metadata__`` first (sorted keys, so output is
    deterministic), then tensors in the given order, compact JSON, non-ASCII kept as UTF-8.

    Example:
        >>> serialize_header([], None)
        b'\\x08\\x00\\x00\\x00\\x00\\x00\\x00\\x00{}      '
    """
    obj: dict[str, Any] = {}
    if metadata is not None:
        for key, value in metadata.items():  # check before sorting: mixed key types can't sort
            if not isinstance(key, str) or not isinstance(value, str):
                raise SafetensorTypeError(
                    f"metadata must map str to str, got {key!r}: {type(value).__name__}"
                )
            _check_text(key, "metadata key", "<writer>")
            _check_text(value, "metadata value", "<writer>")
        obj[_METADATA_KEY] = {key: metadata[key] for key in sorted(metadata)}
    for key, info in tensors:
        if key in obj:
            raise SafetensorError(f"duplicate tensor name {key!r}")
        obj[key] = {"dtype": info.dtype, "shape": list(info.shape), "data_offsets": [info.start, info.end]}
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    if len(text) > MAX_HEADER_SIZE:
        raise SafetensorError(f"header would be {len(text)} bytes, over the {MAX_HEADER_SIZE}-byte limit")
    return struct.pack("<Q", len(text)) + text
