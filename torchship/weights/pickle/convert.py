"""Convert pickle checkpoints to safetensors without executing them, and verify the result.

One file: container -> our pickle machine in strict allowlist mode -> flatten -> dedupe tied
weights -> the ordinary streaming writer (each tensor read from the checkpoint only when the
writer reaches it) -> read the result back and compare every tensor's CRC-32 with what was
written. A directory of shards (``pytorch_model-0000k-of-0000n.bin`` + its index) becomes
``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json``, one shard at a time.

Example:
    >>> import torch, tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "m.pt")
    >>> torch.save({"w": torch.ones(2, 3)}, p)
    >>> report = convert(p)
    >>> report.outputs[0].endswith("m.safetensors"), report.tensors
    (True, 1)
"""

from __future__ import annotations

import mmap
import os
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchship.weights import shards
from torchship.weights.format import SafetensorError, parse_header, tensor_nbytes
from torchship.weights.pickle.containers import ContainerError, open_container
from torchship.weights.pickle.rebuild import (
    RebuildError,
    dedupe,
    flatten,
    lazy_bytes,
    safetensors_dtype,
    safetensors_shape,
)
from torchship.weights.pickle.vm import PickleVMError
from torchship.weights.writer import Entry, save_entries

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class ConvertError(ValueError):
    """Conversion refused or failed; the message names the file and the reason.

    Example:
        >>> str(ConvertError("m.pt: bad"))
        'm.pt: bad'
    """


