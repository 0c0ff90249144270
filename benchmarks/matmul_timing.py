"""How stable is the bf16 matmul 4096^3 comparison with cuBLAS? (issue 6, GPU only)

The suite (``benchmarks/kernels.py``) times matmul 4096^3 after several minutes of load, and
its figure for our kernel moves between runs (183-210 us) while cuBLAS stays at 177-181 us.
This script times one config of ours (128x256x64, 8 warps, 3 stages: the search's usual pick)
against ``torch.mm`` alternately, with two timer budgets, on other tensors of the same layout,
on zeros (power draw), and after an autotune burst, recording SM clock, power and temperature
(``nvidia-smi``) with each figure. Writes ``OUT/matmul_timing.json`` and prints a table.

Example:
    $ python benchmarks/matmul_timing.py --out bench-out
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def gpu_state() -> str:
    """SM clock, power draw, temperature and active clock-throttle reasons now (bitmask:
    0x4 = software power cap, 0x20/0x40 = thermal), as ``nvidia-smi`` reports them.

    Example:
        >>> isinstance(gpu_state(), str)
        True
    """
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=clocks.sm,power.draw,temperature.gpu,"
             "clocks_throttle_reasons.active",
             "--format=csv,noheader"], capture_output=True, text=True, check=False,
        ).stdout.strip()
    except OSError as exc:
        return f"unavailable ({exc})"


def main(argv: list[str] | None = None) -> int:
    """Run every measurement and write the JSON.

    Example:
        >>> main(["--out", "bench-out"])  # doctest: +SKIP
        0
    """
    import torch
    from rich.console import Console
    from rich.table import Table

    from examples.kernels import load
    from torchship.kernels.autotune import AutotuneCache, autotune
    from torchship.kernels.autotune.timing import CudaEventTimer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-out")
    p.add_argument("--rounds", type=int, default=4)
    opts = p.parse_args(argv)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    mod = load("matmul")
    kernel, _ = mod.VARIANTS["matmul"]
    a, b = mod.make_inputs("gpu_large", "cuda", torch.bfloat16, seed=0)
    bound = kernel.bind((a, b))
    config = bound.config_space.default().replace(block_sizes=[128, 256, 64], num_warps=8,
                                                  num_stages=3)
    ours = bound.compile(config)
    timers = {"100 ms": CudaEventTimer(target_ms=100.0, host_floor=False),
              "40 ms": CudaEventTimer(target_ms=40.0, host_floor=False)}
    for t in timers.values():
        t.prepare("cuda")
    rows: list[dict[str, Any]] = []

    def record(what: str, impl: str, timer: str, fn: Any) -> None:
        us = timers[timer].measure(fn, None) * 1e3
        rows.append({"what": what, "impl": impl, "timer": timer, "us": us, "gpu": gpu_state()})

    for r in range(opts.rounds):
        for impl, fn in (("ours", lambda: ours(a, b)), ("torch.mm", lambda: torch.mm(a, b))):
            for timer in timers:
                record(f"alternating, round {r}", impl, timer, fn)
    a2, b2 = a.clone(), b.clone()
    for r in range(3):
        record(f"cloned inputs, round {r}", "ours", "100 ms", lambda: ours(a2, b2))
    z1, z2 = torch.zeros_like(a), torch.zeros_like(b)
    record("zero inputs", "ours", "100 ms", lambda: ours(z1, z2))
    record("zero inputs", "torch.mm", "100 ms", lambda: torch.mm(z1, z2))
    rep = autotune(bound, (a, b), effort="quick", budget_s=8, kernel=kernel, seeds=[config],
                   cache=AutotuneCache(tempfile.mkdtemp()), force=True, progress=False)
    search = sorted((r.time_ms * 1e3, str(r.config)) for r in rep.results if r.status == "ok")
    record("after an 8 s autotune", "ours", "100 ms", lambda: ours(a, b))
    record("after an 8 s autotune", "torch.mm", "100 ms", lambda: torch.mm(a, b))
    result = {"device": torch.cuda.get_device_name(), "config": str(config), "rows": rows,
              "search_top": search[:5]}
    (out / "matmul_timing.json").write_text(json.dumps(result, indent=1))
    table = Table(title=f"bf16 matmul 4096^3 on {result['device']}")
    for col in ("measurement", "impl", "timer", "µs", "SM clock, power, temp, throttle"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["what"], row["impl"], row["timer"], f"{row['us']:.1f}", row["gpu"])
    Console(width=160).print(table)
    print("search's own timings of its top configs (µs):", [round(t, 1) for t, _ in search[:5]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
