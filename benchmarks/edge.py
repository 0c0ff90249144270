"""torchship.edge vs torch eager vs ExecuTorch 1.5.1 (portable and XNNPACK) on this CPU.

For each model of the zoo and all-MiniLM-L6-v2 (batch 1, sequence 128), in one run:

- torchship: ``torchship.edge.export`` -> program file; ``runtime.load`` time (median of
  repeated loads: map + validate everything + arena), per-inference latency (median), file size,
  planned arena bytes (MiniLM is exported with a dynamic sequence dim, max 128);
- torch eager: latency of the ``nn.Module`` under ``torch.no_grad()``;
- ExecuTorch 1.5.1, in its own venv (``--et-venv``, default /tmp/et-venv; created with
  ``pip install torch==2.13.0 executorch==1.5.1`` when missing unless ``--no-create-venv``):
  the same ``torch.export`` program (saved as .pt2) lowered with ``to_edge_transform_and_lower``
  without a partitioner (portable kernels) and with ``XnnpackPartitioner``; load time
  (``load_program`` + ``load_method``), latency, .pte size and planned memory (sum of
  ``non_const_buffer_sizes``). Its outputs are checked against eager before numbers count.

All latencies are medians of ``--repeat`` runs after warm-up, measured in the same run on the
same machine, so the ratios are the headline.

Example:
    $ .venv/bin/python benchmarks/edge.py                 # everything, writes benchmarks/results/edge.json
    $ .venv/bin/python benchmarks/edge.py --models mlp --repeat 5 --no-executorch
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
from torchship.edge.runtime import load  # noqa: E402

MODELS = [*ZOO, "minilm"]

_ET_CHILD = r'''
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, torch
from executorch.exir import to_edge_transform_and_lower
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.runtime import Runtime

work, repeat = sys.argv[1], int(sys.argv[2])
names = sys.argv[3:]
rt = Runtime.get()
out = {}
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
        for _ in range(max(3, repeat // 2)):
            t = time.perf_counter()
            method = rt.load_program(path).load_method("forward")
            loads.append(time.perf_counter() - t)
        got = method.execute(inputs)[0].numpy()
        err = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))
        for _ in range(3):
            method.execute(inputs)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            method.execute(inputs)
            times.append(time.perf_counter() - t)
        out[f"{name}/{variant}"] = {"latency_ms": float(np.median(times)) * 1e3, "load_ms": float(np.median(loads)) * 1e3,
                                    "file_bytes": len(prog.buffer), "planned_bytes": int(planned), "rel_err": err}
        print(f"{name}/{variant}", file=sys.stderr, flush=True)
print(json.dumps(out))
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


def _median_ms(fn: Any, repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


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

    Example:
        >>> main(["--models", "mlp", "--repeat", "3", "--no-executorch", "--out", ""])  # doctest: +SKIP
        0
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=MODELS, choices=MODELS)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--et-venv", type=Path, default=Path("/tmp/et-venv"))
    ap.add_argument("--no-create-venv", action="store_true", help="do not create the ExecuTorch venv if missing")
    ap.add_argument("--no-executorch", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "edge.json"))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    console = Console()
    work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    rows: dict[str, dict[str, Any]] = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("torchship + eager", total=len(args.models))
        for name in args.models:
            model, inputs, dyn = _model(name)
            with torch.no_grad():
                ref = model(*inputs)
                eager = _median_ms(lambda m=model, i=inputs: m(*i), args.repeat)
            prog = export(model, inputs, dynamic_shapes=dyn)
            path = prog.save(work / f"{name}.tsp")
            loads = []
            for _ in range(max(3, args.repeat // 2)):
                t = time.perf_counter()
                runtime = load(path)
                loads.append(time.perf_counter() - t)
            arrays = [x.numpy() for x in inputs]
            got = runtime.run(*arrays)
            err = float(np.abs(got - ref.numpy()).max() / np.abs(ref.numpy()).max())
            ours = _median_ms(lambda r=runtime, a=arrays: r.run(*a), args.repeat)
            method = runtime.method("forward")
            rows[name] = {
                "torchship": {"latency_ms": ours, "load_ms": float(np.median(loads)) * 1e3, "file_bytes": path.stat().st_size,
                              "planned_bytes": method.arena_bytes(), "tensor_bytes": method.tensor_bytes(), "rel_err": err},
                "eager": {"latency_ms": eager},
            }
            ep = torch.export.export(model, inputs)  # static shapes for ExecuTorch
            torch.export.save(ep, work / f"{name}.pt2")
            for i, x in enumerate(arrays):
                np.save(work / f"{name}_in{i}.npy", x)
            np.save(work / f"{name}_ref.npy", ref.numpy())
            progress.advance(task)
    if not args.no_executorch:
        if ensure_et_venv(args.et_venv, not args.no_create_venv, console):
            with console.status("ExecuTorch: lowering (portable, XNNPACK) and timing in its venv..."):
                proc = subprocess.run([str(args.et_venv / "bin" / "python"), "-c", _ET_CHILD, str(work), str(args.repeat), *args.models],
                                      capture_output=True, text=True)
            if proc.returncode != 0:
                console.print(f"[red]ExecuTorch child failed:[/]\n{proc.stderr[-3000:]}")
                return 1
            for key, value in json.loads(proc.stdout.strip().splitlines()[-1]).items():
                name, variant = key.split("/")
                rows[name][f"et_{variant}"] = value
        else:
            console.print(f"[yellow]no ExecuTorch venv at {args.et_venv}: ExecuTorch columns skipped")
    _table(console, rows)
    result = {"machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version(),
                          "torch": torch.__version__, "numpy": np.__version__},
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "repeat": args.repeat, "models": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
        console.print(f"wrote {args.out}")
    return 0


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
                "load ms (ours | ET xnn)", "arena KiB (ours | ET xnn)", "file KiB (ours | ET xnn)", "rel err"):
        t.add_column(col, justify="right")
    for name, r in rows.items():
        ours, p, x = r["torchship"], r.get("et_portable"), r.get("et_xnnpack")
        f = lambda d, k, s=1.0: f"{d[k] / s:.2f}" if d else "-"  # noqa: E731
        t.add_row(
            name, f"{ours['latency_ms']:.2f}", f"{r['eager']['latency_ms']:.2f}", f(p, "latency_ms"), f(x, "latency_ms"),
            f"{ours['latency_ms'] / p['latency_ms']:.2f}x" if p else "-", f"{ours['latency_ms'] / x['latency_ms']:.2f}x" if x else "-",
            f"{ours['load_ms']:.2f} | {f(x, 'load_ms')}", f"{ours['planned_bytes'] / 1024:.0f} | {f(x, 'planned_bytes', 1024)}",
            f"{ours['file_bytes'] / 1024:.0f} | {f(x, 'file_bytes', 1024)}", f"{ours['rel_err']:.1e}",
        )
    console.print(t)


if __name__ == "__main__":
    sys.exit(main())
