"""Do our own dot-kernel configs rank the same in a burst and under sustained load? (issue 6,
GPU only)

For bf16 matmul 4096^3, bmm 32x2048^2 and matmul 2048^2 (the examples' shapes), fourteen
torchship configs (the default; 128x256, 256x128, 128x128 and 128x128x128 tiles; 3 or 4
stages; flat, persistent or warp-specialised persistent programs; pointer loads or tensor
descriptors) and ``torch.matmul`` are each timed once in a burst (after 0.3 s idle), then in
4 interleaved rounds after 2 s of back-to-back ``torch.matmul`` (the card at its sustained,
power-capped clock), then 200 calls back to back without flushes (host-bound launches show
there), with SM clock, power and throttle reasons from ``nvidia-smi``. Writes
``OUT/NAME.json`` (``--name``, default kernels_probe_configs).

Example:
    $ python benchmarks/kernels_probe_configs.py --out bench-out
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.matmul_timing import gpu_state  # noqa: E402
from examples.kernels import load  # noqa: E402
from torchship.kernels.autotune.timing import CudaEventTimer  # noqa: E402


def candidates(default: Any) -> dict[str, Any]:
    """The configs timed, by name, as variants of the kernel's default.

    Example:
        >>> # candidates(bound.config_space.default())["128x256 s4 g8"]
    """
    def tiles(m: int, n: int, k: int = 64, **knobs: Any) -> Any:
        return default.replace(block_sizes=[m, n, k], num_warps=knobs.pop("num_warps", 8),
                               l2_grouping=knobs.pop("l2_grouping", 8), **knobs)

    return {
        "default": default,
        "128x256 s3 g8": tiles(128, 256, num_stages=3),
        "128x256 s4 g8": tiles(128, 256, num_stages=4),
        "128x256 s4 g16 pers": tiles(128, 256, num_stages=4, l2_grouping=16,
                                     pid_type="persistent"),
        "128x256 s3 g8 pers": tiles(128, 256, num_stages=3, pid_type="persistent"),
        "256x128 s3 g8": tiles(256, 128, num_stages=3),
        "128x128 s4 g8": tiles(128, 128, num_stages=4),
        "128x128 s3 w4": tiles(128, 128, num_stages=3, num_warps=4),
        "128x256 s3 g8 td": tiles(128, 256, num_stages=3, indexing="tensor_descriptor"),
        "128x256 s3 g8 td pers": tiles(128, 256, num_stages=3, indexing="tensor_descriptor",
                                       pid_type="persistent"),
        "128x256 s4 g8 td pers": tiles(128, 256, num_stages=4, indexing="tensor_descriptor",
                                       pid_type="persistent"),
        "128x256 s3 g8 td ws": tiles(128, 256, num_stages=3, indexing="tensor_descriptor",
                                     pid_type="persistent_ws"),
        "128x256 s4 g8 td ws": tiles(128, 256, num_stages=4, indexing="tensor_descriptor",
                                     pid_type="persistent_ws"),
        "128x128x128 s3": tiles(128, 128, 128, num_stages=3),
    }


def back_to_back(fn: Any, calls: int = 200) -> float:
    """Mean µs per call of ``calls`` launches with no flush or sync between them: where the
    host cannot launch as fast as the device runs, this is host time (the L2-flushed timings
    hide it).

    Example:
        >>> # back_to_back(lambda: torch.mm(a, b))
    """
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / calls * 1e3


def main(argv: list[str] | None = None) -> int:
    """Time every case and write the JSON.

    Example:
        >>> main(["--out", "bench-out"])  # doctest: +SKIP
        0
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-out")
    p.add_argument("--name", default="kernels_probe_configs", help="JSON file name (no .json)")
    opts = p.parse_args(argv)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    timer = CudaEventTimer(target_ms=40.0, host_floor=False)
    timer.prepare("cuda")
    res = {}
    for ex, var, key in [("matmul", "matmul", "gpu_large"), ("bmm", "bmm", "gpu_large"),
                         ("matmul", "matmul", "gpu_small")]:
        mod = load(ex)
        kernel, _ = mod.VARIANTS[var]
        a, b = mod.make_inputs(key, "cuda", torch.bfloat16, seed=0)
        bound = kernel.bind((a, b))
        cands = candidates(bound.config_space.default())
        fns: dict[str, Any] = {"torch.mm": lambda a=a, b=b: torch.matmul(a, b)}
        ref = torch.matmul(a, b).float()
        for name, cfg in cands.items():
            try:
                f = bound.compile(cfg)
                o = f(a, b)
                assert ((o.float() - ref).norm() / ref.norm()).item() < 3e-2
                fns[name] = lambda f=f, a=a, b=b: f(a, b)
            except Exception as exc:  # noqa: BLE001 - a config this kernel cannot run
                print("fail", name, str(exc)[:200], flush=True)
        burst = {}
        for name, fn in fns.items():
            torch.cuda.synchronize()
            time.sleep(0.3)
            burst[name] = timer.measure(fn, None) * 1e3
        t0 = time.time()
        while time.time() - t0 < 2.0:
            for _ in range(20):
                torch.matmul(a, b)
            torch.cuda.synchronize()
        hot: dict[str, list[float]] = {name: [] for name in fns}
        states = []
        for _ in range(4):
            for name, fn in fns.items():
                hot[name].append(timer.measure(fn, None) * 1e3)
            states.append(gpu_state())
        med = {n: sorted(v)[len(v) // 2] for n, v in hot.items()}
        b2b = {name: back_to_back(fn) for name, fn in fns.items()}
        print(f"== {var} {key}: burst | hot (median of 4) | back-to-back | torch/ours; "
              f"nvidia-smi {states}", flush=True)
        for name in fns:
            print(f"  {name:22s} {burst[name]:8.1f} {med[name]:8.1f} {b2b[name]:8.1f}  burst "
                  f"{burst['torch.mm'] / burst[name]:.3f} hot {med['torch.mm'] / med[name]:.3f}"
                  f" b2b {b2b['torch.mm'] / b2b[name]:.3f}", flush=True)
        res[f"{var}_{key}"] = {"burst": burst, "hot": hot, "back_to_back": b2b, "states": states,
                               "configs": {n: c.to_dict() for n, c in cands.items()}}
    (out / f"{opts.name}.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
