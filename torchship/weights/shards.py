"""Sharded checkpoints: ``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json``.

The layout is the one transformers reads and writes: each shard is an ordinary safetensors
file, and the index maps every tensor name to its shard's file name, with the total tensor
bytes in ``metadata.total_size``. Writing is framework-neutral (:class:`Entry`); each shard and
then the index are written atomically.

Example:
    >>> import numpy as np, tempfile
    >>> from torchship.weights.writer import Entry
    >>> d = tempfile.mkdtemp()
    >>> names = save_sharded({"a": Entry("U8", (8,), bytes(8)), "b": Entry("U8", (8,), bytes(8))}, d, 8)
    >>> names
    ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torchship.weights.format import (
    SafetensorError,
    SafetensorFileNotFoundError,
    os_error_kind,
    plan_layout,
    tensor_nbytes,
)
from torchship.weights.writer import Entry, atomic_write, save_entries

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str) -> int:
    """Bytes in ``size``: an int, or a string like ``"5GB"``, ``"500MiB"``, ``"1024"``.

    Example:
        >>> parse_size("5GB"), parse_size("2KiB"), parse_size(7)
        (5000000000, 2048, 7)
    """
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(size))
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _UNITS:
            raise SafetensorError(f"shard size {size!r} is not a size like 5GB, 500MiB or 1000000")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise SafetensorError(f"shard size must be positive, got {size!r}")
    return value


def plan_shards(entries: Mapping[str, Entry], max_shard_size: int | str) -> list[list[str]]:
    """Group tensor names into shards of at most ``max_shard_size`` bytes (a bigger tensor gets a
    shard of its own), in the writer's layout order.

    Example:
        >>> plan_shards({"a": Entry("U8", (6,), b""), "b": Entry("U8", (6,), b"")}, 10)
        [['a'], ['b']]
    """
    limit = parse_size(max_shard_size)
    shards: list[list[str]] = []
    used = 0
    for name, info in plan_layout({k: (e.dtype, tuple(e.shape)) for k, e in entries.items()}):
        if not shards or (used + info.nbytes > limit and shards[-1]):
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += info.nbytes
    return shards or [[]]


def shard_name(index: int, count: int, prefix: str = "model") -> str:
    """File name of shard ``index`` (0-based) of ``count``, as transformers names them.

    Example:
        >>> shard_name(0, 3)
        'model-00001-of-00003.safetensors'
    """
    return f"{prefix}-{index + 1:05d}-of-{count:05d}.safetensors"


def write_index(
    directory: str | os.PathLike[str], weight_map: Mapping[str, str], total_size: int, prefix: str = "model"
) -> Path:
    """Write ``<prefix>.safetensors.index.json`` (tensor name -> shard file, total tensor bytes)
    atomically; return its path.

    Example:
        >>> import tempfile
        >>> write_index(tempfile.mkdtemp(), {"a": "model-00001-of-00001.safetensors"}, 8).name
        'model.safetensors.index.json'
    """
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    text = json.dumps(index, indent=2) + "\n"
    path = Path(directory) / f"{prefix}.safetensors.index.json"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def remove_stale(directory: str | os.PathLike[str], keep: list[str], prefix: str = "model") -> list[str]:
    """Delete what an earlier save with ``prefix`` left in ``directory`` and the new one did not
    write (old shards, index or single file), so loading the directory finds only the new
    checkpoint; return the names removed.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> for name in ("model.safetensors", "model.safetensors.index.json", "notes.txt"):
        ...     _ = (d / name).write_bytes(b"")
        >>> remove_stale(d, ["model.safetensors"])
        ['model.safetensors.index.json']
    """
    out = Path(directory)
    pattern = re.compile(re.escape(prefix) + r"(-\d{5}-of-\d{5}\.safetensors|\.safetensors|\.safetensors\.index\.json)")
    removed = []
    for path in sorted(out.iterdir()):
        if pattern.fullmatch(path.name) and path.name not in keep and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def save_sharded(
    entries: Mapping[str, Entry],
    directory: str | os.PathLike[str],
    max_shard_size: int | str = "5GB",
    metadata: Mapping[str, str] | None = None,
    prefix: str = "model",
) -> list[str]:
    """Write ``entries`` into ``directory`` as shards plus an index; return the shard file names.

    When everything fits one shard, a single ``model.safetensors`` is written (no index), as
    transformers does. Shards, index or single file left by an earlier save with the same
    ``prefix`` are removed once the new checkpoint is complete.

    Example:
        >>> save_sharded({}, tempfile.mkdtemp())  # doctest: +SKIP
        ['model.safetensors']
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    groups = plan_shards(entries, max_shard_size)
    if len(groups) == 1:
        names = [f"{prefix}.safetensors"]
        save_entries(entries, out / names[0], metadata)
        remove_stale(out, names, prefix)
        return names
    names = [shard_name(i, len(groups), prefix) for i in range(len(groups))]
    weight_map: dict[str, str] = {}
    total = 0
    for file_name, group in zip(names, groups):
        save_entries({k: entries[k] for k in group}, out / file_name, metadata)
        for key in group:
            weight_map[key] = file_name
            total += tensor_nbytes(entries[key].dtype, entries[key].shape, name=key)
    index = write_index(out, weight_map, total, prefix)
    remove_stale(out, [*names, index.name], prefix)
    return names


