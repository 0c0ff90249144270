"""Every example kernel on the GPU at its two realistic shapes, with the default config and a
few configs sampled from its ConfigSpace, against torch (float64 reference for float32
inputs, float32 for half types), plus a sweep of the grid/indexing knobs on matmul and softmax.

Writes one JSON record per case as it goes (so a run cut short still reports), and prints a
table. Also records the latency of the default config and of torch eager on the same inputs
(for orientation only: the tuned comparison lives in ``benchmarks/kernels.py``).

Run (GPU machine): ``python benchmarks/kernels_gpu_check.py --json out.json [--budget-s 420]``

Example:
    $ python benchmarks/kernels_gpu_check.py --only softmax --budget-s 60
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.kernels import EXAMPLES, load  # noqa: E402


def _ref_args(args: tuple[Any, ...], dtype: torch.dtype) -> list[Any]:
    work = torch.float64 if dtype == torch.float32 else torch.float32
    return [a.to(work) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in args]


def _compare(got: Any, want: Any, tol: dict[str, float]) -> tuple[bool, float, str]:
    got_t = got if isinstance(got, tuple) else (got,)
    want_t = want if isinstance(want, tuple) else (want,)
    worst = 0.0
    for g, w in zip(got_t, want_t):
        if g.shape != w.shape:
            return False, float("inf"), f"shape {tuple(g.shape)} != {tuple(w.shape)}"
        diff = (g.double() - w.double()).abs()
        worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
        try:
            torch.testing.assert_close(g.double(), w.double(), **tol)
        except AssertionError as exc:
            return False, worst, str(exc).splitlines()[0]
    return True, worst, ""


DEVICE = "cuda"
SHAPES: tuple[tuple[str, int], ...] = (("gpu_small", 3), ("gpu_large", 2))


def _time_us(fn: Any, reps: int = 20) -> float:
    if DEVICE != "cuda":
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e6
    fn()
    torch.cuda.synchronize()
    start = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for s, e in zip(start, end):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    times = sorted(s.elapsed_time(e) * 1000 for s, e in zip(start, end))
    return times[len(times) // 2]


def run_case(mod: Any, variant: str, kernel: Any, kwargs: dict[str, Any], shape_key: str,
             dtype: torch.dtype, configs_wanted: int, extra: list[Any] | None) -> list[dict]:
    args = mod.make_inputs(shape_key, DEVICE, dtype, seed=random.getrandbits(31))
    want = mod.reference(*_ref_args(args, dtype), **kwargs)
    bound = kernel.bind(args, kwargs)
    space = bound.config_space
    configs = [space.default()]
    rng = random.Random(hash((variant, shape_key)) & 0xFFFF)
    for _ in range(100):
        if len(configs) >= configs_wanted:
            break
        c = space.sample(rng)
        if c not in configs:
            configs.append(c)
    configs += [c for c in (extra or []) if space.is_valid(c) and c not in configs]
    out = []
    for i, cfg in enumerate(configs):
        rec: dict[str, Any] = {"variant": variant, "shape": shape_key, "dtype": str(dtype),
                               "config": cfg.to_dict(), "default": i == 0}
        t0 = time.perf_counter()
        try:
            run = bound.compile(cfg)
            got = run(*args, **kwargs)
            if DEVICE == "cuda":
                torch.cuda.synchronize()
            rec["compile_and_run_s"] = round(time.perf_counter() - t0, 3)
            ok, err, msg = _compare(got, want, mod.TOLERANCE[dtype])
            rec.update(ok=ok, max_abs_err=err, message=msg)
            if i == 0:
                rec["latency_us"] = _time_us(lambda: run(*args, **kwargs))  # noqa: B023
                rec["eager_us"] = _time_us(lambda: mod.reference(*args, **kwargs))
        except Exception as exc:  # report and go on: one bad config must not stop the run
            rec.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000],
                       trace=traceback.format_exc()[-3000:])
        out.append(rec)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=Path("bench-out/kernels_gpu_check.json"))
    parser.add_argument("--budget-s", type=float, default=420.0)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="check this script's logic on CPU (interpreter, 'test' shapes)")
    opts = parser.parse_args(argv)
    global DEVICE, SHAPES
    if opts.cpu_smoke:
        DEVICE, SHAPES = "cpu", (("test", 2), ("test", 1))
    elif not torch.cuda.is_available():
        print("needs a CUDA GPU (or --cpu-smoke)")
        return 2
    import triton

    meta = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "torch": torch.__version__,
            "triton": triton.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}
    records: list[dict] = []
    start = time.perf_counter()

    def save() -> None:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = opts.json.with_suffix(".tmp")
        tmp.write_text(json.dumps({"meta": meta, "records": records}, indent=1, default=str))
        tmp.replace(opts.json)

    from torchship.kernels import Config

    for example in EXAMPLES:
        mod = load(example)
        for variant, (kernel, kwargs) in mod.VARIANTS.items():
            if opts.only and example not in opts.only and variant not in opts.only:
                continue
            dtype = torch.bfloat16 if torch.bfloat16 in mod.DTYPES else mod.DTYPES[0]
            for shape_key, n_cfg in SHAPES:
                if time.perf_counter() - start > opts.budget_s:
                    records.append({"variant": variant, "shape": shape_key,
                                    "skipped": "time budget"})
                    continue
                extra = None
                if variant in ("matmul", "softmax") and shape_key == SHAPES[0][0]:
                    extra = "sweep"
                recs = run_case(mod, variant, kernel, kwargs, shape_key, dtype, n_cfg, None)
                if extra:
                    base = Config.from_dict(recs[0]["config"])
                    sweep = [base.replace(indexing=i) for i in
                             ("pointer", "block_ptr", "tensor_descriptor")]
                    sweep += [base.replace(pid_type="persistent")]
                    if base.reduction_loops:
                        sweep += [base.replace(reduction_loops=[256])]
                    if base.loop_orders:
                        sweep += [base.replace(loop_orders=[[1, 0]], l2_grouping=1)]
                    recs += run_case(mod, variant, kernel, kwargs, shape_key, dtype, 1,
                                     sweep)[1:]
                for r in recs:
                    status = "ok " if r.get("ok") else "BAD"
                    lat = f" {r['latency_us']:.1f}us (eager {r['eager_us']:.1f}us)" \
                        if "latency_us" in r else ""
                    print(f"{status} {variant:22s} {shape_key:9s} err={r.get('max_abs_err', '-')}"
                          f"{lat} {r.get('error', '')[:200]} {r['config']}", flush=True)
                records.extend(recs)
                save()
    float32_matmul = load("matmul")
    recs = run_case(float32_matmul, "matmul", *float32_matmul.VARIANTS["matmul"],
                    SHAPES[0][0], torch.float32, 2, None)
    for r in recs:
        print(f"{'ok ' if r.get('ok') else 'BAD'} matmul fp32 err={r.get('max_abs_err')} "
              f"{r.get('error', '')[:200]}", flush=True)
    records.extend(recs)
    save()
    bad = [r for r in records if "ok" in r and not r["ok"]]
    print(f"{len(records)} records, {len(bad)} failing, {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
