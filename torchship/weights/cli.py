"""``torchship weights inspect|verify`` (plus ``convert``/``scan`` from the pickle helper).

``inspect FILE`` prints every tensor (dtype, shape, bytes, offsets) and the metadata of a
safetensors file, a sharded checkpoint (directory or index) or a torchship program file.
``verify FILE|DIR`` runs the full validation and sets the exit code: 0 valid, 1 invalid.
Neither imports torch.

Example:
    $ torchship weights inspect model.safetensors
    $ torchship weights verify checkpoint_dir/ && echo valid
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from torchship.weights import shards
from torchship.weights.format import Header, SafetensorError, parse_header
from torchship.weights.reader import blob_offset, map_file


def read_header(path: Path) -> Header:
    """Map ``path`` and return its validated header (program files read their weights blob).

    Example:
        >>> read_header(Path("model.safetensors")).tensors  # doctest: +SKIP
    """
    try:
        buf = map_file(path)
    except OSError as exc:
        raise SafetensorError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    try:
        return parse_header(buf, name=str(path), base=blob_offset(buf, name=str(path)))
    except SafetensorError as exc:
        head = bytes(buf[:6])
        if head.startswith(b"\x93NUMPY"):
            kind = "a numpy .npy file"
        elif head.startswith(b"PK\x03\x04") and path.suffix == ".npz":
            kind = "a numpy .npz archive"
        elif head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"):
            kind = "a torch.save/pickle checkpoint"
        else:
            raise
        raise SafetensorError(
            f"{exc} (this looks like {kind}, not safetensors: "
            "check it with `torchship weights scan`, convert it with `torchship weights convert`)"
        ) from None
    finally:
        if hasattr(buf, "close"):
            with contextlib.suppress(BufferError):  # a view still exported: the GC closes it
                buf.close()


def checkpoint_files(path: str | Path) -> tuple[list[Path], dict[str, list[str]] | None]:
    """The files behind ``path`` (a file, an index, a checkpoint directory, or a directory of
    independent ``*.safetensors`` files) and the shard index mapping when there is one.

    Example:
        >>> checkpoint_files("ckpt/")  # doctest: +SKIP
        ([PosixPath('ckpt/model-00001-of-00002.safetensors'), ...], {...})
    """
    p = Path(path)
    if p.is_dir() and not list(p.glob("*.safetensors.index*.json")):
        plain = sorted(p.glob("*.safetensors"))
        if not plain:
            raise SafetensorError(f"{p}: directory holds no .safetensors file{shards.subfolder_hint(p)}")
        return plain, None  # a folder of independent files (or one model.safetensors)
    return shards.resolve(p)


def verify_path(path: str | Path) -> tuple[list[Path], list[str]]:
    """Validate a file, an index, a checkpoint directory, or every ``*.safetensors`` file of a
    directory without an index; return (files checked, problems).

    Example:
        >>> verify_path("missing.safetensors")[1]  # doctest: +SKIP
        ['missing.safetensors: no such file or directory']
    """
    p = Path(path)
    if not p.exists():
        return [], [f"{p}: no such file or directory"]
    try:
        files, mapping = checkpoint_files(p)
    except SafetensorError as exc:
        return [], [str(exc)]
    problems: list[str] = []
    seen: dict[str, Path] = {}
    for file_path in files:
        try:
            header = read_header(file_path)
        except SafetensorError as exc:
            problems.append(str(exc))
            continue
        if mapping is not None:
            try:
                shards.check_shard(file_path, mapping[file_path.name], list(header.tensors))
            except SafetensorError as exc:
                problems.append(str(exc))
        for key in header.tensors if mapping is not None else ():
            if key in seen:
                problems.append(f"{file_path}: tensor {key!r} also appears in {seen[key]}")
            seen[key] = file_path
    return files, problems


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _inspect(args: argparse.Namespace) -> int:
    console = Console()
    p = Path(args.path)
    try:
        files, _ = checkpoint_files(p)
        headers = [(f, read_header(f)) for f in files]
    except SafetensorError as exc:
        console.print(f"[red]invalid:[/] {escape(str(exc))}", soft_wrap=True)
        return 1
    if args.json:
        out: dict[str, Any] = {}
        for f, h in headers:
            out[str(f)] = {
                "metadata": h.metadata,
                "tensors": {k: {"dtype": i.dtype, "shape": list(i.shape), "data_offsets": [i.start, i.end]} for k, i in h.tensors.items()},
            }
        print(json.dumps(out, indent=2))
        return 0
    total_tensors = total_bytes = 0
    for f, h in headers:
        table = Table(title=f"{escape(str(f))}  (header {h.header_len} B, data {_fmt_bytes(h.data_len)}, blob at {h.data_start - 8 - h.header_len})")
        for col, justify in (("tensor", "left"), ("dtype", "left"), ("shape", "left"), ("bytes", "right"), ("offsets", "right")):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        items = sorted(h.tensors.items(), key=lambda kv: (kv[1].start, kv[0]))
        limit = None if args.all else 50
        for key, info in items[:limit]:
            table.add_row(escape(key), info.dtype, str(list(info.shape)), f"{info.nbytes:,}", f"{info.start}..{info.end}")
        if limit is not None and len(items) > limit:
            table.add_row(f"... {len(items) - limit} more (use --all)", "", "", "", "")
        console.print(table)
        if h.metadata:
            meta = Table(title="metadata")
            meta.add_column("key")
            meta.add_column("value")
            for k, v in sorted(h.metadata.items()):
                meta.add_row(escape(k), escape(v if len(v) < 200 else v[:200] + "..."))
            console.print(meta)
        total_tensors += len(h.tensors)
        total_bytes += h.data_len
    console.print(f"{total_tensors} tensors, {_fmt_bytes(total_bytes)} in {len(headers)} file(s)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    console = Console()
    status = 0
    for path in args.paths:
        files, problems = verify_path(path)
        if problems:
            status = 1
            for problem in problems:
                console.print(f"[red]INVALID[/] {escape(problem)}", soft_wrap=True)
        else:
            console.print(f"[green]OK[/] {escape(str(path))} ({len(files)} file(s))", soft_wrap=True)
    return status


def add_commands(subparsers: Any) -> None:
    """Register ``inspect`` and ``verify`` (and the pickle helper's commands when present).

    Example:
        >>> parser = argparse.ArgumentParser(); add_commands(parser.add_subparsers())
    """
    inspect = subparsers.add_parser("inspect", help="list tensors, dtypes, shapes, bytes and metadata")
    inspect.add_argument("path", help="a .safetensors file, a shard index, a checkpoint directory or a program file")
    inspect.add_argument("--json", action="store_true", help="print the headers as JSON")
    inspect.add_argument("--all", action="store_true", help="list every tensor (default: first 50 per file)")
    inspect.set_defaults(func=_inspect)
    verify = subparsers.add_parser("verify", help="fully validate files; exit code 0 = valid, 1 = invalid")
    verify.add_argument("paths", nargs="+", help="files, shard indexes or checkpoint directories")
    verify.set_defaults(func=_verify)
    try:
        from torchship.weights.pickle import cli as pickle_cli
    except ImportError:
        return
    pickle_cli.add_commands(subparsers)