def read_index(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read and check an index file; return shard file name -> tensor names in it.

    File names must be plain names inside the index's directory (no paths), and every shard
    must exist.

    Example:
        >>> read_index("ckpt/model.safetensors.index.json")  # doctest: +SKIP
        {'model-00001-of-00002.safetensors': ['a'], 'model-00002-of-00002.safetensors': ['b']}
    """
    index_path = Path(path)
    try:
        data: Any = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SafetensorError(f"{index_path}: cannot read shard index: {exc}") from exc
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict):
        raise SafetensorError(f"{index_path}: expected an object with a 'weight_map' object")
    shards: dict[str, list[str]] = {}
    for key, file_name in weight_map.items():
        if not isinstance(file_name, str) or not file_name or os.path.basename(file_name) != file_name or file_name in (".", ".."):
            raise SafetensorError(
                f"{index_path}: tensor {key!r} maps to {file_name!r}, not a file name in the index's directory"
            )
        shards.setdefault(file_name, []).append(key)
    for file_name in shards:
        if not (index_path.parent / file_name).is_file():
            raise SafetensorFileNotFoundError(f"{index_path}: shard {file_name!r} does not exist")
    return shards


def subfolder_hint(directory: Path) -> str:
    """For a directory without .safetensors files: the subfolders that have some (a diffusers
    repository root has unet/, text_encoder/, ...), as a hint to append to an error.

    Example:
        >>> subfolder_hint(Path("no-such-dir"))
        ''
    """
    subdirs = sorted({f.parent.name for f in directory.glob("*/*.safetensors")})
    if not subdirs:
        return ""
    return f" (subfolders that do: {', '.join(subdirs)}; pass one, e.g. {directory / subdirs[0]})"


def _probe(check: Any, path: Path) -> bool:
    """``check(path)`` (``Path.is_dir``/``is_file``), an unreachable path (a parent directory
    without search permission) raising what ``safe_open`` raises for it instead of the bare
    ``PermissionError`` that ``pathlib`` lets through."""
    try:
        return check(path)
    except OSError as exc:
        raise os_error_kind(type(exc))(f"{path}: cannot open: {exc.strerror or exc}") from exc


def resolve(path: str | os.PathLike[str]) -> tuple[list[Path], dict[str, list[str]] | None]:
    """Files that make up the checkpoint at ``path`` (a file, an index, or a directory holding
    an index or a ``model.safetensors``, else exactly one ``*.safetensors.index*.json`` or one
    ``*.safetensors`` file), and the index mapping when there is one.

    Example:
        >>> resolve("ckpt")  # doctest: +SKIP
        ([PosixPath('ckpt/model-00001-of-00002.safetensors'), ...], {...})
    """
    p = Path(path)
    if _probe(Path.is_dir, p):
        if _probe(Path.is_file, p / INDEX_NAME):
            p = p / INDEX_NAME
        elif _probe(Path.is_file, p / SINGLE_NAME):
            return [p / SINGLE_NAME], None
        else:
            # diffusers' diffusion_pytorch_model.safetensors(.index.json), PEFT's
            # adapter_model.safetensors, variants (model.safetensors.index.fp16.json): one of a kind
            found = sorted(p.glob("*.safetensors.index*.json")) or sorted(p.glob("*.safetensors"))
            if len(found) != 1:
                listed = ", ".join(f.name for f in found[:6]) or f"none{subfolder_hint(p)}"
                raise SafetensorError(
                    f"{p}: directory holds neither {INDEX_NAME} nor {SINGLE_NAME}, and not exactly "
                    f"one other index or .safetensors file (found: {listed}); pass the file to load"
                )
            p = found[0]
    if p.name.endswith(".json") and ".safetensors.index" in p.name:
        mapping = read_index(p)
        return [p.parent / name for name in mapping], mapping
    return [p], None


def check_shard(file_path: Path, expected: list[str], keys: list[str]) -> None:
    """Raise unless the shard's tensor names are exactly those the index assigns to it.

    Example:
        >>> check_shard(Path("s.safetensors"), ["a"], ["a"])
    """
    missing = sorted(set(expected) - set(keys))
    extra = sorted(set(keys) - set(expected))
    if missing or extra:
        raise SafetensorError(
            f"{file_path}: shard does not match the index (missing {missing[:5]}, not indexed {extra[:5]})"
        )


def load_checkpoint(path: str | os.PathLike[str], framework: str, device: Any = "cpu") -> dict[str, Any]:
    """Every tensor of a file or a sharded checkpoint (directory or index), each shard checked
    against the index; what ``load_file`` of both adapters returns.

    Example:
        >>> load_checkpoint("ckpt", "np")  # doctest: +SKIP
        {'a': array([...], dtype=float32), ...}
    """
    from torchship.weights.reader import safe_open

    files, mapping = resolve(path)
    result: dict[str, Any] = {}
    for file_path in files:
        with safe_open(file_path, framework=framework, device=device) as f:
            if mapping is not None:
                check_shard(file_path, mapping[file_path.name], f.keys())
            result.update(f.get_tensors())
    return result
