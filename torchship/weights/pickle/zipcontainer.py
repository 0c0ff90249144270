"""The ``torch.save`` zip container: member checks, ``data.pkl`` through our pickle machine,
storage records read as zero-copy views (stored) or inflated one at a time (deflated).

Example:
    >>> import torch, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "m.pt"); torch.save({"w": torch.ones(2)}, p)
    >>> with ZipContainer(p) as c:
    ...     c.load().value["w"].shape
    (2,)
"""

from __future__ import annotations

import os
import posixpath
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any

from torchship.weights.pickle.allowlist import StorageRef, TensorRef
from torchship.weights.pickle.containers import (
    MAX_PICKLE_BYTES,
    Container,
    ContainerError,
    Loaded,
)
from torchship.weights.pickle.decoder import Limits, PickleVMError
from torchship.weights.pickle.values import short_repr

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_ALLOWED_FLAGS = 0x0008 | 0x0800 | 0x0002 | 0x0004  # data descriptor, utf-8, deflate levels


@dataclass
class Member:
    """One zip member as the central directory and its local header describe it.

    Example:
        >>> Member("a/data.pkl", 0, 0, 0, 0, 0, 0).name
        'a/data.pkl'
    """

    name: str
    method: int
    flags: int
    header_offset: int
    compress_size: int
    file_size: int
    crc: int = 0
    data_offset: int = -1


