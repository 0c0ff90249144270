"""Scan checkpoints and say plainly what loading them would run — without running anything.

Every pickle stream in a file (a torch zip's ``data.pkl`` and any other member that is a
pickle, every stream of a legacy file, a bare pickle and whatever follows its STOP, the object
array of a ``.npy``) goes through our pickle machine in observe mode: each global it names is
classified by the allowlist policy (safe / suspicious / dangerous) and each place where real
unpickling would call something is listed. A stream that breaks is reported, and the rest of it
is still decoded (without executing) for globals. Container tricks (conflicting zip names,
mismatched local headers, encryption flags, bytes after STOP) make a file at least suspicious.

Example:
    >>> import torch, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "m.pt"); torch.save({"w": torch.ones(2)}, p)
    >>> scan([p])[0].verdict
    'safe'
"""

from __future__ import annotations

import ast
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchship.weights.pickle.allowlist import classify, resolve
from torchship.weights.pickle.containers import (
    Container,
    ContainerError,
    LegacyContainer,
    TarContainer,
    sniff,
)
from torchship.weights.pickle.vm import (
    Limits,
    Machine,
    PickleVMError,
    Trace,
    scan_globals_static,
)
from torchship.weights.pickle.zipcontainer import ZipContainer

RANK = {"safe": 0, "suspicious": 1, "dangerous": 2}
MODEL_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".npy", ".npz",
                  ".safetensors", ".joblib", ".dat", ".data", ".model", ".mar", ".pb", ".tar")


@dataclass
class GlobalFinding:
    """One global a file references: verdict and why, where first seen, how often.

    Example:
        >>> GlobalFinding("os", "system", "dangerous", "runs", "data.pkl", 3).qualname
        'os.system'
    """

    module: str
    name: str
    verdict: str
    reason: str
    where: str
    offset: int
    count: int = 1

    @property
    def qualname(self) -> str:
        """Dotted name. Example: see class."""
        return f"{self.module}.{self.name}"


@dataclass
class ScanReport:
    """The verdict for one file.

    Example:
        >>> ScanReport("x.pt", "zip").verdict
        'safe'
    """

    path: str
    format: str
    verdict: str = "safe"
    globals: list[GlobalFinding] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def raise_to(self, verdict: str) -> None:
        """Raise the verdict to at least ``verdict``. Example: ``r.raise_to('suspicious')``."""
        if RANK[verdict] > RANK[self.verdict]:
            self.verdict = verdict

    def to_json(self) -> dict[str, Any]:
        """JSON-able form. Example: ``ScanReport('a', 'zip').to_json()['verdict'] == 'safe'``."""
        return {
            "path": self.path, "format": self.format, "verdict": self.verdict,
            "globals": [{"global": g.qualname, "verdict": g.verdict, "why": g.reason,
                         "where": g.where, "offset": g.offset, "count": g.count}
                        for g in self.globals],
            "calls": self.calls, "problems": self.problems,
        }


class _Collector:
    def __init__(self, report: ScanReport) -> None:
        self.report = report
        self.by_name: dict[tuple[str, str], GlobalFinding] = {}

    def add_global(self, module: str, name: str, where: str, offset: int) -> None:
        key = (module, name)
        if key in self.by_name:
            self.by_name[key].count += 1
            return
        verdict, reason = classify(module, name)
        finding = GlobalFinding(module, name, verdict, reason, where, offset)
        self.by_name[key] = finding
        self.report.globals.append(finding)
        self.report.raise_to(verdict)

    def add_trace(self, where: str, trace: Trace) -> None:
        for ref, _allowed in trace.globals:
            self.add_global(ref.module, ref.name, where, ref.offset)
        for event in trace.events:
            self.report.calls.append(f"{where} @{event.offset} {event.opcode}: {event.description}")
            if event.action == "persistent":
                self.report.raise_to("suspicious")
            elif event.qualname.split(".")[0] != "<persistent>":
                module, _, name = event.qualname.rpartition(".")
                self.report.raise_to(classify(module, name)[0] if module else "suspicious")

    def problem(self, message: str) -> None:
        self.report.problems.append(message)
        self.report.raise_to("suspicious")

    def static_rest(self, where: str, data: Any, pos: int) -> None:
        refs, _, _ = scan_globals_static(data, pos, where)
        for ref in refs:
            self.add_global(ref.module, ref.name, where, ref.offset)


def _scan_stream(col: _Collector, data: Any, where: str, limits: Limits, start: int = 0) -> int:
    """Observe-mode run of one stream (and any that follow it in ``data``); returns end."""
    pos = start
    first = True
    while pos < len(data):
        m = Machine(data, resolve=resolve, strict=False, limits=limits, source=where, start=pos)
        label = where if first else f"{where} (stream at byte {pos})"
        try:
            m.run()
        except PickleVMError as exc:
            col.add_trace(label, m.trace)
            col.problem(f"{label}: {exc.detail} (at byte {exc.offset})")
            col.static_rest(label, data, m.decoder.pos)
            return len(data)
        col.add_trace(label, m.trace)
        if not first:
            col.problem(f"{where}: a second pickle stream starts at byte {pos} (hidden after STOP)")
        pos = m.trace.end
        first = False
    return pos


