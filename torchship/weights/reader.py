"""Reading: ``safe_open`` over a private (copy-on-write) mmap, zero-copy views, slices.

The file is mapped with ``mmap.ACCESS_COPY``: tensors are views of the mapping, writing to
one never touches the file, and a file replaced on disk (our writer renames a new file over the
old one) leaves existing views intact. The header is validated completely by
:func:`torchship.weights.format.parse_header` before any tensor is created.

Files that embed a safetensors blob are accepted too: a torchship program file (``.tsp``)
starts with ``b"TSHPPROG"`` and a little-endian u64 offset of its weights blob.

Example:
    >>> from torchship.weights import safe_open
    >>> with safe_open("model.safetensors", framework="np") as f:  # doctest: +SKIP
    ...     w = f.get_tensor("embeddings.weight")
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib
import mmap
import operator
import os
import reprlib
import struct
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ml_dtypes
import numpy as np

from torchship.weights.format import (
    DTYPES,
    Header,
    SafetensorError,
    SafetensorTypeError,
    TensorInfo,
    os_error_kind,
    parse_header,
)

PROGRAM_MAGIC = b"TSHPPROG"
"""First 8 bytes of a torchship program file; bytes 8..16 hold the weights blob offset."""

_FRAMEWORKS = {
    "pt": "pt", "torch": "pt", "pytorch": "pt", "np": "np", "numpy": "np",
    "flax": "flax", "jax": "flax", "tf": "tensorflow", "tensorflow": "tensorflow", "mlx": "mlx", "paddle": "paddle",
}
"""``framework=`` names (any case) -> ``pt``, ``np`` or the ``torchship.weights.<adapter>`` whose
``from_numpy`` turns the numpy views into that framework's arrays."""
BACKENDS = ("mmap", "pread")
"""The ``backend=`` values safetensors 0.8 takes; both are served from the private mapping."""


def check_backend(backend: Any) -> None:
    """Refuse a ``backend=`` that safetensors refuses (the same message and exception types).

    Example:
        >>> check_backend("pread")
        >>> check_backend("MMAP")
        Traceback (most recent call last):
        ...
        torchship.weights.format.SafetensorError: backend "MMAP" is invalid (expected one of: "mmap", "pread")
    """
    if not isinstance(backend, str):
        raise SafetensorTypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend not in BACKENDS:
        raise SafetensorError(f'backend "{backend}" is invalid (expected one of: "mmap", "pread")')


class SliceError(SafetensorError, IndexError, ValueError):
    """An index passed to ``get_slice(...)[...]`` is invalid (also an IndexError and a
    ValueError: safetensors raises either, depending on the framework and the index).

    Example:
        >>> issubclass(SliceError, IndexError), issubclass(SliceError, ValueError)
        (True, True)
    """


def blob_offset(buf: Any, *, name: str) -> int:
    """Offset of the safetensors blob in ``buf``: 0, or the weights offset of a program file.

    Example:
        >>> blob_offset(PROGRAM_MAGIC + (64).to_bytes(8, "little") + bytes(48), name="p.tsp")
        64
    """
    if len(buf) >= 8 and bytes(buf[:8]) == PROGRAM_MAGIC:
        if len(buf) < 16:
            raise SafetensorError(f"{name}: program file is {len(buf)} bytes, too short for its weights offset")
        (offset,) = struct.unpack_from("<Q", buf, 8)
        if offset < 16 or offset > len(buf):
            raise SafetensorError(
                f"{name}: program weights offset {offset} is outside the file (16..{len(buf)})"
            )
        return offset
    return 0


def map_file(path: str | os.PathLike[str]) -> mmap.mmap | bytes:
    """Map ``path`` privately (copy-on-write); an empty file gives ``b""``.

    Example:
        >>> map_file("model.safetensors")[:8]  # doctest: +SKIP
        b'\\x90\\x00\\x00\\x00\\x00\\x00\\x00\\x00'
    """
    with open(path, "rb") as fileobj:
        size = os.fstat(fileobj.fileno()).st_size
        if size == 0:
            return b""
        return mmap.mmap(fileobj.fileno(), 0, access=mmap.ACCESS_COPY)


