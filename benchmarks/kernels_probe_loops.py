"""How wide should an inner loop's block be? (issue 6, GPU only)

Cross entropy streams each row of logits through an online log-sum-exp, one loop block at a
time. The autotuner searched loop blocks up to 4096 wide; on a GPU it now searches up to
32768, so a 32000-word row can be one block (no rescaling per tile). For cross entropy at the
examples' two shapes (bf16) this times, in two interleaved rounds after a warm-up: the
default config, loop blocks 2048-32768 on 4, 8 and 16 warps with 1 or 2 stages, and then
what the autotuner picks from a fresh cache (effort quick, 10 s budget). Every config's
output is checked against torch first. Writes ``OUT/kernels_probe_loops.json``.

Example:
    $ python benchmarks/kernels_probe_loops.py --out bench-out
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.kernels_probe_ce import copy_bandwidth  # noqa: E402
from examples.kernels import load  # noqa: E402
from torchship.kernels.autotune.timing import CudaEventTimer  # noqa: E402


def _case(mod: Any, kernel: Any, key: str, timer: Any, copy_bw: float) -> dict[str, Any]:
    """Time one shape's configs and the autotuner's pick; print the fastest."""
    logits, labels = mod.make_inputs(key, "cuda", torch.bfloat16, seed=0)
    nbytes = mod.BYTES((logits, labels))
    ref = mod.reference(logits, labels)
    bound = kernel.bind((logits, labels))
    default = bound.config_space.default()
    configs: dict[str, Any] = {"default": default}
    for block in (2048, 4096, 8192, 16384, 32768):
        for warps in (4, 8, 16):
            for stages in (1, 2):
                cfg = default.to_dict() | {"block_sizes": [1, block], "num_warps": warps,
                                           "num_stages": stages}
                configs[f"{block}/{warps}w/{stages}s"] = type(default).from_dict(cfg)
    fns: dict[str, Any] = {"torch eager": lambda: mod.reference(logits, labels)}
    for name, cfg in configs.items():
        if not bound.config_space.is_valid(cfg):
            continue
        try:
            run = bound.compile(cfg)
            got = run(logits, labels)
            torch.cuda.synchronize()
            assert (got - ref).abs().max().item() < 1e-3, "wrong result"
            fns[name] = lambda run=run: run(logits, labels)
        except Exception as exc:  # noqa: BLE001 - a config this GPU cannot run
            print(f"  fail {name}: {str(exc)[:160]}", flush=True)
    times: dict[str, list[float]] = {n: [] for n in fns}
    for _ in range(2):
        for name, fn in fns.items():
            times[name].append(timer.measure(fn, None) * 1e3)
    best = {n: min(v) for n, v in times.items()}
    t0 = time.perf_counter()
    tuned = kernel.autotune((logits, labels), effort="quick", budget_s=10)
    tune_s = time.perf_counter() - t0
    tuned_run = bound.compile(tuned)
    tuned_us = min(timer.measure(lambda: tuned_run(logits, labels), None) * 1e3
                   for _ in range(2))
    print(f"== cross entropy {key} {tuple(logits.shape)}: µs, % of copy bandwidth", flush=True)
    for name, us in sorted(best.items(), key=lambda kv: kv[1])[:12]:
        print(f"  {name:16s} {us:8.1f}  {100 * nbytes / (us * 1e-6) / copy_bw:5.1f}%",
              flush=True)
    print(f"  default          {best.get('default', float('nan')):8.1f}", flush=True)
    print(f"  autotuned        {tuned_us:8.1f}  after {tune_s:.1f} s: "
          f"{tuned.block_sizes}/{tuned.num_warps}w/{tuned.num_stages}s", flush=True)
    return {"shape_key": key, "shape": list(logits.shape), "bytes": nbytes, "us": times,
            "best_us": best, "tuned": tuned.to_dict(), "tuned_us": tuned_us, "tune_s": tune_s}


def main(argv: list[str] | None = None) -> int:
    """Time the configs, run the autotuner, write the JSON.

    Example:
        >>> main(["--out", "bench-out"])  # doctest: +SKIP
        0
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-out")
    opts = p.parse_args(argv)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHSHIP_CACHE_DIR"] = tempfile.mkdtemp(prefix="probe-loops-")
    timer = CudaEventTimer(target_ms=60.0, host_floor=False)
    timer.prepare("cuda")
    copy_bw = copy_bandwidth(timer)
    print(f"copy {copy_bw / 1e12:.3f} TB/s  ({torch.cuda.get_device_name()})", flush=True)
    mod = load("cross_entropy")
    kernel, _ = mod.VARIANTS["cross_entropy"]
    res: dict[str, Any] = {"device": torch.cuda.get_device_name(), "copy_TBps": copy_bw / 1e12,
                           "cases": []}
    for key in ("gpu_small", "gpu_large"):
        res["cases"].append(_case(mod, kernel, key, timer, copy_bw))
    (out / "kernels_probe_loops.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
