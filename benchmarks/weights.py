"""Benchmark torchship.weights against safetensors and torch.save/torch.load (issue 2).

In one run, on fresh random tensors (default 1 GiB: F32 and BF16 matrices of transformer-like
sizes plus small vectors):

- ``save``: torchship ``save_file`` (temp file, fsync, rename) vs safetensors ``save_file``
  (no fsync) vs ``torch.save``; plus a ``save + fsync`` row where the peers' files are fsync'd
  too, so every column measures a durable save.
- ``load warm`` / ``load cold``: ``load_file`` then touch every byte (a byte sum), with the file
  in the page cache, or evicted first (fsync + ``POSIX_FADV_DONTNEED``): torchship vs
  safetensors vs ``torch.load(weights_only=True)`` and ``torch.load(mmap=True)``.
- ``load numpy``: ``torchship.weights.numpy.load_file`` vs ``safetensors.numpy.load_file``, warm.
- ``load cuda`` (when a GPU exists), warm and cold: ``load_file(device="cuda")`` vs
  safetensors' ``device="cuda"`` vs ``torch.load(map_location="cuda")``, synchronized.

Each cell is the median of ``--repeat`` runs, the libraries interleaved in each round. Ratios
are peer time / torchship time (> 1: torchship is faster). A table is printed with rich and the
numbers are written as JSON.

Example:
    $ python benchmarks/weights.py                  # 1 GiB, as the issue asks
    $ python benchmarks/weights.py --size-mib 256 --repeat 3 --out bench-out
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import safetensors.numpy as st_np  # noqa: E402
import safetensors.torch as st_pt  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from torchship.weights import numpy as ts_np  # noqa: E402
from torchship.weights import torch as ts_pt  # noqa: E402


def make_tensors(size_bytes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Fresh random tensors totalling about ``size_bytes`` (F32/BF16 matrices + small vectors).

    Example:
        >>> sum(t.nbytes for t in make_tensors(1 << 20).values()) >= 1 << 20
        True
    """
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    total, layer = 0, 0
    dim = 1024
    while total < size_bytes:
        for name, rows, dtype in (("attn.qkv", 3 * dim, torch.bfloat16), ("mlp.up", 4 * dim, torch.float32), ("mlp.down", dim, torch.float32)):
            cols = 4 * dim if name == "mlp.down" else dim
            t = torch.randn(rows, cols, generator=gen).to(dtype)
            tensors[f"layers.{layer}.{name}.weight"] = t
            total += t.nbytes
        for name in ("norm.weight", "norm.bias", "mlp.up.bias"):
            t = torch.randn(dim, generator=gen)
            tensors[f"layers.{layer}.{name}"] = t
            total += t.nbytes
        layer += 1
    return tensors


def touch_torch(tensors: dict[str, torch.Tensor]) -> int:
    """Read every byte (byte sum), on whatever device the tensors live.

    Example:
        >>> touch_torch({"a": torch.ones(2, dtype=torch.uint8)})
        2
    """
    total = 0
    for t in tensors.values():
        flat = t.reshape(-1).view(torch.uint8)
        if flat.device.type == "cpu":  # numpy's byte sum is far faster than torch's on CPU
            total += int(flat.numpy().sum(dtype=np.uint64))
        else:
            total += int(flat.sum(dtype=torch.int64))
    return total


def touch_numpy(arrays: dict[str, np.ndarray]) -> int:
    """Read every byte of numpy arrays (byte sum).

    Example:
        >>> touch_numpy({"a": np.ones(3, np.uint8)})
        3
    """
    return int(sum(int(a.reshape(-1).view(np.uint8).sum(dtype=np.uint64)) for a in arrays.values()))


def evict(path: Path) -> None:
    """Drop ``path`` from the page cache (it must not be mapped anywhere).

    Example: ``evict(Path("w.safetensors"))`` before a cold load.
    """
    gc.collect()
    fsync_path(path)  # dirty pages cannot be dropped
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm(path: Path) -> None:
    """Bring ``path`` into the page cache. Example: ``warm(Path("w.safetensors"))``."""
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