class ZipContainer(Container):
    """A ``torch.save`` zip archive: ``<root>/data.pkl``, ``<root>/data/<key>``, ``byteorder``.

    Example:
        >>> import torch, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "m.pt"); torch.save([torch.arange(3)], p)
        >>> with ZipContainer(p) as c:
        ...     t = c.load().value[0]
        ...     bytes(c.read(t.storage, 0, 8))
        b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00'
    """

    kind = "zip"

    def __init__(self, path: str, limits: Limits | None = None, *, lenient: bool = False) -> None:
        super().__init__(path, limits)
        self.lenient = lenient  # scanner: record problems as findings and keep reading
        self._inflated: tuple[str, bytes] | None = None
        try:
            with open(path, "rb") as f:
                infos = zipfile.ZipFile(f).infolist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
                struct.error, KeyError, IndexError, OverflowError) as exc:
            self.close()
            raise ContainerError(path, f"not a readable zip archive: {exc}") from None
        self.members: dict[str, Member] = {}
        self.entries: list[Member] = []  # every central-directory entry, duplicates included
        seen: dict[str, str] = {}
        for info in infos:
            name = info.filename
            norm = posixpath.normpath(name.replace("\\", "/")).lower()
            if name in self.members or norm in seen:
                other = seen.get(norm, name)
                self._problem(f"zip members {other!r} and {name!r} conflict (same name after "
                              "normalisation): a loader could pick either")
            seen[norm] = name
            if name.startswith("/") or ".." in name.split("/") or "\\" in name:
                self._problem(f"zip member name {name!r} is not a plain relative path")
            member = Member(name, info.compress_type, info.flag_bits, info.header_offset,
                            info.compress_size, info.file_size, info.CRC)
            self._check_member(member)
            self.members.setdefault(name, member)
            self.entries.append(member)
        names = list(self.members)
        roots = {n.split("/", 1)[0] for n in names if "/" in n}
        if not names:
            self._problem("empty zip archive")
        self.root = names[0].split("/", 1)[0] if names else ""
        if len(roots) > 1:
            self._problem(f"zip archive has {len(roots)} root folders ({', '.join(sorted(roots)[:4])}); "
                          "torch archives have exactly one")
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names) and not lenient:
            self.close()
            raise ContainerError(path, "this is a TorchScript archive (torch.jit.save: "
                                 "constants.pkl / code/): it holds a program, not just weights, "
                                 "and is refused. In a trusted environment, m = torch.jit.load"
                                 "(path); torch.save(m.state_dict(), 'weights.pt') writes a file "
                                 "to convert")
        bo = self.members.get(f"{self.root}/byteorder")
        if bo is not None:
            order = self.member_bytes(bo).decode("ascii", "replace")
            if order not in ("little", "big"):
                self._problem(f"byteorder record says {order!r}, expected 'little' or 'big'")
            else:
                self.byteorder = order

    def _problem(self, message: str) -> None:
        if self.lenient:
            self.findings.append(message)
            return
        self.close()
        raise ContainerError(self.path, message)

    def _check_member(self, m: Member) -> None:
        if m.flags & 0x0001 or m.flags & 0x0040:
            self._problem(f"zip member {m.name!r} is flagged encrypted (flags 0x{m.flags:04x})")
        elif m.flags & ~_ALLOWED_FLAGS:
            self._problem(f"zip member {m.name!r} has unexpected flag bits 0x{m.flags:04x}")
        if m.method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            self._problem(f"zip member {m.name!r} uses compression method {m.method}; only stored "
                          "and deflated are accepted")
        if m.method == zipfile.ZIP_STORED and m.compress_size != m.file_size:
            self._problem(f"stored zip member {m.name!r} has compressed size {m.compress_size} "
                          f"!= size {m.file_size}")
        if not 0 <= m.header_offset < self.size:
            self._problem(f"zip member {m.name!r}: header offset {m.header_offset} is outside the file")
            return
        head = os.pread(self.fd, _LOCAL.size, m.header_offset)
        if len(head) < _LOCAL.size or head[:4] != b"PK\x03\x04":
            self._problem(f"zip member {m.name!r}: no local header at byte {m.header_offset}")
            return
        fields = _LOCAL.unpack(head)
        name_len, extra_len = fields[9], fields[10]
        raw_name = os.pread(self.fd, name_len, m.header_offset + _LOCAL.size)
        local_name = raw_name.decode("utf-8" if fields[2] & 0x800 else "cp437", "replace")
        if local_name != m.name:
            self._problem(f"zip member {m.name!r}: local header names it {local_name!r}")
        if fields[3] != m.method:
            self._problem(f"zip member {m.name!r}: local header says compression {fields[3]}, "
                          f"central directory says {m.method}")
        if fields[2] & 0x0001:
            self._problem(f"zip member {m.name!r}: local header flagged encrypted")
        m.data_offset = m.header_offset + _LOCAL.size + name_len + extra_len
        if m.data_offset + m.compress_size > self.size:
            self._problem(f"zip member {m.name!r} runs past the end of the file")

    def member_bytes(self, m: Member, limit: int = MAX_PICKLE_BYTES) -> bytes:
        """The whole (inflated) content of one member, bounded by ``limit`` bytes.

        Example: ``c.member_bytes(c.members['archive/byteorder'])`` -> ``b'little'``."""
        if m.file_size > limit:
            raise ContainerError(self.path, f"zip member {m.name!r} is {m.file_size} bytes, over "
                                 f"the {limit}-byte limit")
        raw = self.pread(m.data_offset, m.compress_size)
        if m.method == zipfile.ZIP_STORED:
            data = raw
        else:
            inflater = zlib.decompressobj(-15)
            try:
                data = inflater.decompress(raw, m.file_size + 1)
            except zlib.error as exc:
                raise ContainerError(self.path, f"zip member {m.name!r}: bad deflate data: {exc}") from None
        if len(data) != m.file_size:
            raise ContainerError(self.path, f"zip member {m.name!r} inflates to {len(data)} bytes, "
                                 f"the directory says {m.file_size}")
        if zlib.crc32(data) != m.crc:
            raise ContainerError(self.path, f"zip member {m.name!r}: CRC mismatch (corrupted)")
        return data

    def pickle_members(self) -> list[Member]:
        """Members that hold pickles: ``*.pkl`` plus any non-storage member starting like one.

        Example: ``[m.name for m in c.pickle_members()]`` -> ``['archive/data.pkl']``."""
        out = []
        for m in self.entries:
            if m.name.endswith(".pkl"):
                out.append(m)
            elif "/data/" not in m.name and m.file_size >= 2:
                head = self.member_bytes(m)[:2] if m.method else self.pread(m.data_offset, 2)
                if head[:1] == b"\x80" and head[1] <= 5:
                    out.append(m)
        return out

    def load(self, strict: bool = True) -> Loaded:
        """Run ``<root>/data.pkl`` with storages resolved to zip records. Example: see class."""
        main = self.members.get(f"{self.root}/data.pkl")
        if main is None:
            if f"{self.root}/archive_format" in self.members:
                raise ContainerError(self.path, "a torch.export archive (.pt2), not a torch.save "
                                     "checkpoint: read it with torch.export.load")
            raise ContainerError(self.path, f"zip archive has no {self.root}/data.pkl; not a "
                                 "torch.save checkpoint")
        source = f"{self.path}!{main.name}"
        if strict:
            extra = [m.name for m in self.pickle_members() if m is not main]
            if extra:
                raise ContainerError(self.path, f"zip member {extra[0]!r} is another pickle "
                                     "stream; torch checkpoints have only data.pkl")

        def persistent(pid: Any, offset: int) -> StorageRef:
            if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage":
                raise PickleVMError(f"unexpected persistent id {short_repr(pid)}", offset, source)
            ref = self._storage(source, pid[1], pid[2], pid[3], pid[4], offset)
            member = self.members.get(f"{self.root}/data/{ref.key}")
            if member is None:
                raise PickleVMError(f"storage {ref.key!r} has no record data/{ref.key}", offset,
                                    source)
            if member.file_size != ref.nbytes:
                raise PickleVMError(f"storage {ref.key!r} needs {ref.nbytes} bytes, its record "
                                    f"holds {member.file_size}", offset, source)
            return ref

        m = self.machine(self.member_bytes(main), strict=strict, source=source,
                         persistent=persistent)
        value = m.run()
        if m.trace.end != main.file_size:
            self.problem(f"{main.name} has {main.file_size - m.trace.end} bytes after STOP", strict)
        return Loaded(value, [(main.name, m.trace)], list(self.findings))

    def record_crc(self, tensor: Any) -> int | None:
        """The zip's CRC-32 when ``tensor`` is exactly one whole stored record. Example: see class."""
        if not isinstance(tensor, TensorRef) or self.byteorder != "little":
            return None
        m = self.members.get(f"{self.root}/data/{tensor.storage.key}")
        whole = (tensor.storage.base == 0 and tensor.offset == 0 and tensor.is_contiguous()
                 and tensor.numel * tensor.dtype.itemsize == m.file_size) if m else False
        return m.crc if whole else None

    def read(self, storage: StorageRef, start: int, length: int) -> Any:
        """Storage bytes from its zip record (a file view when stored). Example: see class."""
        m = self.members[f"{self.root}/data/{storage.key}"]
        start += storage.base
        if start < 0 or start + length > m.file_size:
            raise ContainerError(self.path, f"read of {length} bytes at {start} outside record "
                                 f"{m.name} ({m.file_size} bytes)")
        if m.method == zipfile.ZIP_STORED:
            return self.file_range(m.data_offset + start, length)
        if self._inflated is None or self._inflated[0] != m.name:
            self._inflated = None
            self._inflated = (m.name, self.member_bytes(m, limit=1 << 62))
        return self._inflated[1][start:start + length]
