"""Framework-neutral streaming writer: plan -> header -> tensor bytes streamed -> fsync -> rename.

Callers describe each tensor with an :class:`Entry` (dtype name, shape, and its bytes or a
zero-argument callable returning them). Tensors are written one at a time straight from their
memory, so a huge checkpoint never sits in memory twice, and a file is only ever replaced
atomically: the data goes to a temp file in the same directory, is fsync'd, then renamed over
the destination (an mmap of the old file elsewhere keeps seeing the old bytes).

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> save_entries({"w": Entry("F32", (2,), np.ones(2, np.float32))}, path)
    >>> os.path.getsize(path)
    72
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from torchship.weights.format import (
    SafetensorError,
    SafetensorTypeError,
    SafetensorValueError,
    TensorInfo,
    os_error_kind,
    plan_layout,
    serialize_header,
)

WRITE_BUFFER = 8 << 20
"""Write buffer size: small tensors are coalesced, larger ones go straight to the kernel."""


@dataclass(frozen=True)
class Entry:
    """One tensor to write.

    ``data`` is a C-contiguous little-endian bytes-like object (bytes, memoryview, numpy array)
    holding exactly the tensor's bytes, or a zero-argument callable returning one (called
    lazily, when the writer reaches this tensor).

    Example:
        >>> Entry("U8", (3,), b"abc").shape
        (3,)
    """

    dtype: str
    shape: tuple[int, ...]
    data: Any


def plan(
    entries: Mapping[str, Entry], metadata: Mapping[str, str] | None = None
) -> tuple[bytes, list[tuple[str, TensorInfo]]]:
    """Return (header bytes incl. the length prefix, tensors in write order with offsets).

    Example:
        >>> header, layout = plan({"a": Entry("U8", (1,), b"x")})
        >>> len(header) % 8, layout[0][1]
        (0, TensorInfo(dtype='U8', shape=(1,), start=0, end=1))
    """
    if not isinstance(entries, Mapping):
        raise SafetensorValueError(f"expected a mapping of name -> Entry, got {type(entries).__name__}")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise SafetensorTypeError(f"metadata must be a mapping of str to str, got {type(metadata).__name__}")
    layout = plan_layout({k: (e.dtype, tuple(e.shape)) for k, e in entries.items()})
    return serialize_header(layout, metadata), layout


def as_byte_view(data: Any, *, name: str, nbytes: int) -> memoryview:
    """Turn an entry's data into a flat byte memoryview of exactly ``nbytes`` bytes (no copy
    unless a numpy array must be made contiguous or little-endian).

    Example:
        >>> as_byte_view(np.arange(2, dtype=np.int16), name="x", nbytes=4).tobytes()
        b'\\x00\\x00\\x01\\x00'
    """
    if callable(data):
        data = data()
    if isinstance(data, np.ndarray):
        if data.dtype.byteorder == ">":
            data = data.astype(data.dtype.newbyteorder("<"))
        if not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
        view = memoryview(data.reshape(-1).view(np.uint8))
    else:
        try:
            view = memoryview(data)
        except TypeError as exc:
            raise SafetensorError(
                f"tensor {name!r}: data of type {type(data).__name__} is not bytes-like"
            ) from exc
        if not view.c_contiguous:
            raise SafetensorError(f"tensor {name!r}: data buffer is not C-contiguous")
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
    if view.nbytes != nbytes:
        raise SafetensorError(
            f"tensor {name!r}: data holds {view.nbytes} bytes but its dtype and shape need {nbytes}"
        )
    return view


def _write_all(fileobj: BinaryIO, view: memoryview) -> None:
    while view.nbytes:
        written = fileobj.write(view)
        if written is None:  # non-blocking raw stream: nothing written yet
            continue
        view = view[written:]


def write_entries(
    fileobj: BinaryIO,
    entries: Mapping[str, Entry],
    metadata: Mapping[str, str] | None = None,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Write a complete safetensors blob at the file's current position; return its size.

    The header is planned first (so bad names, dtypes or shapes fail before any byte is
    written), then each tensor's bytes are written in layout order. ``on_progress(n)`` is
    called after each tensor with the blob bytes written so far.

    Example:
        >>> import io
        >>> buf = io.BytesIO()
        >>> write_entries(buf, {"a": Entry("U8", (2,), b"hi")})
        66
    """
    return _write_planned(fileobj, entries, *plan(entries, metadata), on_progress)