def _scan_container(col: _Collector, container: Container, limits: Limits) -> None:
    try:
        loaded = container.load(strict=False)
        for problem in loaded.findings:
            col.problem(problem)
    except (PickleVMError, ContainerError) as exc:
        col.problem(str(exc))
        if container.machines:
            last = container.machines[-1]
            col.static_rest(last.source, last.decoder.data, last.decoder.pos)
    for m in container.machines:
        col.add_trace(m.source, m.trace)


def _scan_zip(col: _Collector, path: str, limits: Limits) -> None:
    with ZipContainer(path, limits, lenient=True) as z:
        for finding in z.findings:
            col.problem(finding)
        names = list(z.members)
        if names and all(n.endswith(".npy") for n in names):
            col.report.format = "npz"
            for m in z.members.values():
                _scan_npy_bytes(col, z.member_bytes(m, limit=1 << 40), f"{path}!{m.name}", limits)
            return
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            col.problem("TorchScript archive: holds a program (code/), not only weights")
        main = f"{z.root}/data.pkl"
        if main in z.members:
            _scan_container(col, z, limits)
        else:
            col.problem(f"no {main}: not a torch.save archive")
        for m in z.pickle_members():
            if m is z.members.get(main):
                continue
            try:
                data = z.member_bytes(m)
            except ContainerError as exc:
                col.problem(str(exc))
                continue
            _scan_stream(col, data, f"{path}!{m.name}", limits)


def _scan_npy_bytes(col: _Collector, data: bytes, where: str, limits: Limits) -> None:
    if data[:6] != b"\x93NUMPY" or len(data) < 10:
        col.problem(f"{where}: not a .npy array")
        return
    major = data[6]
    if major == 1:
        hlen, start = int.from_bytes(data[8:10], "little"), 10
    else:
        hlen, start = int.from_bytes(data[8:12], "little"), 12
    try:
        header = ast.literal_eval(data[start:start + hlen].decode("latin-1").strip())
        descr = header["descr"]
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError):
        col.problem(f"{where}: unreadable .npy header")
        return
    if "O" in str(descr):
        col.problem(f"{where}: object array (dtype {descr!r}): its data is a pickle")
        _scan_stream(col, data, where, limits, start + hlen)


def scan_file(path: str | os.PathLike[str], limits: Limits | None = None) -> ScanReport:
    """Scan one file and return its report (never raises on bad content).

    Example:
        >>> import pickle, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x.pkl")
        >>> _ = open(p, "wb").write(pickle.dumps([1]))
        >>> scan_file(p).verdict
        'safe'
    """
    path = os.fspath(path)
    limits = limits or Limits()
    try:
        kind = sniff(path)
    except OSError as exc:
        report = ScanReport(path, "unreadable")
        _Collector(report).problem(f"cannot read: {exc}")
        return report
    report = ScanReport(path, kind)
    col = _Collector(report)
    try:
        if kind == "zip":
            _scan_zip(col, path, limits)
        elif kind == "tar":
            with TarContainer(path, limits) as t:
                _scan_container(col, t, limits)
        elif kind == "pickle":
            if LegacyContainer.looks_legacy(path):
                report.format = "legacy"
                with LegacyContainer(path, limits) as c:
                    _scan_container(col, c, limits)
            else:
                with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                    _scan_stream(col, data, path, limits)
        elif kind == "npy":
            _scan_npy_bytes(col, Path(path).read_bytes(), path, limits)
        elif kind == "safetensors":
            from torchship.weights.format import SafetensorError, parse_header
            from torchship.weights.reader import blob_offset

            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                try:
                    parse_header(data, name=path, base=blob_offset(data, name=path))
                except SafetensorError as exc:
                    col.problem(str(exc))
        else:
            col.problem("unrecognised format: not a pickle, torch zip/tar, .npy or safetensors file")
    except (ContainerError, PickleVMError, OSError, ValueError) as exc:
        col.problem(str(exc))
    return report


def _expand(paths: list[str | os.PathLike[str]]) -> list[str]:
    files: list[str] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for child in sorted(p.rglob("*")):
                if child.is_file() and (child.suffix.lower() in MODEL_SUFFIXES
                                        or _sniffable(child)):
                    files.append(str(child))
        else:
            files.append(str(p))
    return files


def _sniffable(path: Path) -> bool:
    """A file without a model suffix is scanned when its bytes say pickle (protocol 2+) or
    .npy; protocol-0 look-alikes (text starting with 'L', 'N', ...) are left out."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return (head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5) or head[:6] == b"\x93NUMPY"


def scan(paths: list[str | os.PathLike[str]] | str | os.PathLike[str],
         limits: Limits | None = None) -> list[ScanReport]:
    """Scan files and directories (recursively: model files by suffix or by content).

    Example:
        >>> scan(["checkpoints/"])  # doctest: +SKIP
        [ScanReport(path='checkpoints/model.pt', format='zip', verdict='safe', ...)]
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    return [scan_file(f, limits) for f in _expand(list(paths))]
