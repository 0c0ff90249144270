"""Control the BLAS thread count of numpy's OpenBLAS at run time (best effort, ctypes).

OpenBLAS threads busy-wait; on a loaded or shared machine one descheduled thread stalls every
matmul, so a single thread is often faster and always steadier. ``OPENBLAS_NUM_THREADS`` works
only before numpy is imported; this works any time.

Example:
    >>> set_num_threads(1)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import ctypes
import glob
import os

import numpy as np

_NAMES = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")


def _libraries() -> list[str]:
    found = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if "openblas" in path.lower() and path.endswith((".so", ".dylib")) or ".so." in path and "openblas" in path.lower():
                    found.append(path)
    except OSError:
        pass
    libs_dir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    found += glob.glob(os.path.join(libs_dir, "*openblas*"))
    return list(dict.fromkeys(found))


def set_num_threads(n: int) -> bool:
    """Set numpy's OpenBLAS to ``n`` threads; False when no OpenBLAS setter could be found.

    Example:
        >>> set_num_threads(2)  # doctest: +SKIP
        True
    """
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    for path in _libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _NAMES:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                return True
    return False