def _write_planned(
    fileobj: BinaryIO,
    entries: Mapping[str, Entry],
    header: bytes,
    layout: list[tuple[str, TensorInfo]],
    on_progress: Callable[[int], None] | None,
) -> int:
    _write_all(fileobj, memoryview(header))
    total = len(header)
    for key, info in layout:
        view = as_byte_view(entries[key].data, name=key, nbytes=info.nbytes)
        _write_all(fileobj, view)
        total += info.nbytes
        del view
        if on_progress is not None:
            on_progress(total)
    return total


WRITEBACK_AHEAD = 32 << 20
"""While saving, start the disk writeback of every this many bytes as soon as they
are written (Linux ``sync_file_range``), so the disk works while later tensors are copied and
the final fsync has little left to wait for. 0 turns it off."""


def _sync_file_range() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


class _Writeback:
    """``on_progress`` hook: kick off asynchronous writeback of each newly written span."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self.fileobj = fileobj
        self.fd = fileobj.fileno()
        self.done = 0
        self.fn = _sync_file_range() if WRITEBACK_AHEAD > 0 else None

    def __call__(self, written: int) -> None:
        if self.fn is None or written - self.done < WRITEBACK_AHEAD:
            return
        self.fileobj.flush()
        if self.fn(self.fd, self.done, written - self.done, 2) != 0:  # SYNC_FILE_RANGE_WRITE
            self.fn = None  # unsupported here: the final fsync does all the work
        self.done = written


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _open_existing(path: str) -> int | None:
    """An fd on the file about to be replaced, so freeing its blocks happens at our close
    (POSIX only: elsewhere an open destination would block the rename)."""
    if os.name != "posix":
        return None
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return None


def _close_later(fd: int | None) -> None:
    """Close ``fd`` on a background thread: when it is the last reference to a replaced file,
    the filesystem frees (and may discard) its blocks there instead of inside ``save``."""
    if fd is not None:
        threading.Thread(target=os.close, args=(fd,), name="torchship-close-replaced", daemon=True).start()


def os_error(exc: OSError, filename: Any) -> OSError:
    """The OSError ``exc`` as an error that is both its own type and a SafetensorError (as
    safetensors raises for a failed write), naming ``filename``.

    Example:
        >>> err = os_error(IsADirectoryError(21, "Is a directory"), "w.safetensors")
        >>> isinstance(err, IsADirectoryError), isinstance(err, SafetensorError), str(err)
        (True, True, "[Errno 21] Is a directory: 'w.safetensors'")
    """
    kind = os_error_kind(type(exc))
    return kind(*exc.args) if exc.errno is None else kind(exc.errno, exc.strerror, filename)


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[BinaryIO], Any], *, fsync: bool = True
) -> Any:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync, then rename it to ``path``.

    A symlink ``path`` is written through to its target; an existing file keeps its mode.

    On any error the temp file is removed and ``path`` is untouched. ``fsync=False`` skips the
    flush to disk (the rename is still atomic, but a power cut may lose the new file's data).

    Example:
        >>> import tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "x.bin")
        >>> atomic_write(p, lambda f: f.write(b"ok"))
        2
    """
    # A symlink is written through (its target is replaced, the link stays), as an in-place
    # writer would; an existing file keeps its permission bits.
    path = os.path.realpath(os.fspath(path))
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:  # name the file the caller asked for, not our temp file
        raise os_error(exc, path) from exc
    try:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(fd, os.stat(path).st_mode & 0o7777)
        with open(fd, "wb", buffering=WRITE_BUFFER, closefd=True) as fileobj:
            result = write(fileobj)
            fileobj.flush()
            if fsync:
                os.fsync(fileobj.fileno())
        replaced = _open_existing(path)
        try:
            os.replace(tmp, path)
        finally:
            _close_later(replaced)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, SafetensorError):
            raise os_error(exc, exc.filename if exc.filename != tmp else path) from exc
        raise
    if fsync:
        _fsync_dir(directory)
    return result


def save_entries(
    entries: Mapping[str, Entry],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    *,
    fsync: bool = True,
) -> None:
    """Write ``entries`` as a safetensors file at ``path``, atomically (temp file + rename).

    The data is fsync'd before the rename unless ``fsync=False``.

    Example:
        >>> import tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "e.safetensors")
        >>> save_entries({}, p, metadata={"format": "np"})
        >>> open(p, "rb").read()[8:]
        b'{"__metadata__":{"format":"np"}}'
    """
    header, layout = plan(entries, metadata)  # fail on bad input before creating any file

    def write(fileobj: BinaryIO) -> int:
        hook = _Writeback(fileobj)  # also without fsync: ext4 flushes the file at the rename
        return _write_planned(fileobj, entries, header, layout, hook)

    atomic_write(path, write, fsync=fsync)
