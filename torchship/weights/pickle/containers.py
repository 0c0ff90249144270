"""Checkpoint containers: torch zip, legacy stream, legacy tar, a bare pickle file (and numpy
``.npz``/``.npy`` files, see ``numpy_files.py``).

Each container runs our pickle :class:`~torchship.weights.pickle.vm.Machine` over its pickle(s)
with a persistent-id hook that turns storage records into :class:`StorageRef` values, and can
later read any byte range of a storage record (``read``) without loading the rest: stored zip
records and legacy storages are read with ``os.pread``; deflated records are inflated one at a
time with a size bound. Zip archives are checked member by member (duplicate or conflicting
names, mismatched local headers, encryption flags, odd compression, more than one root folder)
and TorchScript archives are refused.

Example:
    >>> import torch, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "m.pt"); torch.save({"w": torch.ones(2)}, p)
    >>> with open_container(p) as c:
    ...     loaded = c.load()
    >>> c.kind, loaded.value["w"].shape
    ('zip', (2,))
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import tarfile
from dataclasses import dataclass, field
from typing import Any

from torchship.weights.format import MAX_HEADER_SIZE
from torchship.weights.pickle.allowlist import (
    StorageRef,
    StorageType,
    TensorRef,
    make_tensor,
    resolve,
    skippable,
    unstorable,
)
from torchship.weights.pickle.vm import Limits, Machine, Opaque, PickleVMError, Trace, short_repr
from torchship.weights.reader import PROGRAM_MAGIC

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_PICKLE_BYTES = 1 << 30


class ContainerError(ValueError):
    """The file is not a checkpoint we accept (message names the file and the problem).

    Example:
        >>> str(ContainerError("x.pt", "bad"))
        'x.pt: bad'
    """

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


@dataclass
class Loaded:
    """The value a container's main pickle builds, plus what the machine saw.

    Example:
        >>> Loaded(None, [], []).findings
        []
    """

    value: Any
    traces: list[tuple[str, Trace]]
    findings: list[str] = field(default_factory=list)


def sniff(path: str) -> str:
    """Guess a file's format from its first bytes: zip | tar | pickle | npy | safetensors | unknown.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "a"); open(p, "wb").write(b"\\x80\\x02N.")
        4
        >>> sniff(p)
        'pickle'
    """
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "pickle"
    if head[:8] == PROGRAM_MAGIC:
        return "safetensors"  # a torchship program file: its weights are a safetensors blob
    if len(head) >= 9 and head[8:9] in (b"{", b" ", b"\t", b"\n", b"\r"):  # JSON may lead with spaces
        n = int.from_bytes(head[:8], "little")
        if 2 <= n <= MAX_HEADER_SIZE:
            return "safetensors"
    if head[:1] in (b"(", b"}", b"]", b"c", b"N", b"I", b"S", b"V", b"L", b"F", b"K", b"J"):
        return "pickle"  # protocol 0/1 stream
    return "unknown"


class Container:
    """Base: a file, its kind, byte order, and the storage reader. Use :func:`open_container`.

    Example:
        >>> LegacyContainer.kind, PickleContainer.kind, TarContainer.kind
        ('legacy', 'pickle', 'tar')
    """

    kind = "?"

    def __init__(self, path: str, limits: Limits | None = None) -> None:
        self.path = path
        self.limits = limits or Limits()
        self.byteorder = "little"
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self.size = os.fstat(self.fd).st_size
        self.storages: list[StorageRef] = []
        self.findings: list[str] = []
        self.machines: list[Machine] = []  # every machine run, kept for the scanner
        self._data_map: mmap.mmap | None = None
        self._handed_out: tuple[int, int] | None = None
        self.skip_objects = False  # convert(strict=False): objects of non-dangerous classes are
        # kept as placeholders (flatten reports them) instead of refusing the file

    def close(self) -> None:
        """Release the file. Example: ``c.close()``."""
        if self._data_map is not None:
            with contextlib.suppress(BufferError):  # a view still alive: the GC closes it
                self._data_map.close()
            self._data_map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def pread(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset`` of the file. Example: ``c.pread(0, 4)``."""
        chunks = []
        while length:
            chunk = os.pread(self.fd, min(length, 1 << 30), offset)
            if not chunk:
                raise ContainerError(self.path, f"file ends at byte {offset}, {length} bytes short")
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def file_range(self, offset: int, length: int) -> memoryview:
        """A zero-copy view of ``length`` file bytes at ``offset`` (memory-mapped).

        The range handed out before is dropped from this process's resident memory first
        (``MADV_DONTNEED``; the writer has consumed it by then), so converting a checkpoint
        keeps about one tensor resident, not the whole file.

        Example: ``bytes(c.file_range(0, 2))`` -> ``b'PK'`` for a zip checkpoint.
        """
        if offset < 0 or offset + length > self.size:
            raise ContainerError(self.path, f"range of {length} bytes at {offset} is outside the "
                                 f"file ({self.size} bytes)")
        if length == 0:
            return memoryview(b"")
        if self._data_map is None:
            self._data_map = mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ)
        self._drop_handed_out()
        self._handed_out = (offset, length)
        return memoryview(self._data_map)[offset:offset + length]

    def _drop_handed_out(self) -> None:
        if self._handed_out is None or self._data_map is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        offset, length = self._handed_out
        page = mmap.PAGESIZE
        start = -(-offset // page) * page
        stop = (offset + length) // page * page
        if stop > start:
            self._data_map.madvise(mmap.MADV_DONTNEED, start, stop - start)
        self._handed_out = None

    def read(self, storage: StorageRef, start: int, length: int) -> Any:
        """Bytes ``[start, start+length)`` of a storage (relative to the storage's first byte),
        as a bytes-like object (a view of the file where the record is stored uncompressed).

        Example: see :func:`open_container`."""
        raise NotImplementedError

    def record_crc(self, tensor: Any) -> int | None:
        """The CRC-32 the container recorded for exactly this tensor's bytes, if it has one.

        Example: ``c.record_crc(t)`` -> an int for a whole stored zip record, else None."""
        return None

    def load(self, strict: bool = True) -> Loaded:
        """Run the main pickle (and its helpers) through our machine. Example: see module."""
        raise NotImplementedError

    def problem(self, message: str, strict: bool) -> None:
        """A flaw in the file: refused when converting (``strict``), recorded when scanning.

        Example: ``c.problem("3 bytes after STOP", strict=False)`` appends to ``c.findings``.
        """
        if strict:
            raise ContainerError(self.path, message)
        self.findings.append(message)

    def machine(self, data: Any, *, strict: bool, source: str, start: int = 0,
                persistent: Any = None) -> Machine:
        """A machine wired to the allowlist and this container's limits. Example: internal."""
        m = Machine(data, resolve=resolve, persistent_load=persistent, strict=strict,
                    limits=self.limits, source=source, start=start, explain=unstorable,
                    skip=skippable if self.skip_objects else None)
        self.machines.append(m)
        return m

    def _storage(self, pid_where: str, storage_type: Any, key: Any, location: Any, numel: Any,
                 offset: int) -> StorageRef:
        if not isinstance(storage_type, StorageType):
            raise PickleVMError(f"persistent id names storage type {short_repr(storage_type)}, "
                                "expected torch.<X>Storage", offset, pid_where)
        if not isinstance(key, str | int) or not isinstance(location, str):
            raise PickleVMError("persistent id key/location must be strings", offset, pid_where)
        if type(numel) is not int or numel < 0:
            raise PickleVMError(f"storage numel {numel!r} is not a non-negative int", offset,
                                pid_where)
        ref = StorageRef(str(key), storage_type.dtype, numel, location, self)
        self.storages.append(ref)
        return ref


class _RawRecords(Container):
    """A container whose storages are raw byte ranges of the file (legacy stream and tar):
    ``records`` maps a storage key to (file offset, byte count).

    Example: see :class:`LegacyContainer`.
    """

    def __init__(self, path: str, limits: Limits | None = None) -> None:
        super().__init__(path, limits)
        self.records: dict[str, tuple[int, int]] = {}  # key -> (file offset, nbytes)

    def read(self, storage: StorageRef, start: int, length: int) -> bytes:
        offset, nbytes = self.records[storage.key]
        start += storage.base
        if start < 0 or start + length > nbytes:
            raise ContainerError(self.path, f"read outside storage {storage.key!r}")
        return self.file_range(offset + start, length)


# --------------------------------------------------------------------------- legacy stream

class LegacyContainer(_RawRecords):
    """``torch.save(..., _use_new_zipfile_serialization=False)``: magic, protocol 1001, sys_info,
    the main pickle, the storage key list, then each storage as int64 count + raw bytes.

    Example:
        >>> import torch, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "m.pt")
        >>> torch.save({"w": torch.ones(2)}, p, _use_new_zipfile_serialization=False)
        >>> with LegacyContainer(p) as c:
        ...     c.load().value["w"].storage.numel
        2
    """

    kind = "legacy"

    def __init__(self, path: str, limits: Limits | None = None) -> None:
        super().__init__(path, limits)
        self.map = mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ) if self.size else b""

    def close(self) -> None:
        """Release the mapping and the file. Example: ``c.close()``."""
        if isinstance(getattr(self, "map", None), mmap.mmap):
            self.map.close()
        super().close()

    @staticmethod
    def looks_legacy(path: str) -> bool:
        """True when the file starts with the pickled legacy magic number, at any pickle
        protocol ``torch.save(pickle_protocol=...)`` takes: binary (LONG1, after a FRAME from
        protocol 4) or decimal text (protocols 0 and 1).

        Example: ``LegacyContainer.looks_legacy('model.bin')`` -> ``True`` for old torch files."""
        with open(path, "rb") as f:
            head = f.read(32)
        return (LEGACY_MAGIC.to_bytes(10, "little") in head[:24]
                or head.startswith(b"L" + str(LEGACY_MAGIC).encode() + b"L\n"))

    def load(self, strict: bool = True) -> Loaded:
        """Run the legacy stream's pickles and index its raw storages. Example: see class."""
        traces: list[tuple[str, Trace]] = []
        pos = 0
        header = []
        for what in ("magic number", "protocol version", "sys_info"):
            m = self.machine(self.map, strict=True, source=f"{self.path} ({what})", start=pos)
            header.append(m.run())
            traces.append((what, m.trace))
            pos = m.trace.end
        if header[0] != LEGACY_MAGIC:
            raise ContainerError(self.path, "not a legacy torch file (wrong magic number)")
        if header[1] != LEGACY_PROTOCOL:
            raise ContainerError(self.path, f"legacy protocol {header[1]!r}, expected 1001")
        if not isinstance(header[2], dict):
            raise ContainerError(self.path, "legacy sys_info is not a dict")
        source = f"{self.path} (main pickle)"
        views: list[tuple[StorageRef, int]] = []

        def persistent(pid: Any, offset: int) -> Any:
            if not isinstance(pid, tuple) or not pid:
                raise PickleVMError(f"unexpected persistent id {short_repr(pid)}", offset, source)
            if pid[0] == "module" and (not strict or self.skip_objects):
                if self.skip_objects and len(pid) > 1 and isinstance(pid[1], Opaque):
                    return pid[1]  # the module's class: its objects become placeholders
                return None  # the class itself is a global the scanner already recorded
            if pid[0] == "module" and len(pid) > 1 and isinstance(pid[1], Opaque):
                raise PickleVMError(f"refusing global '{pid[1].ref.qualname}': a whole-module "
                                    "pickle (torch.save(model)) names its class; "
                                    "convert(strict=False) / --skip-objects keeps its parameters "
                                    "and buffers", offset, source)
            if pid[0] != "storage" or len(pid) != 6:
                raise PickleVMError(f"unexpected persistent id {short_repr(pid)} (whole-module "
                                    "pickles are not weights)", offset, source)
            ref = self._storage(source, pid[1], pid[2], pid[3], pid[4], offset)
            view = pid[5]
            if view is not None:
                if (not isinstance(view, tuple) or len(view) != 3
                        or any(type(v) is not int for v in view[1:])):
                    raise PickleVMError(f"bad storage view {short_repr(view)}", offset, source)
                ref.base = view[1] * ref.dtype.itemsize
                ref.numel = view[2]
            views.append((ref, offset))
            return ref

        m = self.machine(self.map, strict=strict, source=source, start=pos, persistent=persistent)
        value = m.run()
        traces.append(("main pickle", m.trace))
        m2 = self.machine(self.map, strict=True, source=f"{self.path} (storage keys)",
                          start=m.trace.end)
        keys = m2.run()
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ContainerError(self.path, "legacy storage key list is not a list of strings")
        pos = m2.trace.end
        for key in keys:
            if key in self.records:
                raise ContainerError(self.path, f"storage key {key!r} listed twice")
            count = int.from_bytes(self.pread(pos, 8), "little", signed=True)
            elem = next((r.dtype.itemsize for r in self.storages if r.key == key), 1)
            nbytes = count * elem
            if count < 0 or pos + 8 + nbytes > self.size:
                raise ContainerError(self.path, f"storage {key!r} of {count} elements runs past "
                                     "the end of the file")
            self.records[key] = (pos + 8, nbytes)
            pos += 8 + nbytes
        for ref, offset in views:
            rec = self.records.get(ref.key)
            if rec is None:
                raise PickleVMError(f"storage {ref.key!r} is not in the storage key list", offset,
                                    source)
            if ref.base + ref.nbytes > rec[1]:
                raise PickleVMError(f"storage {ref.key!r} view needs {ref.base + ref.nbytes} "
                                    f"bytes, the file holds {rec[1]}", offset, source)
        if pos != self.size:
            self.problem(f"{self.size - pos} unexpected bytes after the last storage", strict)
        return Loaded(value, traces, list(self.findings))


