"""Cold-read ceiling of a disk: 1 GiB read after page-cache eviction, by mmap touch, pread with
1-16 threads, and O_DIRECT. It bounds what any cold (GPU) weight load can reach on the machine.

Usage: ``python benchmarks/disk_read.py`` (prints GB/s per method, writes ``$OUT/disk.json``).
"""
from __future__ import annotations

import json
import mmap
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

path = "/tmp/diskprobe.bin"
size = 1 << 30
if not os.path.exists(path):
    with open(path, "wb") as f:
        for _ in range(size >> 26):
            f.write(np.random.bytes(1 << 26))
        f.flush()
        os.fsync(f.fileno())

def evict():
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)

def pread_all(threads, chunk, direct=False):
    flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
    fd = os.open(path, flags)
    bufs = [mmap.mmap(-1, chunk) for _ in range(threads)]
    offs = list(range(0, size, chunk))
    def work(i):
        buf = bufs[i % threads]
        for j in range(i, len(offs), threads):
            os.preadv(fd, [buf], offs[j])
    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(work, range(threads)))
    dt = time.perf_counter() - t
    os.close(fd)
    return dt

def mmap_touch():
    fd = os.open(path, os.O_RDONLY)
    m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    t = time.perf_counter()
    a = np.frombuffer(m, dtype=np.uint8)
    int(a[::4096].sum())  # one byte per page: every page faulted in
    dt = time.perf_counter() - t
    del a
    m.close()
    os.close(fd)
    return dt

res = {}
for name, fn in [("mmap_touch_1thr", mmap_touch),
                 ("pread_1thr_16M", lambda: pread_all(1, 16 << 20)),
                 ("pread_4thr_16M", lambda: pread_all(4, 16 << 20)),
                 ("pread_8thr_8M", lambda: pread_all(8, 8 << 20)),
                 ("pread_16thr_4M", lambda: pread_all(16, 4 << 20)),
                 ("odirect_1thr_16M", lambda: pread_all(1, 16 << 20, True)),
                 ("odirect_8thr_8M", lambda: pread_all(8, 8 << 20, True)),
                 ("odirect_16thr_4M", lambda: pread_all(16, 4 << 20, True))]:
    ts_ = []
    for _ in range(2):
        evict()
        ts_.append(fn())
    res[name] = round(size / min(ts_) / 1e9, 2)
    print(name, res[name], "GB/s", flush=True)
with open(os.path.join(os.environ.get("OUT", "/tmp"), "disk.json"), "w") as out:
    json.dump(res, out)
