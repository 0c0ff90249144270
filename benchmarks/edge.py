"""torchship.edge vs torch eager vs ExecuTorch 1.5.1 (portable and XNNPACK) on this CPU.

For each model of the zoo and all-MiniLM-L6-v2 (batch 1, sequence 128), in one run:

- torchship: ``torchship.edge.export`` -> program file; ``runtime.load`` time (median of
  repeated loads: map + validate everything + arena), per-inference latency (median), file size,
  planned arena bytes, plus the kernels' scratch outside the arena (``Method.scratch_bytes``:
  padded copies, im2col columns; MiniLM is exported with a dynamic sequence dim, max 128);
- torch eager: latency of the ``nn.Module`` under ``torch.no_grad()``;
- ExecuTorch 1.5.1, in its own venv (``--et-venv``, default /tmp/et-venv; created with
  ``pip install torch==2.13.0 executorch==1.5.1`` when missing unless ``--no-create-venv``):
  the same ``torch.export`` program (saved as .pt2) lowered with ``to_edge_transform_and_lower``
  without a partitioner (portable kernels) and with ``XnnpackPartitioner``; load time
  (``load_program`` + ``load_method``), latency, .pte size and planned memory (sum of
  ``non_const_buffer_sizes``). Every output is compared with eager (``rel_err`` in the JSON).

Every implementation runs with ``--threads`` threads (default 1: numpy's OpenBLAS, torch
intra-op, ExecuTorch's thread pool that XNNPACK uses), because on a shared machine spinning BLAS
threads make multi-threaded medians meaningless. The JSON records whether the runtime's optional
native kernels were active (``machine.edge_native``; ``TORCHSHIP_EDGE_NATIVE=0`` turns them
off). Latencies are medians over interleaved rounds (each round times every implementation in turn,
so all see the same machine load), measured in the same run on the same machine: the ratios are
the headline. The ExecuTorch side runs as a persistent child process that the rounds drive.

Example:
    $ .venv/bin/python benchmarks/edge.py                 # everything, writes benchmarks/results/edge.json
    $ .venv/bin/python benchmarks/edge.py --models mlp --rounds 3 --no-executorch
    $ .venv/bin/python benchmarks/edge.py --native-ab --models inverted_residual --rounds 15
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.models.zoo import ZOO  # noqa: E402
from torchship.edge import export  # noqa: E402
from torchship.edge.runtime import load, loads  # noqa: E402
from torchship.edge.runtime.native import active as native_active  # noqa: E402
from torchship.edge.runtime.native import build as native_build  # noqa: E402
from torchship.edge.runtime.threads import set_num_threads  # noqa: E402

MODELS = [*ZOO, "minilm"]

_ET_CHILD = r'''
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, torch
from executorch.exir import to_edge_transform_and_lower
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.runtime import Runtime

work, loads_n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = sys.argv[4:]
rt = Runtime.get()
if threads > 0:
    torch.set_num_threads(threads)
    from executorch.extension.pybindings import portable_lib
    portable_lib._unsafe_reset_threadpool(threads)  # the pool XNNPACK runs on
info, methods = {}, {}
for name in names:
    ep = torch.export.load(f"{work}/{name}.pt2")
    inputs = [torch.from_numpy(np.load(f"{work}/{name}_in{i}.npy")) for i in range(len(ep.example_inputs[0]))]
    ref = np.load(f"{work}/{name}_ref.npy")
    for variant, parts in (("portable", []), ("xnnpack", [XnnpackPartitioner()])):
        prog = to_edge_transform_and_lower(ep, partitioner=parts).to_executorch()
        path = f"{work}/{name}_{variant}.pte"
        with open(path, "wb") as f:
            f.write(prog.buffer)
        planned = sum(prog.executorch_program.execution_plan[0].non_const_buffer_sizes)
        loads = []
        for _ in range(loads_n):
            t = time.perf_counter()
            method = rt.load_program(path).load_method("forward")
            loads.append(time.perf_counter() - t)
        got = method.execute(inputs)[0].numpy()
        err = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))
        for _ in range(2):
            method.execute(inputs)
        methods[f"{name}/{variant}"] = (method, inputs)
        info[f"{name}/{variant}"] = {"load_ms": float(np.median(loads)) * 1e3, "file_bytes": len(prog.buffer),
                                     "planned_bytes": int(planned), "rel_err": err}
print(json.dumps(info), flush=True)
for line in sys.stdin:  # "KEY N": time N executions, answer with the list of seconds
    key, n = line.split()
    method, inputs = methods[key]
    times = []
    for _ in range(int(n)):
        t = time.perf_counter()
        method.execute(inputs)
        times.append(time.perf_counter() - t)
    print(json.dumps(times), flush=True)
'''


def _model(name: str) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], Any]:
    if name == "minilm":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from examples.models.bert import minilm, tokenize

        model = minilm()
        ids, mask = tokenize(["torchship runs sentence embeddings without torch."], pad_to=128)
        seq = torch.export.Dim("seq", min=1, max=128)
        return model, (ids, mask), ({1: seq}, {1: seq})
    model, inputs = ZOO[name]()
    if name == "tiny_transformer":
        ids, mask = inputs
        return model, (ids[:1], mask[:1]), None
    return model, inputs, None


def ensure_et_venv(path: Path, create: bool, console: Console) -> bool:
    """Make sure ``path`` is a venv with executorch 1.5.1; create it when asked.

    Example:
        >>> ensure_et_venv(Path("/tmp/et-venv"), False, Console())  # doctest: +SKIP
        True
    """
    py = path / "bin" / "python"
    check = [str(py), "-c", "import executorch, torch; print(torch.__version__)"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return True
    if not create:
        return False
    console.print(f"creating {path} with torch==2.13.0 executorch==1.5.1 (a few minutes)...")
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0", "executorch==1.5.1"], check=True)
    return subprocess.run(check, capture_output=True).returncode == 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table; write JSON.

    Latencies are measured in interleaved rounds (torchship, eager, ExecuTorch portable,
    ExecuTorch XNNPACK, then again), so every implementation sees the same machine load.

    Example:
        >>> main(["--models", "mlp", "--rounds", "3", "--no-executorch", "--out", ""])  # doctest: +SKIP
        0
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=MODELS, choices=MODELS)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median over all runs)")
    ap.add_argument("--per-round", type=float, default=0.3, help="seconds of runs per implementation per round")
    ap.add_argument("--et-venv", type=Path, default=Path("/tmp/et-venv"))
    ap.add_argument("--no-create-venv", action="store_true", help="do not create the ExecuTorch venv if missing")
    ap.add_argument("--no-executorch", action="store_true")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for every implementation (numpy's OpenBLAS, torch, ExecuTorch's pool); 0 = library defaults")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "edge.json"))
    ap.add_argument("--replot", type=Path, default=None, help="only redraw the PNG (and table) from this JSON")
    ap.add_argument("--native-ab", action="store_true",
                    help="only A/B the runtime with its native kernels off vs on (interleaved rounds; no JSON)")
    args = ap.parse_args(argv)
    if args.replot:
        rows = json.loads(args.replot.read_text())["models"]
        _table(Console(width=180), rows)
        _plot(rows, args.replot.with_suffix(".png"))
        return 0
    warnings.filterwarnings("ignore")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        if not set_num_threads(args.threads):
            print("warning: could not set numpy's BLAS thread count")
    console = Console(width=max(Console().width, 180))
    if args.native_ab:
        return native_ab(args.models, args.rounds, args.per_round, console)
    work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    rows: dict[str, dict[str, Any]] = {}
    runners: dict[str, dict[str, Any]] = {}
    load_at_start = os.getloadavg()
    console.print(f"torchship.edge native kernels: {'active' if native_active() else 'off (numpy only)'}")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("export (torchship, torch.export for ExecuTorch)", total=len(args.models))
        for name in args.models:
            model, inputs, dyn = _model(name)
            with torch.no_grad():
                ref = model(*inputs)
            prog = export(model, inputs, dynamic_shapes=dyn)
            path = prog.save(work / f"{name}.tsp")
            loads = []
            for _ in range(20):
                t = time.perf_counter()
                runtime = load(path)
                loads.append(time.perf_counter() - t)
            arrays = [x.numpy() for x in inputs]
            got = runtime.run(*arrays)
            err = float(np.abs(got - ref.numpy()).max() / np.abs(ref.numpy()).max())
            method = runtime.method("forward")
            rows[name] = {
                "torchship": {"load_ms": float(np.median(loads)) * 1e3, "file_bytes": path.stat().st_size,
                              "planned_bytes": method.arena_bytes(), "tensor_bytes": method.tensor_bytes(),
                              "scratch_bytes": method.scratch_bytes(), "rel_err": err},
                "eager": {},
            }
            runners[name] = {"torchship": (lambda r=runtime, a=arrays: r.run(*a)),
                             "eager": (lambda m=model, i=inputs: _no_grad(m, i))}
            ep = torch.export.export(model, inputs)  # static shapes for ExecuTorch
            torch.export.save(ep, work / f"{name}.pt2")
            for i, x in enumerate(arrays):
                np.save(work / f"{name}_in{i}.npy", x)
            np.save(work / f"{name}_ref.npy", ref.numpy())
            progress.advance(task)
    child = None
    if not args.no_executorch:
        if ensure_et_venv(args.et_venv, not args.no_create_venv, console):
            with console.status("ExecuTorch: lowering every model (portable, XNNPACK) in its venv..."):
                child = subprocess.Popen([str(args.et_venv / "bin" / "python"), "-c", _ET_CHILD, str(work), "20", str(args.threads), *args.models],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                line = child.stdout.readline()  # type: ignore[union-attr]
            if not line:
                console.print("[red]ExecuTorch child failed (run it by hand to see why)")
                return 1
            for key, value in json.loads(line).items():
                name, variant = key.split("/")
                rows[name][f"et_{variant}"] = value
        else:
            console.print(f"[yellow]no ExecuTorch venv at {args.et_venv}: ExecuTorch columns skipped")
    impls = ["torchship", "eager"] + (["et_portable", "et_xnnpack"] if child else [])
    times: dict[tuple[str, str], list[float]] = {(n, i): [] for n in args.models for i in impls}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("interleaved timing rounds", total=args.rounds * len(args.models))
        for _ in range(args.rounds):
            for name in args.models:
                for impl in impls:
                    est = times[(name, impl)]
                    per = float(np.median(est)) if est else None
                    n = 3 if per is None else int(min(200, max(2, args.per_round / max(per, 1e-6))))
                    if impl.startswith("et_"):
                        child.stdin.write(f"{name}/{impl[3:]} {n}\n")  # type: ignore[union-attr]
                        child.stdin.flush()  # type: ignore[union-attr]
                        est.extend(json.loads(child.stdout.readline()))  # type: ignore[union-attr]
                    else:
                        fn = runners[name][impl]
                        fn()
                        for _ in range(n):
                            t = time.perf_counter()
                            fn()
                            est.append(time.perf_counter() - t)
                progress.advance(task)
    if child:
        child.stdin.close()  # type: ignore[union-attr]
        child.wait(timeout=60)
    for (name, impl), ts in times.items():
        rows[name][impl]["latency_ms"] = float(np.median(ts)) * 1e3
        rows[name][impl]["min_ms"] = float(np.min(ts)) * 1e3
        rows[name][impl]["runs"] = len(ts)
    _table(console, rows)
    result = {"machine": {"cpu": _cpu(), "cores": os.cpu_count(), "load_avg_at_start": load_at_start, "load_avg_at_end": os.getloadavg(),
                          "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                          "threads": args.threads, "edge_native": native_active()},
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": args.rounds, "models": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
        _plot(rows, Path(args.out).with_suffix(".png"))
        console.print(f"wrote {args.out} and {Path(args.out).with_suffix('.png')}")
    return 0


def native_ab(models: list[str], rounds: int, per_round: float, console: Console) -> int:
    """Time each model's program with the runtime's native kernels off and on: two loaded
    programs in this process, alternating order every round; print minima and medians (ms).

    Example:
        >>> native_ab(["inverted_residual"], 3, 0.1, Console())  # doctest: +SKIP
        0
    """
    runs: dict[tuple[str, str], Any] = {}
    for name in models:
        model, inputs, dyn = _model(name)
        data = export(model, inputs, dynamic_shapes=dyn).to_bytes()
        arrays = [x.numpy() for x in inputs]
        for mode in ("off", "on"):
            os.environ["TORCHSHIP_EDGE_NATIVE"] = "0" if mode == "off" else "1"
            native_build.reset()  # the switch is read on first use: bind each program under its mode
            method = loads(data).method("forward")
            method(*arrays)
            runs[(name, mode)] = (lambda m=method, a=arrays: m(*a))
    if not native_active():
        console.print("[red]native kernels unavailable: nothing to compare")
        return 1
    times: dict[tuple[str, str], list[float]] = {k: [] for k in runs}
    load_at_start = os.getloadavg()
    for r in range(rounds):
        for name in models:
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                fn, est = runs[(name, mode)], times[(name, mode)]
                n = 3 if not est else int(min(500, max(2, per_round / max(float(np.median(est)), 1e-6))))
                for _ in range(n):
                    t = time.perf_counter()
                    fn()
                    est.append(time.perf_counter() - t)
    console.print(f"native A/B, {rounds} rounds, load average {load_at_start[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    for name in models:
        (off, on) = (np.array(times[(name, m)]) * 1e3 for m in ("off", "on"))
        console.print(f"{name:18s} numpy: min {off.min():.3f} median {np.median(off):.3f} ms | native: min {on.min():.3f} "
                      f"median {np.median(on):.3f} ms | speed-up {np.median(off) / np.median(on):.2f}x (medians), "
                      f"{off.min() / on.min():.2f}x (minima)")
    return 0


def _no_grad(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> Any:
    with torch.no_grad():
        return model(*inputs)


def _plot(rows: dict[str, dict[str, Any]], path: Path) -> None:
    """Latency of each implementation relative to torchship (log scale), one group per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    impls = [("torchship", "torchship"), ("eager", "torch eager"), ("et_portable", "ExecuTorch portable"), ("et_xnnpack", "ExecuTorch XNNPACK")]
    names = list(rows)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.2
    for k, (key, label) in enumerate(impls):
        vals = [rows[n][key]["latency_ms"] if key in rows[n] and "latency_ms" in rows[n][key] else np.nan for n in names]
        bars = ax.bar(np.arange(len(names)) + (k - 1.5) * width, vals, width, label=label)
        for b, v in zip(bars, vals):
            if np.isfinite(v):
                ax.annotate(f"{v:.3g}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("median latency, ms (log)")
    ax.set_title("torchship.edge vs torch eager vs ExecuTorch 1.5.1 (1 thread each)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _table(console: Console, rows: dict[str, dict[str, Any]]) -> None:
    t = Table(title="torchship.edge vs eager vs ExecuTorch 1.5.1 (latency median, ms)")
    for col in ("model", "torchship", "eager", "ET portable", "ET XNNPACK", "ours/portable", "ours/XNNPACK",
                "load ms (ours | ET xnn)", "arena KiB (ours +scratch | ET xnn)", "file KiB (ours | ET xnn)", "rel err"):
        t.add_column(col, justify="right")
    for name, r in rows.items():
        ours, p, x = r["torchship"], r.get("et_portable"), r.get("et_xnnpack")
        f = lambda d, k, s=1.0: f"{d[k] / s:.2f}" if d else "-"  # noqa: E731
        t.add_row(
            name, f"{ours['latency_ms']:.2f}", f"{r['eager']['latency_ms']:.2f}", f(p, "latency_ms"), f(x, "latency_ms"),
            f"{ours['latency_ms'] / p['latency_ms']:.2f}x" if p else "-", f"{ours['latency_ms'] / x['latency_ms']:.2f}x" if x else "-",
            f"{ours['load_ms']:.2f} | {f(x, 'load_ms')}", f"{ours['planned_bytes'] / 1024:.0f} +{ours.get('scratch_bytes', 0) / 1024:.0f} | {f(x, 'planned_bytes', 1024)}",
            f"{ours['file_bytes'] / 1024:.0f} | {f(x, 'file_bytes', 1024)}", f"{ours['rel_err']:.1e}",
        )
    console.print(t)


if __name__ == "__main__":
    sys.exit(main())