def fsync_path(path: Path) -> None:
    """Flush ``path``'s data to disk. Example: ``fsync_path(Path("w.safetensors"))``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_model() -> str:
    """The CPU's model name for the results table. Example: ``cpu_model()`` -> ``'AMD EPYC ...'``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every measurement and print the table; return the results for the JSON file.

    Example: ``python benchmarks/weights.py --size-mib 64`` calls it.
    """
    console = Console()
    size = args.size_mib << 20
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="ts-weights-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not args.no_gpu
    console.print(f"generating {args.size_mib} MiB of random tensors ...")
    tensors = make_tensors(size)
    nbytes = sum(t.nbytes for t in tensors.values())
    arrays = {k: v.numpy() for k, v in tensors.items() if v.dtype != torch.bfloat16}
    ts_file, st_file, pt_file = workdir / "ts.safetensors", workdir / "st.safetensors", workdir / "model.pt"
    results: dict[str, dict[str, list[float]]] = {}

    def record(row: str, col: str, seconds: float) -> None:
        results.setdefault(row, {}).setdefault(col, []).append(seconds)

    def settle() -> None:
        gc.collect()
        os.sync()

    def load_and_touch(loader: Callable[[], dict[str, Any]], toucher: Callable[[Any], int]) -> Callable[[], float]:
        def go() -> float:
            start = time.perf_counter()
            out = loader()
            call = time.perf_counter() - start
            toucher(out)
            return call

        return go

    pt_loaders: dict[str, Callable[[], Callable[[], None]]] = {
        "torchship": lambda: load_and_touch(lambda: ts_pt.load_file(ts_file), touch_torch),
        "safetensors": lambda: load_and_touch(lambda: st_pt.load_file(str(ts_file)), touch_torch),
        "torch.load": lambda: load_and_touch(lambda: torch.load(pt_file, weights_only=True), touch_torch),
        "torch.load mmap": lambda: load_and_touch(lambda: torch.load(pt_file, weights_only=True, mmap=True), touch_torch),
    }
    steps = args.repeat * (4 + 2 * 4 + 2 + (6 if cuda else 0))
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmarking", total=steps)
        for _ in range(args.repeat):
            # -- save ------------------------------------------------------------------------
            for col, fn in (
                ("torchship", lambda: ts_pt.save_file(tensors, ts_file)),
                ("safetensors", lambda: st_pt.save_file(tensors, str(st_file))),
                ("torch.save", lambda: torch.save(tensors, pt_file)),
            ):
                settle()
                t = _time(fn)
                record("save", col, t)
                path = {"torchship": ts_file, "safetensors": st_file, "torch.save": pt_file}[col]
                t_sync = _time(lambda p=path: fsync_path(p))
                record("save + fsync", col, t + (0.0 if col == "torchship" else t_sync))
                progress.advance(task)
            settle()
            record("save", "fsync=False", _time(lambda: ts_pt.save_file(tensors, workdir / "nofsync.safetensors", fsync=False)))
            progress.advance(task)
            # -- torch loads, warm then cold ---------------------------------------------------
            for mode in ("warm", "cold"):
                for col, make in pt_loaders.items():
                    path = pt_file if col.startswith("torch.load") else ts_file
                    gc.collect()
                    if mode == "warm":
                        warm(path)
                    else:
                        evict(path)
                    start = time.perf_counter()
                    call = make()()
                    record(f"load {mode} (cpu, touch all)", col, time.perf_counter() - start)
                    record(f"load {mode} (cpu, call only)", col, call)
                    gc.collect()
                    progress.advance(task)
            # -- numpy ---------------------------------------------------------------------------
            np_file = workdir / "np.safetensors"
            if not np_file.exists():
                ts_np.save_file(arrays, np_file)
            for col, loader in (
                ("torchship", lambda f=np_file: ts_np.load_file(f)),
                ("safetensors", lambda f=np_file: st_np.load_file(str(f))),
            ):
                gc.collect()
                warm(np_file)
                record("load numpy warm (touch all)", col, _time(lambda ld=loader: touch_numpy(ld())))
                progress.advance(task)
            # -- cuda ------------------------------------------------------------------------------
            if cuda:
                for mode in ("warm", "cold"):
                    for col, path, loader in (
                        ("torchship", ts_file, lambda: ts_pt.load_file(ts_file, device="cuda")),
                        ("safetensors", ts_file, lambda: st_pt.load_file(str(ts_file), device="cuda")),
                        ("torch.load", pt_file, lambda: torch.load(pt_file, weights_only=True, map_location="cuda")),
                    ):
                        gc.collect()
                        torch.cuda.empty_cache()
                        if mode == "warm":
                            warm(path)
                        else:
                            evict(path)
                        torch.cuda.synchronize()

                        def go(ld: Callable[[], dict[str, torch.Tensor]] = loader) -> None:
                            out = ld()
                            torch.cuda.synchronize()
                            touch_torch(out)

                        record(f"load cuda {mode} (touch all)", col, _time(go))
                        progress.advance(task)

    medians = {row: {col: statistics.median(v) for col, v in cols.items()} for row, cols in results.items()}
    best = {row: {col: min(v) for col, v in cols.items()} for row, cols in results.items()}
    meta = {
        "bytes": nbytes,
        "tensors": len(tensors),
        "repeat": args.repeat,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "torch": torch.__version__,
        "safetensors": __import__("safetensors").__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "workdir": str(workdir),
    }
    table = Table(title=f"torchship.weights vs peers: {nbytes / 2**20:.0f} MiB, {len(tensors)} tensors; seconds, best (median) of {args.repeat}")
    cols = ["torchship", "fsync=False", "safetensors", "torch.save", "torch.load", "torch.load mmap"]
    table.add_column("operation")
    for col in cols:
        table.add_column(col, justify="right")
    table.add_column("safetensors / torchship: best (median)", justify="right")
    for row in results:
        cells = [f"{best[row][c]:.3f} ({medians[row][c]:.3f})" if c in best[row] else "" for c in cols]
        vals, mids = best[row], medians[row]
        ratio = f"{vals['safetensors'] / vals['torchship']:.2f}x ({mids['safetensors'] / mids['torchship']:.2f}x)" if "safetensors" in vals else ""
        table.add_row(row, *cells, f"[bold]{ratio}")
    console.print(table)
    console.print(f"machine: {meta['cpu']} ({meta['cores']} cores), GPU: {meta['gpu']}, torch {meta['torch']}, safetensors {meta['safetensors']}")
    out = {"meta": meta, "best_s": best, "median_s": medians, "runs_s": results}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        target = Path(args.out) / "weights.json"
        target.write_text(json.dumps(out, indent=2))
        console.print(f"wrote {target}")
    if args.out:
        plot(best, Path(args.out) / "weights.png", title=f"{nbytes / 2**30:.1f} GiB, {meta['cpu']}" + (f", {meta['gpu']}" if meta["gpu"] else ""))
    if not args.dir and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def plot(best: dict[str, dict[str, float]], path: Path, *, title: str) -> None:
    """Bar chart of best times per operation and library (PNG); skipped without matplotlib.

    Example:
        >>> plot({"save": {"torchship": 1.0, "safetensors": 2.0}}, Path("w.png"), title="t")  # doctest: +SKIP
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = [r for r in best if "call only" not in r]
    libs = ["torchship", "safetensors", "torch.save", "torch.load", "torch.load mmap"]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.16
    for i, lib in enumerate(libs):
        xs = [j + (i - 2) * width for j, r in enumerate(rows) if lib in best[r]]
        ys = [best[r][lib] for r in rows if lib in best[r]]
        if xs:
            ax.bar(xs, ys, width, label=lib)
    ax.set_xticks(range(len(rows)), [r.replace(" (", "\n(") for r in rows], fontsize=8)
    ax.set_ylabel("seconds (best of N, lower is better)")
    ax.set_title(f"torchship.weights vs peers: {title}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ablate(args: argparse.Namespace) -> dict[str, Any]:
    """A/B of the loader and writer choices, on one file of ``--size-mib``:

    - loads (cpu, and cuda when present; warm and cold; call + byte sum): ``prefault``
      (parallel ``MADV_POPULATE_READ``) vs ``willneed`` (``MADV_WILLNEED`` only) vs safetensors;
    - saves: with early writeback (``WRITEBACK_AHEAD``) vs without vs ``fsync=False`` vs
      safetensors with and without an fsync.

    Example:
        $ python benchmarks/weights.py --ablate --size-mib 1024 --repeat 3
    """
    from torchship.weights import reader as ts_reader
    from torchship.weights import writer as ts_writer

    console = Console()
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="ts-weights-ablate-"))
    workdir.mkdir(parents=True, exist_ok=True)
    tensors = make_tensors(args.size_mib << 20)
    path = workdir / "ab.safetensors"
    ts_pt.save_file(tensors, path)
    cuda = torch.cuda.is_available() and not args.no_gpu
    orig_prefault, orig_ahead = ts_reader.prefault, ts_writer.WRITEBACK_AHEAD
    res: dict[str, list[float]] = {}
    try:
        for dev in ["cpu", "cuda"] if cuda else ["cpu"]:
            for mode in ("warm", "cold"):
                for _ in range(args.repeat):
                    for name in ("prefault", "willneed", "safetensors"):
                        advice = orig_prefault if name == "prefault" else ts_reader.advise_willneed
                        ts_reader.prefault = advice
                        gc.collect()
                        (warm if mode == "warm" else evict)(path)
                        start = time.perf_counter()
                        if name == "safetensors":
                            out = st_pt.load_file(str(path), device=dev)
                        elif dev == "cpu":
                            with ts_pt.safe_open(path, framework="pt") as f:
                                advice(f._live_buf(), f.header.data_start, f.header.data_start + f.header.data_len)
                                out = {k: f._tensor(k) for k in f.offset_keys()}
                        else:
                            out = ts_pt.load_file(path, device=dev)
                        if dev == "cuda":
                            torch.cuda.synchronize()
                        touch_torch(out)
                        res.setdefault(f"load {dev} {mode}: {name}", []).append(time.perf_counter() - start)
                        del out
        ts_reader.prefault = orig_prefault
        for _ in range(args.repeat):
            for name in ("writeback ahead", "no writeback ahead", "fsync=False", "safetensors", "safetensors + fsync"):
                ts_writer.WRITEBACK_AHEAD = 0 if name == "no writeback ahead" else orig_ahead
                target = workdir / f"save_{name.replace(' ', '_').replace('+', 'p').replace('=', '_')}.safetensors"
                gc.collect()
                os.sync()
                start = time.perf_counter()
                if name.startswith("safetensors"):
                    st_pt.save_file(tensors, str(target))
                    if name.endswith("fsync"):
                        fsync_path(target)
                else:
                    ts_pt.save_file(tensors, target, fsync=name != "fsync=False")
                res.setdefault(f"save: {name}", []).append(time.perf_counter() - start)
    finally:
        ts_reader.prefault, ts_writer.WRITEBACK_AHEAD = orig_prefault, orig_ahead
        if not args.dir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    table = Table(title=f"ablation, {args.size_mib} MiB, seconds: best (median) of {args.repeat}")
    table.add_column("case")
    table.add_column("seconds", justify="right")
    for key, vals in res.items():
        table.add_row(key, f"{min(vals):.3f} ({statistics.median(vals):.3f})")
    console.print(table)
    out = {"ablation_best_s": {k: min(v) for k, v in res.items()}, "ablation_median_s": {k: statistics.median(v) for k, v in res.items()}}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "weights_ablation.json").write_text(json.dumps(out, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the benchmark.

    Example:
        >>> main(["--size-mib", "16", "--repeat", "1", "--no-gpu"])  # doctest: +SKIP
        0
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="total tensor bytes (default 1024 = 1 GiB)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each cell is the median")
    parser.add_argument("--dir", help="where to write the files (default: a temp dir, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--out", default="bench-out", help="folder for weights.json ('' to skip)")
    parser.add_argument("--no-gpu", action="store_true", help="skip the CUDA rows even when a GPU exists")
    parser.add_argument("--ablate", action="store_true", help="A/B the loader/writer choices instead")
    args = parser.parse_args(argv)
    if args.ablate:
        ablate(args)
    else:
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
