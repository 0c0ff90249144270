"""Build-on-first-use of the optional native kernels (C99, compiled by the system compiler).

:func:`library` compiles ``depthwise.c`` and ``rows.c`` (shipped beside this file) into one
library once per machine, in the user cache — ``$TORCHSHIP_CACHE_DIR/edge-native/`` (else
``$XDG_CACHE_HOME/torchship`` or ``~/.cache/torchship``, the kernels cache's convention) — and
loads it with ctypes. The file name is a hash of the sources, the compiler (``$CC`` or ``cc``: its path, size and mtime) and
the machine (architecture + the CPU flags of ``/proc/cpuinfo``), so an edit, a new compiler or
another CPU builds a fresh library. Flags: ``-O3 -ffp-contract=fast`` (FMA; never
``-ffast-math``: results stay within float32 rounding of the numpy path) plus the first of
``-march=native -mprefer-vector-width=256`` (x86: short image rows such as 56 floats fill whole
256-bit vectors; AMD's 512-bit units are double-pumped anyway), ``-march=native``, nothing,
that compiles (the flags are part of the hash too). The library is written to a temp file and
renamed into place (atomic), and a cached file that does not load or reports another ABI is
rebuilt once.

``TORCHSHIP_EDGE_NATIVE=0`` disables the layer; a missing compiler or a failed build disables
it too, with one debug log line, and the runtime keeps its numpy path. The result is cached
per process (:func:`reset` forgets it, for tests).

Example:
    >>> lib = library()  # None when disabled or no compiler
    >>> lib is None or lib.ts_native_abi() == ABI
    True
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

SOURCES = (Path(__file__).with_name("depthwise.c"), Path(__file__).with_name("rows.c"))
ABI = 4  # ts_native_abi() of the current sources
_BASE_FLAGS = ["-O3", "-std=c99", "-ffp-contract=fast", "-shared", "-fPIC"]
_ARCH_FLAGS = (["-march=native", "-mprefer-vector-width=256"], ["-march=native"], [])  # first that compiles
_LOG = logging.getLogger("torchship.edge.native")
_UNSET = object()
_CACHED: object = _UNSET
_LOCK = threading.Lock()  # one build per process even when several threads bind at once


def cache_dir() -> Path:
    """Folder of the built libraries: ``$TORCHSHIP_CACHE_DIR`` (else the XDG/home cache) / edge-native.

    Example:
        >>> cache_dir().name
        'edge-native'
    """
    env = os.environ.get("TORCHSHIP_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "edge-native"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "torchship" / "edge-native"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _key(compiler: str, source: bytes) -> str:
    st = os.stat(compiler)
    parts = [source, repr((_BASE_FLAGS, _ARCH_FLAGS)).encode(), compiler.encode(), f"{st.st_size}:{st.st_mtime_ns}".encode(),
             platform.machine().encode(), platform.system().encode(), _cpu_flags().encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:24]


def _compile(cc: str, out: Path) -> None:
    """Compile SOURCES into ``out`` (via a temp file in its folder, renamed into place)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        for flags in _ARCH_FLAGS:
            cmd = [cc, *_BASE_FLAGS, *flags, "-o", tmp, *map(str, SOURCES), "-lm"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if proc.returncode == 0:
                os.replace(tmp, out)
                return
        raise OSError(f"{cc} failed: {proc.stderr.strip()[-500:]}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load(path: Path) -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(str(path))
        if lib.ts_native_abi() == ABI:
            return lib
    except (OSError, AttributeError):
        pass
    return None


def _build() -> ctypes.CDLL:
    cc = shutil.which(os.environ.get("CC") or "cc")
    if cc is None:
        raise OSError(f"no C compiler ({os.environ.get('CC') or 'cc'})")
    path = cache_dir() / f"kernels-{_key(cc, b''.join(src.read_bytes() for src in SOURCES))}.so"
    lib = _load(path) if path.exists() else None
    if lib is None:  # missing, corrupt or stale: (re)build once
        _compile(cc, path)
        lib = _load(path)
        if lib is None:
            raise OSError(f"{path} does not load after a fresh build")
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded native library, or None (disabled by ``TORCHSHIP_EDGE_NATIVE=0``, no compiler,
    build failure); built on the first call, then cached for the process.

    Example:
        >>> library() is library()
        True
    """
    global _CACHED
    if _CACHED is _UNSET:
        with _LOCK:
            if _CACHED is _UNSET:
                lib = None
                if os.environ.get("TORCHSHIP_EDGE_NATIVE", "1") != "0":
                    try:
                        lib = _build()
                    except (OSError, subprocess.SubprocessError) as e:
                        _LOG.debug("torchship.edge native kernels unavailable, using numpy: %s", e)
                _CACHED = lib
    return _CACHED  # type: ignore[return-value]


def reset() -> None:
    """Forget the loaded library, so the next :func:`library` call looks again (tests).

    Example:
        >>> reset()
    """
    global _CACHED
    _CACHED = _UNSET


__all__ = ["ABI", "SOURCES", "cache_dir", "library", "reset"]
