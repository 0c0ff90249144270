"""Pickle checkpoint -> safetensors: torchship's converter vs torch.load + safetensors save_file.

Writes a ``torch.save`` checkpoint (1 GiB of tensors by default: a transformer-like state dict
of float32/bf16 weights whose largest tensor is about 1/8 of the total), then converts it with
each approach in its own fresh subprocess, measuring wall time inside the child and peak RSS
of the child (``VmHWM`` read by the child itself at the end: ``ru_maxrss`` from ``os.wait4`` is
also recorded, but Linux carries the parent's RSS at fork into it across exec). An import-only child per approach gives the
baseline RSS, so "above baseline" is the memory the conversion itself needed. Approaches:

- ``torchship``: ``torchship.weights.pickle.convert`` (never executes the pickle), including
  the read-back verification (CRC-32 of every tensor);
- ``torchship --no-verify``: the same without reading the output back;
- ``torch.load + save_file``: ``torch.load(weights_only=True)`` then ``safetensors.torch.save_file``;
- ``torch.load(mmap) + save_file``: the same with ``mmap=True``.

Each output is checked (tensor-by-tensor equality with the first approach's output) before its
numbers count. Rounds are repeated and the median is reported. The page cache is warm for all
approaches (the checkpoint is read once before timing).

Example:
    $ python benchmarks/convert.py                  # 1 GiB, 3 rounds
    $ python benchmarks/convert.py --size-mib 64 --repeat 1 --out ''
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent

APPROACHES: dict[str, tuple[str, str]] = {
    # name -> (imports, work); work sees SRC and DST
    "torchship": ("from torchship.weights.pickle import convert",
                  "convert(SRC, DST)"),
    "torchship --no-verify": ("from torchship.weights.pickle import convert",
                              "convert(SRC, DST, verify=False)"),
    "torch.load + save_file": (
        "import torch\nfrom safetensors.torch import save_file",
        "sd = torch.load(SRC, weights_only=True)\nsave_file(sd, DST, metadata={'format': 'pt'})"),
    "torch.load(mmap) + save_file": (
        "import torch\nfrom safetensors.torch import save_file",
        "sd = torch.load(SRC, weights_only=True, mmap=True)\n"
        "save_file(sd, DST, metadata={'format': 'pt'})"),
}

CHILD = """
import sys, time, json
sys.path.insert(0, {root!r})
{imports}
SRC, DST = {src!r}, {dst!r}
t0, c0 = time.perf_counter(), time.process_time()
if {work_flag}:
{work}
seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({{"seconds": seconds, "cpu_s": cpu, "hwm_kib": int(hwm)}}))
"""


def make_checkpoint(path: Path, size_mib: int) -> dict[str, Any]:
    """A transformer-like state dict of ~size_mib MiB, saved with torch.save.

    Example: ``make_checkpoint(Path('/tmp/c.pt'), 64)['largest_mib']`` -> about 8.
    """
    import torch

    total = size_mib << 20
    hidden = 1024
    while 4 * hidden * hidden * 8 < total // 8 and hidden < 8192:
        hidden *= 2
    torch.manual_seed(0)
    sd: dict[str, torch.Tensor] = {}
    vocab_rows = max(1, (total // 8) // (hidden * 4))
    sd["embed.weight"] = torch.randn(vocab_rows, hidden)
    used = sd["embed.weight"].nbytes
    layer = 0
    while used < total:
        for name, shape, dtype in (("attn.qkv.weight", (3 * hidden, hidden), torch.bfloat16),
                                   ("attn.out.weight", (hidden, hidden), torch.float32),
                                   ("mlp.up.weight", (4 * hidden, hidden), torch.bfloat16),
                                   ("mlp.down.weight", (hidden, 4 * hidden), torch.bfloat16),
                                   ("norm.weight", (hidden,), torch.float32)):
            t = torch.randn(shape).to(dtype)
            if used + t.nbytes > total and layer > 0:
                break
            sd[f"layers.{layer}.{name}"] = t
            used += t.nbytes
        else:
            layer += 1
            continue
        break
    torch.save(sd, path)
    largest = max(t.nbytes for t in sd.values())
    return {"tensors": len(sd), "bytes": used, "largest_bytes": largest,
            "file_bytes": path.stat().st_size}


def run_child(name: str, src: Path, dst: Path, work: bool) -> dict[str, float]:
    """Run one approach (or only its imports) in a fresh interpreter; wall seconds + peak RSS.

    Example: ``run_child('torchship', src, dst, True)`` -> ``{'seconds': ..., 'rss_mib': ...}``.
    """
    imports, code = APPROACHES[name]
    body = "\n".join("    " + line for line in code.splitlines())
    script = CHILD.format(root=str(ROOT), imports=imports, src=str(src), dst=str(dst),
                          work=body, work_flag=work)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{err}")
    result = json.loads(out.strip().splitlines()[-1])
    # VmHWM is the child's own peak (its address space starts fresh at exec); wait4's
    # ru_maxrss would also count the parent's RSS at fork time, which Linux carries over exec
    result["rss_mib"] = result.pop("hwm_kib") / 1024
    result["ru_maxrss_mib"] = usage.ru_maxrss / 1024
    result["child_cpu_s"] = usage.ru_utime + usage.ru_stime  # whole child, imports included
    return result


def same_tensors(a: Path, b: Path) -> bool:
    """True when two safetensors files hold the same names, dtypes, shapes and bytes.

    Example: ``same_tensors(Path('a.safetensors'), Path('a.safetensors'))`` -> True.
    """
    from safetensors import safe_open

    with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
        if set(fa.keys()) != set(fb.keys()):
            return False
        import torch

        return all(torch.equal(fa.get_tensor(k), fb.get_tensor(k)) for k in fa.keys())  # noqa: SIM118


def main() -> int:
    """Run the benchmark and print/write the results. Example: see module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="checkpoint size (default 1 GiB)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each cell is the median")
    parser.add_argument("--dir", help="working directory (default: a temp dir, removed after)")
    parser.add_argument("--out", default="bench-out", help="folder for convert.json ('' to skip)")
    args = parser.parse_args()
    console = Console()
    tmp = tempfile.TemporaryDirectory(prefix="convert-bench-", dir=args.dir)
    work = Path(tmp.name)
    src = work / "pytorch_model.bin"
    with console.status(f"writing a {args.size_mib} MiB torch.save checkpoint"):
        info = make_checkpoint(src, args.size_mib)
    src.read_bytes()  # warm the page cache for every approach alike
    rows: dict[str, dict[str, list[float]]] = {}
    baselines: dict[str, float] = {}
    reference: Path | None = None
    with console.status("running") as status:
        for name in APPROACHES:
            status.update(f"{name}: import baseline")
            base = run_child(name, src, work / "none.safetensors", False)
            baselines[name] = base["rss_mib"]
        for r in range(args.repeat):
            for name in APPROACHES:
                status.update(f"round {r + 1}/{args.repeat}: {name}")
                dst = work / f"out-{len(rows.get(name, {}).get('seconds', []))}-{abs(hash(name))}.safetensors"
                res = run_child(name, src, dst, True)
                if reference is None:
                    reference = dst
                elif r == 0 and not same_tensors(reference, dst):
                    raise SystemExit(f"{name}: output differs from {reference}")
                cell = rows.setdefault(name, {"seconds": [], "rss_mib": [], "cpu_s": []})
                cell["seconds"].append(res["seconds"])
                cell["cpu_s"].append(res["cpu_s"])  # process CPU time of the work, all threads
                cell["rss_mib"].append(res["rss_mib"])
                if dst != reference:
                    dst.unlink()
    largest_mib = info["largest_bytes"] / 2**20
    peer = "torch.load + save_file"
    peer_s = statistics.median(rows[peer]["seconds"])
    peer_min = min(rows[peer]["seconds"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    table = Table(title=f"pickle -> safetensors, {info['bytes'] / 2**30:.2f} GiB in {info['tensors']} "
                  f"tensors (largest {largest_mib:.0f} MiB), {args.repeat} rounds, "
                  f"load average {load:.1f} on {os.cpu_count()} cpus")
    for col in ("approach", "wall s median", "wall s min", "speed-up (median, min)",
                "CPU s median", "peak RSS MiB", "above import baseline MiB", "x largest tensor"):
        table.add_column(col, justify="right" if col != "approach" else "left")
    summary: dict[str, Any] = {}
    for name, cell in rows.items():
        s = statistics.median(cell["seconds"])
        fastest = min(cell["seconds"])
        cpu = statistics.median(cell["cpu_s"])
        rss = statistics.median(cell["rss_mib"])
        above = rss - baselines[name]
        summary[name] = {"seconds": s, "seconds_min": fastest, "seconds_all": cell["seconds"],
                         "cpu_s": cpu, "cpu_s_all": cell["cpu_s"], "peak_rss_mib": rss,
                         "baseline_rss_mib": baselines[name], "above_baseline_mib": above,
                         "speedup_vs_peer": peer_s / s, "speedup_vs_peer_min": peer_min / fastest,
                         "above_baseline_x_largest": above / largest_mib}
        table.add_row(name, f"{s:.2f}", f"{fastest:.2f}", f"{peer_s / s:.2f}x, {peer_min / fastest:.2f}x",
                      f"{cpu:.2f}", f"{rss:.0f}", f"{above:.0f}", f"{above / largest_mib:.2f}")
    console.print(table)
    result = {"benchmark": "convert", "load_average": load, "dir": str(work), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.platform()}",
              "python": platform.python_version(), "checkpoint": info, "repeat": args.repeat,
              "results": summary}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "convert.json").write_text(json.dumps(result, indent=2))
        console.print(f"wrote {out / 'convert.json'}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
