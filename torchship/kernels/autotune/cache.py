"""Persistent autotune cache: one JSON file per specialisation key.

Layout: ``$TORCHSHIP_CACHE_DIR/kernels/<source-hash[:16]>/<key-hash>.json`` (default cache dir:
``$XDG_CACHE_HOME/torchship`` or ``~/.cache/torchship``). Grouping entries by kernel source lets
the tuner find the winners of *nearby shapes* of the same kernel quickly (search seeds).

Every write goes to a temporary file in the same folder and is renamed over the target, so a
reader never sees half a file and several processes tuning at once never corrupt an entry (the
last writer wins, each version whole). A file that does not parse, or whose content does not
match its key, is ignored with a warning and re-tuned.

Example:
    >>> import tempfile
    >>> cache = AutotuneCache(tempfile.mkdtemp())
    >>> key = {"source_hash": "ab" * 8, "args": [["float32", [8, 8], [8, 1]]]}
    >>> _ = cache.put(key, {"block_sizes": [16]}, time_ms=0.5)
    >>> cache.get(key)["config"]
    {'block_sizes': [16]}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FORMAT = "torchship-autotune-cache"
FORMAT_VERSION = 1


class CacheWarning(UserWarning):
    """A cache entry was unreadable or did not match its key; it is ignored and re-tuned."""


def default_cache_dir() -> Path:
    """Return ``$TORCHSHIP_CACHE_DIR``, else ``$XDG_CACHE_HOME/torchship``, else ``~/.cache/torchship``.

    Example:
        >>> isinstance(default_cache_dir(), Path)
        True
    """
    env = os.environ.get("TORCHSHIP_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "torchship"


def stable_json(obj: Any) -> str:
    """Serialise ``obj`` deterministically (sorted keys, no spaces): the basis of key hashes.

    Example:
        >>> stable_json({"b": 1, "a": [1, 2]})
        '{"a":[1,2],"b":1}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def key_hash(key: dict[str, Any]) -> str:
    """Hash of a key dict (hex, 32 chars), used as the entry's file name.

    Example:
        >>> len(key_hash({"a": 1}))
        32
    """
    return hashlib.sha256(stable_json(key).encode()).hexdigest()[:32]


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file and an atomic rename.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.json"
        >>> atomic_write_json(p, {"a": 1}); json.loads(p.read_text())
        {'a': 1}
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class AutotuneCache:
    """The on-disk cache of tuned configs.

    Example:
        >>> import tempfile
        >>> c = AutotuneCache(tempfile.mkdtemp())
        >>> c.get({"source_hash": "0" * 16}) is None
        True
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    @property
    def kernels_dir(self) -> Path:
        """Folder holding one sub-folder per kernel source hash."""
        return self.root / "kernels"

    def path_for(self, key: dict[str, Any]) -> Path:
        """Return the JSON file of ``key``.

        Example:
            >>> AutotuneCache("/tmp/c").path_for({"source_hash": "abc"}).parent.name
            'abc'
        """
        group = str(key.get("source_hash", "nohash"))[:16] or "nohash"
        return self.kernels_dir / group / f"{key_hash(key)}.json"

    def get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """Return the entry for ``key`` (``{"key", "config", "time_ms", ...}``) or None.

        A corrupt or mismatching file gives a :class:`CacheWarning` and None.

        Example:
            >>> import tempfile
            >>> AutotuneCache(tempfile.mkdtemp()).get({"x": 1}) is None
            True
        """
        path = self.path_for(key)
        if not path.exists():
            return None
        entry = self._read(path)
        if entry is None:
            return None
        if stable_json(entry.get("key")) != stable_json(key):
            warnings.warn(
                f"autotune cache entry {path} holds a different key; ignoring it and re-tuning",
                CacheWarning,
                stacklevel=2,
            )
            return None
        return entry

    def put(
        self,
        key: dict[str, Any],
        config: dict[str, Any],
        *,
        time_ms: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Path:
        """Store ``config`` (a ``Config.to_dict()``) as the winner for ``key``; return the file.

        Example:
            >>> import tempfile
            >>> AutotuneCache(tempfile.mkdtemp()).put({"a": 1}, {"num_warps": 4}).suffix
            '.json'
        """
        entry = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "key": json.loads(stable_json(key)),
            "config": config,
            "time_ms": time_ms,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "meta": meta or {},
        }
        path = self.path_for(key)
        atomic_write_json(path, entry)
        return path

    def entries(self, source_hash: str | None = None) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Yield ``(path, entry)`` for every readable entry (of one kernel if ``source_hash``).

        Example:
            >>> import tempfile
            >>> list(AutotuneCache(tempfile.mkdtemp()).entries())
            []
        """
        if not self.kernels_dir.is_dir():
            return
        if source_hash is not None:
            groups = [self.kernels_dir / str(source_hash)[:16]]
        else:
            groups = sorted(p for p in self.kernels_dir.iterdir() if p.is_dir())
        for group in groups:
            if not group.is_dir():
                continue
            for path in sorted(group.glob("*.json")):
                entry = self._read(path)
                if entry is not None:
                    yield path, entry

    def clear(self, source_hash: str | None = None) -> int:
        """Delete entries (all, or one kernel's); return how many files were removed.

        Example:
            >>> import tempfile
            >>> AutotuneCache(tempfile.mkdtemp()).clear()
            0
        """
        removed = 0
        if not self.kernels_dir.is_dir():
            return 0
        pattern = f"{str(source_hash)[:16]}/*.json" if source_hash else "*/*.json"
        for path in self.kernels_dir.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        return removed

    def export(self, dest: str | os.PathLike[str]) -> int:
        """Write every entry into one JSON bundle at ``dest`` (to ship with an application).

        Example:
            >>> import tempfile
            >>> AutotuneCache(tempfile.mkdtemp()).export(tempfile.mktemp(suffix=".json"))
            0
        """
        items = [entry for _, entry in self.entries()]
        atomic_write_json(
            Path(dest), {"format": FORMAT + "-bundle", "version": FORMAT_VERSION, "entries": items}
        )
        return len(items)

    def import_bundle(self, src: str | os.PathLike[str], *, overwrite: bool = True) -> int:
        """Read a bundle written by :meth:`export` and store its entries; return the count.

        The bundle is parsed as JSON only (never executed); a malformed bundle raises
        ``ValueError`` naming the file and the bad entry, before anything is written.

        Example:
            >>> import tempfile
            >>> src, dst = AutotuneCache(tempfile.mkdtemp()), AutotuneCache(tempfile.mkdtemp())
            >>> _ = src.put({"k": 1}, {"num_warps": 8}); p = tempfile.mktemp(suffix=".json")
            >>> src.export(p), dst.import_bundle(p)
            (1, 1)
        """
        path = Path(src)
        try:
            bundle = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a torchship autotune cache bundle ({exc})") from exc
        if not isinstance(bundle, dict) or bundle.get("format") != FORMAT + "-bundle":
            raise ValueError(
                f"{path}: expected a JSON object with format={FORMAT + '-bundle'!r} "
                "(written by 'torchship kernels cache export')"
            )
        entries = bundle.get("entries")
        if not isinstance(entries, list):
            raise ValueError(f"{path}: 'entries' must be a list")
        for i, entry in enumerate(entries):
            problem = _entry_problem(entry)
            if problem:
                raise ValueError(f"{path}: entry {i}: {problem}")
        count = 0
        for entry in entries:
            target = self.path_for(entry["key"])
            if target.exists() and not overwrite:
                continue
            atomic_write_json(target, entry)
            count += 1
        return count

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            warnings.warn(
                f"autotune cache entry {path} is unreadable ({exc}); ignoring it and re-tuning",
                CacheWarning,
                stacklevel=3,
            )
            return None
        problem = _entry_problem(entry)
        if problem:
            warnings.warn(
                f"autotune cache entry {path} is malformed ({problem}); ignoring it and re-tuning",
                CacheWarning,
                stacklevel=3,
            )
            return None
        return entry


def _entry_problem(entry: Any) -> str | None:
    """Return what is wrong with a cache entry, or None when it is well formed."""
    if not isinstance(entry, dict):
        return "expected a JSON object"
    if entry.get("format") != FORMAT:
        return f"format must be {FORMAT!r}, got {entry.get('format')!r}"
    if not isinstance(entry.get("key"), dict):
        return "'key' must be an object"
    if not isinstance(entry.get("config"), dict):
        return "'config' must be an object"
    t = entry.get("time_ms")
    if t is not None and not isinstance(t, (int, float)):
        return "'time_ms' must be a number or null"
    return None