# --------------------------------------------------------------------------- bare pickle

class PickleContainer(Container):
    """A bare pickle file (no storages): plain data and numpy arrays only.

    Example:
        >>> import pickle, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "d.pkl")
        >>> _ = open(p, "wb").write(pickle.dumps({"a": 1}))
        >>> with PickleContainer(p) as c:
        ...     c.load().value
        {'a': 1}
    """

    kind = "pickle"

    def load(self, strict: bool = True) -> Loaded:
        """Run the bare pickle through our machine. Example: see class."""
        with open(self.path, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if self.size else b""
        try:
            m = self.machine(data, strict=strict, source=self.path)
            value = m.run()
            if m.trace.end != self.size:
                self.problem(f"{self.size - m.trace.end} bytes after STOP", strict)
        finally:
            if isinstance(data, mmap.mmap):
                data.close()
        return Loaded(value, [("pickle", m.trace)], list(self.findings))


# --------------------------------------------------------------------------- legacy tar

class TarContainer(_RawRecords):
    """The oldest torch format: a tar of ``sys_info``, ``storages``, ``tensors``, ``pickle``.

    Example: ``TarContainer('old.pt').load().value`` -> the checkpoint with :class:`TensorRef`s.
    """

    kind = "tar"

    def __init__(self, path: str, limits: Limits | None = None) -> None:
        super().__init__(path, limits)
        try:
            with tarfile.open(path, mode="r:") as tar:
                self.entries = {t.name: (t.offset_data, t.size) for t in tar.getmembers()
                                if t.isfile()}
        except (tarfile.TarError, OSError) as exc:
            self.close()
            raise ContainerError(path, f"not a readable tar archive: {exc}") from None
        for need in ("storages", "tensors", "pickle"):
            if need not in self.entries:
                self.close()
                raise ContainerError(path, f"legacy tar checkpoint without a {need!r} member")

    def _member(self, name: str) -> tuple[bytes, int]:
        offset, size = self.entries[name]
        return self.pread(offset, size), offset

    def load(self, strict: bool = True) -> Loaded:
        """Run the tar's pickles and index its raw storages. Example: see class."""
        try:
            return self._load(strict)
        except (struct.error, KeyError, TypeError, ValueError, IndexError) as exc:
            if isinstance(exc, PickleVMError | ContainerError):
                raise
            raise ContainerError(self.path, f"malformed legacy tar checkpoint: {exc!r}") from None

    def _load(self, strict: bool) -> Loaded:
        traces: list[tuple[str, Trace]] = []
        objects: dict[str, Any] = {}
        data, base = self._member("storages")

        def run(start: int, what: str, blob: bytes) -> tuple[Any, int]:
            m = self.machine(blob, strict=strict, source=f"{self.path}!{what}", start=start)
            value = m.run()
            traces.append((what, m.trace))
            return value, m.trace.end

        count, pos = run(0, "storages", data)
        if type(count) is not int or count < 0:
            raise ContainerError(self.path, "storages member does not start with a count")
        for _ in range(count):
            args, pos = run(pos, "storages", data)
            if not isinstance(args, tuple) or len(args) != 3 or not isinstance(args[2], StorageType):
                raise ContainerError(self.path, f"bad storage header {short_repr(args)}")
            key, location, stype = args
            numel = int.from_bytes(data[pos:pos + 8], "little", signed=True)
            nbytes = numel * stype.dtype.itemsize
            if numel < 0 or pos + 8 + nbytes > len(data):
                raise ContainerError(self.path, f"storage {key!r} runs past its member")
            ref = StorageRef(str(key), stype.dtype, numel, str(location), self)
            self.records[ref.key] = (base + pos + 8, nbytes)
            objects[ref.key] = ref
            pos += 8 + nbytes
        views, pos = run(pos, "storages", data)
        for view in views if isinstance(views, list) else []:
            target, root, offset, numel = view
            root_ref = objects[str(root)]
            objects[str(target)] = StorageRef(root_ref.key, root_ref.dtype, numel, root_ref.location,
                                              self, root_ref.base + offset * root_ref.dtype.itemsize)
        data, base = self._member("tensors")
        count, pos = run(0, "tensors", data)
        for _ in range(count if type(count) is int else 0):
            args, pos = run(pos, "tensors", data)
            key, storage_id = args[0], args[1]
            (ndim,) = struct.unpack_from("<i", data, pos)
            pos += 8
            shape = struct.unpack_from(f"<{ndim}q", data, pos)
            stride = struct.unpack_from(f"<{ndim}q", data, pos + 8 * ndim)
            (offset,) = struct.unpack_from("<q", data, pos + 16 * ndim)
            pos += 16 * ndim + 8
            storage = objects[str(storage_id)]
            objects[str(key)] = make_tensor(storage, offset, shape, stride, None)
        main, _ = self._member("pickle")

        def persistent(pid: Any, offset: int) -> Any:
            if isinstance(pid, str | int) and str(pid) in objects:
                return objects[str(pid)]
            raise PickleVMError(f"unexpected persistent id {short_repr(pid)}", offset,
                                f"{self.path}!pickle")

        m = self.machine(main, strict=strict, source=f"{self.path}!pickle", persistent=persistent)
        value = m.run()
        traces.append(("pickle", m.trace))
        return Loaded(value, traces, list(self.findings))


def open_container(path: str | os.PathLike[str], limits: Limits | None = None, *,
                   lenient: bool = False) -> Container:
    """Open a checkpoint by sniffing its bytes (not its name).

    Example:
        >>> import torch, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "m.bin"); torch.save({}, p)
        >>> open_container(p).kind
        'zip'
    """
    path = os.fspath(path)
    kind = sniff(path)
    if kind in ("zip", "npy"):
        from torchship.weights.pickle.numpy_files import NumpyFileContainer, is_npz

        if kind == "npy" or is_npz(path):
            return NumpyFileContainer(path, limits)
        from torchship.weights.pickle.zipcontainer import ZipContainer

        return ZipContainer(path, limits, lenient=lenient)
    if kind == "tar":
        return TarContainer(path, limits)
    if kind == "pickle":
        if LegacyContainer.looks_legacy(path):
            return LegacyContainer(path, limits)
        return PickleContainer(path, limits)
    raise ContainerError(path, f"not a pickle checkpoint (looks like: {kind}); expected a torch "
                         "zip archive, a legacy torch file, a pickle stream or a numpy .npz/.npy")


__all__ = ["ContainerError", "Loaded", "open_container", "sniff",
           "LegacyContainer", "PickleContainer", "TarContainer", "TensorRef"]