def advise_willneed(buf: Any, start: int, end: int) -> None:
    """Ask the kernel to read ``buf[start:end]`` ahead (async), when ``buf`` is an mmap.

    Errors are ignored (it is only a hint).

    Example:
        >>> advise_willneed(b"not an mmap", 0, 4)
    """
    if not isinstance(buf, mmap.mmap) or end <= start or not hasattr(mmap, "MADV_WILLNEED"):
        return
    aligned = start - start % mmap.PAGESIZE
    with contextlib.suppress(OSError, ValueError):
        buf.madvise(mmap.MADV_WILLNEED, aligned, min(end, len(buf)) - aligned)


_MADV_POPULATE_READ = 22  # Linux >= 5.14
_POPULATE_CHUNK = 64 << 20
_populate_ok = sys.platform.startswith("linux")


def _madvise_fn() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.madvise
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


def prefault(buf: Any, start: int, end: int) -> None:
    """Map ``buf[start:end]`` in before it is used (GPU loads run it in the background, ahead
    of the staging copies; on the H100 box it cut cold 1 GiB loads from 0.89 s to 0.68 s, while
    for CPU loads plain ``MADV_WILLNEED`` measured faster): page tables are filled in bulk
    (``MADV_POPULATE_READ``, several threads for big ranges, reading from disk in parallel when
    the file is cold) instead of one page fault at a time. Read-only population: no
    copy-on-write copies are made. Falls back to ``MADV_WILLNEED`` where unsupported.

    Example:
        >>> prefault(b"not an mmap", 0, 4)
    """
    global _populate_ok
    if not isinstance(buf, mmap.mmap) or end <= start:
        return
    if not _populate_ok:
        advise_willneed(buf, start, end)
        return
    end = min(end, len(buf))
    start -= start % mmap.PAGESIZE
    anchor = ctypes.c_char.from_buffer(buf)
    base = ctypes.addressof(anchor)
    del anchor
    madvise = _madvise_fn()
    size = end - start
    workers = max(1, min(8, os.cpu_count() or 1, size // _POPULATE_CHUNK))
    step = -(-size // workers)
    step += -step % mmap.PAGESIZE
    spans = [(base + off, min(step, end - off)) for off in range(start, end, step)]

    def run(span: tuple[int, int]) -> int:
        return 0 if madvise(span[0], span[1], _MADV_POPULATE_READ) == 0 else ctypes.get_errno()

    if len(spans) == 1:
        errors = [run(spans[0])]
    else:
        with ThreadPoolExecutor(max_workers=len(spans), thread_name_prefix="torchship-prefault") as pool:
            errors = list(pool.map(run, spans))
    if any(errors):
        if any(e in (errno.EINVAL, errno.ENOSYS) for e in errors):
            _populate_ok = False  # kernel without MADV_POPULATE_READ
        advise_willneed(buf, start, end)


def numpy_view(buf: Any, header: Header, key: str, *, name: str = "<buffer>") -> np.ndarray:
    """A numpy array for tensor ``key`` (a zero-copy view except F4, which numpy unpacks).

    Example:
        >>> from torchship.weights.format import serialize_header
        >>> blob = serialize_header([("x", TensorInfo("I16", (2,), 0, 4))], None) + b"\\x01\\x00\\x02\\x00"
        >>> numpy_view(blob, parse_header(blob), "x").tolist()
        [1, 2]
    """
    info = header.tensors[key]
    offset = header.data_start + info.start
    if info.dtype == "F4":
        packed = np.frombuffer(buf, dtype=np.uint8, count=info.nbytes, offset=offset)
        pairs = np.stack([packed & 0x0F, packed >> 4], axis=-1)
        return pairs.reshape(info.shape).view(ml_dtypes.float4_e2m1fn)
    dtype = DTYPES[info.dtype].numpy
    if dtype is None:
        raise SafetensorError(f"tensor {key!r}: dtype {info.dtype} has no numpy representation")
    count = info.nbytes // dtype.itemsize
    if count == 0:
        try:
            return np.empty(info.shape, dtype=dtype)
        except ValueError as exc:  # a u64 dimension numpy cannot hold
            raise SafetensorError(
                f"{name}: tensor {key!r}: shape {list(info.shape)} cannot be a numpy array ({exc})"
            ) from None
    return np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(info.shape)


def parse_bytes(data: Any) -> tuple[bytearray, Header, list[str]]:
    """For ``load(bytes)``: a private copy of ``data``, its validated header, and the tensor
    names in data order.

    Example:
        >>> from torchship.weights.format import serialize_header
        >>> parse_bytes(serialize_header([], None))[2]
        []
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SafetensorTypeError(f"expected bytes, got {type(data).__name__}")
    buf = bytearray(data)
    header = parse_header(buf, name="<bytes>")
    return buf, header, sorted(header.tensors, key=lambda k: (header.tensors[k].start, header.tensors[k].end, k))


def _as_int(item: Any) -> int | None:
    """``item`` as an index int (Python or numpy ints, 0-d integer arrays/tensors), else None.
    Bools are not ints here: numpy and torch read them as masks."""
    if isinstance(item, (bool, np.bool_)):
        return None
    if isinstance(item, (int, np.integer)):
        return int(item)
    if getattr(item, "ndim", None) == 0 and "bool" not in str(getattr(item, "dtype", "")):
        try:
            return operator.index(item)
        except TypeError:
            return None
    return None


def is_basic_index(index: Any) -> bool:
    """True when ``index`` holds only ints, slices and at most one ``...`` (what
    :func:`normalize_index` takes); torch's other forms (None, bools, lists, tensors) are not.

    Example:
        >>> is_basic_index((0, slice(1, None), ...)), is_basic_index((None, 0))
        (True, False)
    """
    items = index if isinstance(index, tuple) else (index,)
    if sum(1 for item in items if item is Ellipsis) > 1:
        return False
    return all(item is Ellipsis or isinstance(item, slice) or (isinstance(item, list) and not item)
               or _as_int(item) is not None for item in items)


def normalize_index(index: Any, shape: tuple[int, ...], *, name: str) -> tuple[Any, ...]:
    """Check a slice index (ints incl. negative, ``start:stop:step`` with step > 0, one ``...``)
    and return it as a full tuple of ints and slices with the ellipsis expanded. Slice bounds
    past the end are clipped, as Python, numpy and torch do.

    Example:
        >>> normalize_index((..., -1), (3, 4), name="x")
        (slice(None, None, None), 3)
    """
    items = index if isinstance(index, tuple) else (index,)
    if sum(1 for item in items if item is Ellipsis) > 1:
        raise SliceError(f"tensor {name!r}: only one ellipsis (...) is allowed in a slice index")
    concrete = [item for item in items if item is not Ellipsis]
    if len(concrete) > len(shape):
        raise SliceError(
            f"tensor {name!r}: {len(concrete)} indices for a tensor with {len(shape)} dimensions {list(shape)}"
        )
    fill = [slice(None)] * (len(shape) - len(concrete))
    # ``is`` only: ``in``/``==`` on an array index would raise numpy's "truth value is ambiguous"
    at = next((i for i, item in enumerate(items) if item is Ellipsis), len(items))
    expanded = [*concrete[:at], *fill, *concrete[at:]]
    out: list[Any] = []
    for axis, (item, size) in enumerate(zip(expanded, shape)):
        if isinstance(item, list) and not item:
            item = slice(0, 0)  # an empty selection, as numpy reads ``a[[]]`` (and safetensors)
        if isinstance(item, slice):
            parts = [None if part is None else _as_int(part) for part in (item.start, item.stop, item.step)]
            if any(new is None and old is not None for new, old in zip(parts, (item.start, item.stop, item.step))):
                raise SliceError(f"tensor {name!r}: slice bounds must be integers, got {item!r}")
            if parts[2] is not None and parts[2] <= 0:
                raise SliceError(f"tensor {name!r}: slice step must be a positive integer, got {parts[2]}")
            out.append(slice(*parts))
        elif (value := _as_int(item)) is not None:
            pos = value + size if value < 0 else value
            if not 0 <= pos < size:
                raise SliceError(
                    f"tensor {name!r}: index {value} is out of bounds for dimension {axis} of size {size}"
                )
            out.append(pos)
        else:
            raise SliceError(
                f"tensor {name!r}: unsupported index {item!r} at position {axis} (expected int, slice or ...)"
            )
    return tuple(out)


class TensorSlice:
    """Lazy handle on one tensor: ``get_shape()``, ``get_dtype()``, and ``[...]`` indexing.

    Example:
        >>> with safe_open("model.safetensors", framework="np") as f:  # doctest: +SKIP
        ...     rows = f.get_slice("embeddings.weight")[:10]
    """

    def __init__(self, handle: safe_open, key: str) -> None:
        self._handle = handle
        self._key = key
        self._info = handle._info(key)
        self._buf = handle._live_buf()  # the slice keeps reading after the handle closes (as in safetensors)

    def get_shape(self) -> list[int]:
        """The tensor's shape as a list. Example: ``f.get_slice("w").get_shape()`` -> ``[3, 4]``."""
        return list(self._info.shape)

    def get_dtype(self) -> str:
        """The safetensors dtype name. Example: ``f.get_slice("w").get_dtype()`` -> ``'F32'``."""
        return self._info.dtype

    def __getitem__(self, index: Any) -> Any:
        torch_fw = self._handle._framework == "pt"
        if torch_fw and not is_basic_index(index):
            # safetensors hands such an index (None, bools, lists, tensors) to torch as is
            try:
                tensor = self._handle._tensor(self._key, self._buf)[index]
            except (IndexError, TypeError, ValueError) as exc:
                raise SliceError(f"tensor {self._key!r}: index {reprlib.repr(index)}: {exc}") from exc
        else:
            shape = self._info.shape
            if self._info.dtype == "F4" and torch_fw:
                shape = (*shape[:-1], shape[-1] // 2)
            tensor = self._handle._tensor(self._key, self._buf)[normalize_index(index, shape, name=self._key)]
        if not torch_fw:  # an array, never a numpy scalar (as safetensors returns)
            return self._handle._to_framework(np.asarray(tensor))
        device = self._handle._device
        return tensor.to(device) if device.type != "cpu" else tensor


class safe_open:  # noqa: N801 - drop-in name
    """Open a safetensors file (or a torchship program file) lazily, like ``safetensors.safe_open``.

    ``framework`` is ``"pt"`` (torch tensors), ``"np"`` (numpy arrays), or ``"flax"``/``"jax"``,
    ``"tf"``/``"tensorflow"``, ``"mlx"``: that framework's arrays, made from the numpy views by the
    adapter ``torchship.weights.flax``/``.tensorflow``/``.mlx`` (without the framework installed,
    the first tensor read raises its ``FrameworkMissingError``, a ``ModuleNotFoundError``, as
    safetensors raises one then; ``"paddle"`` is refused at open). ``device`` applies to
    torch (``"cpu"``, ``"cuda"``, ``"cuda:1"``, an int or a ``torch.device``; None means the CPU);
    the other frameworks load to the CPU only.
    ``backend`` is ``"mmap"`` or ``"pread"`` as in safetensors; both read through the private
    mapping (safetensors' ``pread`` serves Apple MPS, which torchship does not target).

    Example:
        >>> with safe_open("model.safetensors", framework="pt") as f:  # doctest: +SKIP
        ...     tensors = {k: f.get_tensor(k) for k in f.keys()}
    """

    def __init__(
        self, filename: str | os.PathLike[str], framework: str = "pt", device: Any = "cpu", *, backend: str = "mmap"
    ) -> None:
        check_backend(backend)
        if not isinstance(framework, str):
            raise SafetensorTypeError(f"framework must be a str, got {type(framework).__name__}")
        fw = _FRAMEWORKS.get(framework.lower())
        if fw is None:
            raise SafetensorError(
                f"framework {framework!r} is not supported (use 'pt', 'np', 'flax', 'tf' or 'mlx')"
            )
        if fw == "paddle":
            importlib.import_module("torchship.weights.paddle")  # raises its FrameworkMissingError
        self._framework = fw
        self._name = os.fspath(filename)
        if fw != "pt" and device is not None and str(device) != "cpu":
            raise SafetensorError(f"framework {framework!r} loads to the CPU only, got device {device!r}")
        self._device = device
        try:
            self._buf: Any = map_file(filename)
        except OSError as exc:  # also the OSError subtype, as safetensors raises one
            raise os_error_kind(type(exc))(f"{self._name}: cannot open: {exc.strerror or exc}") from exc
        base = blob_offset(self._buf, name=self._name)
        self._header = parse_header(self._buf, name=self._name, base=base)
        self._torch: Any = None
        if fw == "pt":
            from torchship.weights import torch as torch_adapter

            self._torch = torch_adapter
            try:
                self._device = torch_adapter.normalize_device(device, check=True)
            except SafetensorError as exc:
                raise SafetensorError(f"{self._name}: {exc}") from None

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> safe_open:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop this handle's reference to the mapping (tensors already returned stay valid).

        Example:
            >>> f = safe_open("model.safetensors", "np"); f.close()  # doctest: +SKIP
        """
        self._buf = None

    # -- header ----------------------------------------------------------------------------
    @property
    def header(self) -> Header:
        """The validated header (tensors, metadata, offsets). Example: ``f.header.data_start``."""
        return self._header

    def keys(self) -> list[str]:
        """Tensor names, sorted. Example: ``f.keys()`` -> ``['a', 'b']``."""
        return sorted(self._header.tensors)

    def offset_keys(self) -> list[str]:
        """Tensor names in data-buffer order. Example: ``f.offset_keys()`` -> ``['b', 'a']``."""
        items = sorted(self._header.tensors.items(), key=lambda kv: (kv[1].start, kv[1].end, kv[0]))
        return [k for k, _ in items]

    def metadata(self) -> dict[str, str] | None:
        """The ``__metadata__`` map, or None. Example: ``f.metadata()`` -> ``{'format': 'pt'}``."""
        return None if self._header.metadata is None else dict(self._header.metadata)

    def _info(self, key: str) -> TensorInfo:
        if not isinstance(key, str):
            raise SafetensorTypeError(f"{self._name}: tensor name must be a str, got {type(key).__name__}")
        info = self._header.tensors.get(key)
        if info is None:
            raise SafetensorError(f"{self._name}: no tensor named {key!r}")
        return info

    def _live_buf(self) -> Any:
        if self._buf is None:
            raise SafetensorError(f"{self._name}: file is closed")
        return self._buf

    def _tensor(self, key: str, buf: Any = None) -> Any:
        self._info(key)
        buf = self._live_buf() if buf is None else buf
        if self._framework == "pt":
            return self._torch.cpu_view(buf, self._header, key, name=self._name)
        return numpy_view(buf, self._header, key, name=self._name)

    def _to_framework(self, array: np.ndarray) -> Any:
        """A numpy array as this handle's framework's array (``np``: the array itself)."""
        if self._framework == "np":
            return array
        return importlib.import_module(f"torchship.weights.{self._framework}").from_numpy(array)

    # -- tensors ---------------------------------------------------------------------------
    def get_tensor(self, name: str) -> Any:
        """Load one tensor (a zero-copy view on CPU). Example: ``f.get_tensor("w").shape``."""
        info = self._info(name)
        start = self._header.data_start + info.start
        advise_willneed(self._live_buf(), start, start + info.nbytes)
        tensor = self._tensor(name)
        if self._framework != "pt":
            return self._to_framework(tensor)
        return tensor.to(self._device) if self._device.type != "cpu" else tensor

    def get_tensors(self) -> dict[str, Any]:
        """Load every tensor, in data order; to a GPU this streams through pinned buffers.

        Example:
            >>> with safe_open("model.safetensors", "np") as f:  # doctest: +SKIP
            ...     state = f.get_tensors()
        """
        keys = self.offset_keys()
        buf = self._live_buf()
        span = (self._header.data_start, self._header.data_start + self._header.data_len)
        if self._framework == "pt" and self._device.type != "cpu":
            # read ahead in the background while the staging copies follow behind
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="torchship-readahead") as pool:
                pending = pool.submit(prefault, buf, *span)
                result = self._torch.load_to_device(buf, self._header, keys, self._device, name=self._name)
                pending.result()
            return result
        advise_willneed(buf, *span)  # async readahead overlaps the caller's first reads
        if self._framework == "pt":
            return {key: self._tensor(key) for key in keys}
        return {key: self._to_framework(self._tensor(key)) for key in keys}

    def get_slice(self, name: str) -> TensorSlice:
        """A lazy slice handle. Example: ``f.get_slice("w")[1:, ..., -1]``."""
        return TensorSlice(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._header.tensors)