@dataclass
class ConvertReport:
    """What a conversion did.

    Example:
        >>> ConvertReport("a.pt").tensors
        0
    """

    source: str
    outputs: list[str] = field(default_factory=list)
    container: str = ""
    tensors: int = 0
    nbytes: int = 0
    tied: dict[str, str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    objects: dict[str, str] = field(default_factory=dict)  # path -> class, kept unbuilt (strict=False)
    views_copied: int = 0
    verified: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict. Example: ``ConvertReport('a').to_json()['source'] == 'a'``."""
        return dict(self.__dict__)


ProgressFn = Callable[[str, int, int], None]


def _entries_for(path: str, report: ConvertReport, crcs: dict[str, int], recorded: set[str],
                 progress: ProgressFn | None, strict: bool) -> tuple[Any, dict[str, Entry], dict[str, str]]:
    container = open_container(path)
    container.skip_objects = not strict
    report.container = container.kind
    try:
        return container, *_plan(container, report, crcs, recorded, progress)
    except BaseException:
        container.close()
        raise


def _plan(container: Any, report: ConvertReport, crcs: dict[str, int], recorded: set[str],
          progress: ProgressFn | None) -> tuple[dict[str, Entry], dict[str, str]]:
    """Entries (read lazily) and metadata; ``crcs`` gets each tensor's CRC-32 (``recorded``:
    the names whose CRC is the one the checkpoint's zip stored, known before reading)."""
    flat = flatten(container.load(strict=True).value)
    if not flat.tensors and flat.objects:
        raise ConvertError(f"{container.path}: no tensors to convert: it holds "
                           f"{_objects(flat.objects)} and plain values (settings, not weights); "
                           "nothing written")
    kept, tied = dedupe(flat.tensors)
    total = len(kept)
    entries: dict[str, Entry] = {}
    done = [0]
    for name, t in kept.items():
        dtype = safetensors_dtype(name, t)
        known = container.record_crc(t)  # the zip's own CRC when the tensor is a whole record
        if known is not None:
            crcs[name] = known
            recorded.add(name)

        def on_read(data: Any, name: str = name, known: int | None = known) -> None:
            if known is None:
                crcs[name] = zlib.crc32(memoryview(data).cast("B"))
            done[0] += 1
            if progress is not None:
                progress(name, done[0], total)

        entries[name] = Entry(dtype, safetensors_shape(name, t, dtype), lazy_bytes(t, on_read))
        if hasattr(t, "is_contiguous") and not t.is_contiguous():
            report.views_copied += 1
    if "format" in flat.values:  # the safetensors format tag wins; loaders check it
        flat.dropped["format"] = f"name reserved for the format tag (value {flat.values.pop('format')})"
    metadata = {"format": "pt"}
    metadata.update(flat.values)
    metadata.update(tied)
    report.tied.update(tied)
    report.values.update(flat.values)
    report.dropped.update(flat.dropped)
    report.objects.update(flat.objects)
    report.tensors += len(entries)
    return entries, metadata


def verify_file(path: str, expected: dict[str, Entry], crcs: dict[str, int],
                from_source: set[str] | frozenset[str] = frozenset()) -> int:
    """Read a written file back: header valid, same names/dtypes/shapes, same CRC-32 per tensor
    (for a tensor that was a whole stored zip record, the CRC the checkpoint itself recorded).
    Returns the data bytes checked. Tensors are checked by a few threads, in 32 MiB steps whose
    pages are dropped from resident memory right after, so verifying never holds the output.

    Example: ``verify_file('m.safetensors', entries, crcs)`` -> total bytes verified.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        header = parse_header(mapped, name=path)
        if set(header.tensors) != set(expected):
            raise ConvertError(f"{path}: read back {len(header.tensors)} tensors, wrote "
                               f"{len(expected)}")
        for name, info in header.tensors.items():
            entry = expected[name]
            if info.dtype != entry.dtype or tuple(info.shape) != tuple(entry.shape):
                raise ConvertError(f"{path}: tensor {name!r} reads back as "
                                   f"{info.dtype}{list(info.shape)}")
        workers = max(1, min(4, os.cpu_count() or 1))
        largest = max((i.end - i.start for i in header.tensors.values()), default=0)
        # resident pages while checking stay under one copy of the largest tensor
        step = max(1 << 20, min(VERIFY_CHUNK, largest // workers))
        with memoryview(mapped) as view:

            def check(item: tuple[str, Any]) -> int:
                name, info = item
                start = header.data_start + info.start
                stop = header.data_start + info.end
                crc = 0
                for lo in range(start, stop, step):
                    hi = min(lo + step, stop)
                    with view[lo:hi] as chunk:
                        crc = zlib.crc32(chunk, crc)  # releases the GIL: threads run in parallel
                    _drop(mapped, lo, hi)
                if crc != crcs.get(name) and name in from_source:
                    raise ConvertError(f"tensor {name!r}: its bytes do not match the CRC-32 the "
                                       "checkpoint recorded for its storage record (corrupted "
                                       "checkpoint?)")
                if crc != crcs.get(name):
                    raise ConvertError(f"{path}: tensor {name!r} reads back different bytes "
                                       "(CRC-32 mismatch)")
                return info.end - info.start

            items = sorted(header.tensors.items(), key=lambda kv: kv[1].start - kv[1].end)
            with ThreadPoolExecutor(workers) as pool:
                return sum(pool.map(check, items))


VERIFY_CHUNK = 32 << 20
"""Bytes checked per step; each step's pages leave resident memory right after."""


def _drop(mapped: mmap.mmap, start: int, stop: int) -> None:
    page = mmap.PAGESIZE
    lo, hi = -(-start // page) * page, stop // page * page
    if hi > lo and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def _convert_one(path: str, out: str, verify: bool, progress: ProgressFn | None,
                 report: ConvertReport, strict: bool) -> dict[str, Entry]:
    crcs: dict[str, int] = {}
    recorded: set[str] = set()
    container, entries, metadata = _entries_for(path, report, crcs, recorded, progress, strict)
    try:
        save_entries(entries, out, metadata)
    finally:
        container.close()
    report.outputs.append(out)
    if verify:
        try:
            report.nbytes += verify_file(out, entries, crcs, from_source=recorded)
        except ConvertError as exc:
            Path(out).unlink(missing_ok=True)  # never leave a file that failed verification
            raise ConvertError(f"{path}: {exc} (output removed)") from None
    else:
        report.nbytes += sum(_nbytes(e) for e in entries.values())
    return entries


def _objects(objects: dict[str, str]) -> str:
    shown = ", ".join(f"an object of class {cls} at {where!r}" for where, cls in list(objects.items())[:3])
    return shown + (f" and {len(objects) - 3} more objects" if len(objects) > 3 else "")


def _lenient_hint(path: str) -> str:
    """After a strict refusal: what ``strict=False`` would do with the file (converting only in
    memory, nothing written), or "" when it would refuse too."""
    try:
        with open_container(path) as container:
            container.skip_objects = True
            flat = flatten(container.load(strict=True).value)
    except (PickleVMError, ContainerError, RebuildError, OSError):
        return ""
    if not flat.tensors:
        return (f"; it holds no tensors at all, only {_objects(flat.objects)} and plain values "
                "(settings, not weights)")
    return (f"; convert(strict=False) (CLI: --skip-objects) converts its {len(flat.tensors)} "
            f"tensor(s) and skips {_objects(flat.objects)}, building nothing")


def _wrap_errors(path: str, fn: Callable[[], Any], strict: bool = True) -> Any:
    try:
        return fn()
    except (PickleVMError, ContainerError, RebuildError, SafetensorError, OSError) as exc:
        text = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
        if strict and isinstance(exc, PickleVMError):
            text += _lenient_hint(path)
        raise ConvertError(text) from None


def _shard_sources(directory: Path) -> tuple[list[Path], Path | None]:
    indexes = sorted(p for p in directory.glob("*.index.json")
                     if not p.name.endswith(".safetensors.index.json"))
    if len(indexes) > 1:
        raise ConvertError(f"{directory}: more than one pickle shard index "
                           f"({', '.join(p.name for p in indexes)})")
    if indexes:
        try:
            mapping = shards.read_index(indexes[0])  # checks names stay in the directory
        except SafetensorError as exc:
            raise ConvertError(str(exc)) from None
        return [directory / n for n in sorted(mapping)], indexes[0]
    files = sorted(p for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    if not files and (directory / ".metadata").is_file() and any(directory.glob("*.distcp")):
        raise ConvertError(f"{directory}: a torch.distributed.checkpoint (DCP) directory; its "
                           ".metadata pickles DCP classes that convert does not build. In a "
                           "trusted environment, torch.distributed.checkpoint.format_utils."
                           "dcp_to_torch_save(directory, 'model.pt') writes one file to convert")
    if not files:
        raise ConvertError(f"{directory}: no pickle checkpoint (.bin/.pt/.pth/.ckpt) or shard index")
    return files, None


def _convert_shards(files: list[Path], out_dir: Path, verify: bool, progress: ProgressFn | None,
                    report: ConvertReport, strict: bool) -> None:
    """Shard by shard; on any failure the shards already written by this call are removed."""
    weight_map: dict[str, str] = {}
    total = 0
    n = len(files)
    try:
        for i, f in enumerate(files):
            name = shards.shard_name(i, n)
            entries = _wrap_errors(str(f), lambda f=f, name=name: _convert_one(
                str(f), str(out_dir / name), verify, progress, report, strict), strict)
            for key in entries:
                if key in weight_map:
                    raise ConvertError(f"{f}: tensor {key!r} also appears in {weight_map[key]}")
                weight_map[key] = name
            total += sum(_nbytes(e) for e in entries.values())
        index = shards.write_index(out_dir, weight_map, total)
        if verify:
            mapping = shards.read_index(index)
            if sum(len(v) for v in mapping.values()) != len(weight_map):
                raise ConvertError(f"{index}: index reads back incomplete")
    except BaseException:
        for written in report.outputs:
            Path(written).unlink(missing_ok=True)
        report.outputs.clear()
        raise
    report.outputs.append(str(index))
    shards.remove_stale(out_dir, [Path(o).name for o in report.outputs])


def convert(path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
            verify: bool = True, progress: ProgressFn | None = None,
            strict: bool = True) -> ConvertReport:
    """Convert a pickle checkpoint (file) or a directory of pickle shards to safetensors.

    ``out`` defaults to the input with a ``.safetensors`` suffix (file) or the input directory
    (shards). Nothing in the checkpoint is executed; a global outside the allowlist stops the
    conversion with :class:`ConvertError` naming it, its offset and the call it would make.
    With ``strict=False`` an object of a class that does not run code on its own (an
    ``argparse.Namespace`` of hyper-parameters, a Lightning ``AttributeDict``, a model class)
    is not refused: it is never built, its dotted path and class go to ``report.dropped``, and
    the parameters and buffers of a pickled ``nn.Module`` are kept under their state_dict
    names. Globals that run code (``os.system``, ``eval``, ...) are refused either way.

    Example:
        >>> convert("pytorch_model.bin")  # doctest: +SKIP
        ConvertReport(source='pytorch_model.bin', outputs=['pytorch_model.safetensors'], ...)
    """
    start = time.perf_counter()
    src = Path(path)
    report = ConvertReport(str(src))
    if src.is_dir():
        files, index = _shard_sources(src)
        out_dir = Path(out) if out is not None else src
        out_dir.mkdir(parents=True, exist_ok=True)
        if len(files) == 1 and index is None:
            target = out_dir / "model.safetensors"
            _wrap_errors(str(files[0]), lambda: _convert_one(str(files[0]), str(target), verify,
                                                              progress, report, strict), strict)
            shards.remove_stale(out_dir, [target.name])
        else:
            _convert_shards(files, out_dir, verify, progress, report, strict)
    else:
        if not src.exists():
            raise ConvertError(f"{src}: no such file or directory")
        if src.suffix == ".safetensors":
            raise ConvertError(f"{src}: already a safetensors file (convert reads pickle "
                               "checkpoints: .bin, .pt, .pth, .ckpt; and numpy .npz/.npy)")
        target = Path(out) if out is not None else src.with_suffix(".safetensors")
        if target.is_dir():  # "-o some_dir/": the file goes inside it
            target = target / src.with_suffix(".safetensors").name
        if target.resolve() == src.resolve():
            raise ConvertError(f"{src}: output would overwrite the input")
        _wrap_errors(str(src), lambda: _convert_one(str(src), str(target), verify, progress,
                                                     report, strict), strict)
    report.verified = verify
    report.seconds = time.perf_counter() - start
    return report


def _nbytes(entry: Entry) -> int:
    return tensor_nbytes(entry.dtype, entry.shape)
