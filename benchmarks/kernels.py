"""GPU benchmark of torchship.kernels against torch eager, torch.compile and Helion (issues 4, 6).

For each case (example variant x shape x dtype), in one process on one GPU:

- ``eager``: the example's torch ``reference`` (attention: ``F.scaled_dot_product_attention``);
- ``compile``: ``torch.compile(reference, mode="max-autotune-no-cudagraphs")`` (compile seconds);
- ``helion``: the same kernel written in Helion (benchmarks/helion_kernels.py), autotuned at
  effort quick with a time cap (its autotune seconds), or Helion's default config;
- ``ours``: the torchship kernel with its default (heuristic) config, and ``ours_tuned``:
  after ``torchship.kernels.autotune`` at effort quick (its autotune seconds).

Every output is checked against a float32 reference (relative L2 error) before it is timed;
timings are medians of CUDA-event-timed launches with an L2 flush before each, taken in
interleaved rounds (every implementation once per round; the median round counts). Ceilings are
measured in the same run (device copy bandwidth; bf16 torch.mm 8192^3). Results are written to
``OUT/kernels.json`` after each case (a crash loses one case: a driver process restarts the
worker after the case that died) and a table to ``OUT/kernels.md`` (benchmarks/kernels_report.py,
which also merges the parts of a suite run as ``--part 1/2`` and ``--part 2/2``).

Example:
    $ python benchmarks/kernels.py --out bench-out --deadline-s 520
    $ python benchmarks/kernels.py --out /tmp/b --device cpu --dry   # CPU smoke (interpreters)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.kernels_report import helion_prev, report  # noqa: E402

# (example module, variant, dtype name): every variant runs at both realistic shape keys
_VARIANTS: list[tuple[str, str, str]] = [
    ("attention", "attention", "bfloat16"), ("attention", "attention_causal", "bfloat16"),
    ("softmax", "softmax", "bfloat16"), ("softmax", "softmax_two_pass", "bfloat16"),
    ("rms_norm", "rms_norm", "bfloat16"), ("layer_norm", "layer_norm", "bfloat16"),
    ("matmul", "matmul", "bfloat16"), ("matmul_epilogue", "matmul_bias_relu", "bfloat16"),
    ("bmm", "bmm", "bfloat16"), ("add", "add", "bfloat16"),
    ("cross_entropy", "cross_entropy", "bfloat16"), ("swiglu", "swiglu", "bfloat16"),
    ("geglu", "geglu", "bfloat16"), ("embedding", "embedding", "bfloat16"),
    ("welford", "var_mean", "float32"), ("sum", "sum", "bfloat16"),
    ("sum", "long_sum", "float32"),
]
# (example module, variant, shape key, dtype name, tune helion): Helion is autotuned (effort
# quick, capped) where the flag is set or the variant is named in --helion-tune; elsewhere
# its default config runs (a full Helion quick search costs 80-100 s a kernel)
CASES: list[tuple[str, str, str, str, bool]] = [
    (example, variant, key, dtype, variant == "attention" and key == "gpu_small")
    for example, variant, dtype in _VARIANTS for key in ("gpu_small", "gpu_large")
]
TOL = {"float32": 2e-3, "float16": 1e-2, "bfloat16": 3e-2}


def _versions() -> dict[str, str]:
    import torch
    import triton

    out = {"torch": torch.__version__, "triton": triton.__version__, "python": sys.version.split()[0]}
    try:
        from importlib.metadata import version

        out["helion"] = version("helion")
    except Exception as exc:  # noqa: BLE001
        out["helion"] = f"unavailable ({exc})"
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
        out["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    return out


class Bench:
    """Times callables the same way for every implementation."""

    def __init__(self, device: str) -> None:
        from torchship.kernels.autotune.timing import CudaEventTimer, WallTimer

        self.device = device
        self.timer = CudaEventTimer(target_ms=100.0, host_floor=False) if device == "cuda" \
            else WallTimer(reps=3)
        self.timer.prepare(device)

    def ms(self, fn: Any) -> float:
        return self.timer.measure(fn, None)

    def sync(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()


def ceilings(bench: Bench) -> dict[str, float]:
    """Copy bandwidth (bytes read + written) and bf16 torch.mm rate, measured now."""
    import torch

    n = (1 << 30) if bench.device == "cuda" else (1 << 22)
    src = torch.randn(n // 2, device=bench.device, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    t = bench.ms(lambda: dst.copy_(src))
    copy_gbs = 2 * src.numel() * 2 / (t * 1e-3) / 1e9
    s = 8192 if bench.device == "cuda" else 256
    a = torch.randn(s, s, device=bench.device, dtype=torch.bfloat16)
    b = torch.randn(s, s, device=bench.device, dtype=torch.bfloat16)
    t = bench.ms(lambda: torch.mm(a, b))
    mm_tflops = 2 * s**3 / (t * 1e-3) / 1e12
    return {"copy_GBps": copy_gbs, "mm_bf16_TFLOPs": mm_tflops, "mm_size": s}


def _flat(out: Any) -> list[Any]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def rel_err(out: Any, ref: Any) -> float:
    """Largest relative L2 error over the outputs (NaN -> inf)."""
    worst = 0.0
    for o, r in zip(_flat(out), _flat(ref)):
        o64, r64 = o.detach().double(), r.detach().double()
        if o64.shape != r64.shape:
            return math.inf
        num = float((o64 - r64).norm())
        den = max(float(r64.norm()), 1e-30)
        e = num / den
        worst = max(worst, e if math.isfinite(e) else math.inf)
    return worst


def _upcast(args: tuple[Any, ...]) -> tuple[Any, ...]:
    import torch

    return tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                 for a in args)


def eager_fn(mod: Any, variant: str, kw: dict[str, Any]) -> Any:
    import torch.nn.functional as F  # noqa: N812

    if variant.startswith("attention"):
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=bool(kw.get("causal")))
    return lambda *a: mod.reference(*a, **kw)


def run_case(case: tuple[str, str, str, str, bool], bench: Bench, opts: argparse.Namespace,
             ceil: dict[str, float], deadline: float) -> dict[str, Any]:
    import torch

    from examples.kernels import load
    from torchship.kernels.autotune import AutotuneCache, autotune
    from torchship.kernels.autotune.records import config_dict

    mod_name, variant, shape_key, dtype_name, tune_helion = case
    if opts.shape_key:
        shape_key = opts.shape_key
    dtype = getattr(torch, dtype_name)
    mod = load(mod_name)
    kernel, kw = mod.VARIANTS[variant]
    args = tuple(mod.make_inputs(shape_key, bench.device, dtype, seed=0))
    row: dict[str, Any] = {"example": mod_name, "variant": variant, "shape_key": shape_key,
                           "dtype": dtype_name,
                           "shapes": [list(a.shape) for a in args if isinstance(a, torch.Tensor)]}
    nbytes, flops = mod.BYTES(args, **kw), mod.FLOPS(args, **kw)
    row["bytes"], row["flops"] = nbytes, flops
    ridge = ceil["mm_bf16_TFLOPs"] * 1e12 / (ceil["copy_GBps"] * 1e9)
    row["bound"] = "compute" if flops / max(nbytes, 1) > ridge / 4 else "memory"
    ref = mod.reference(*_upcast(args), **kw)
    bench.sync()
    tol = TOL[dtype_name]
    impls: dict[str, dict[str, Any]] = {}
    row["impls"] = impls

    timed: dict[str, Any] = {}  # checked implementations, timed together at the end

    def measure(name: str, fn: Any, **extra: Any) -> None:
        rec: dict[str, Any] = dict(extra)
        impls[name] = rec
        try:
            out = fn(*args)
            bench.sync()
            rec["err"] = rel_err(out, ref)
            if not rec["err"] <= tol:
                rec["status"] = f"wrong (rel err {rec['err']:.3g} > {tol})"
                return
            del out
            rec["status"] = "ok"
            timed[name] = fn
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            rec["status"] = f"error: {type(exc).__name__}: {str(exc)[:300]}"
            rec["traceback"] = traceback.format_exc()[-1500:]

    def time_all() -> None:
        """Time every checked implementation in interleaved rounds (median of the rounds), so
        none is timed alone right after a tuning burst and all see the same GPU state."""
        rounds: dict[str, list[float]] = {name: [] for name in timed}
        for _ in range(opts.rounds):
            for name, fn in timed.items():
                try:
                    rounds[name].append(bench.ms(lambda fn=fn: fn(*args)))
                except Exception as exc:  # noqa: BLE001
                    impls[name].update(status=f"error: {type(exc).__name__}: {str(exc)[:300]}",
                                       traceback=traceback.format_exc()[-1500:])
        for name, times in rounds.items():
            rec = impls[name]
            if rec["status"] != "ok" or not times:
                continue
            ms = sorted(times)[len(times) // 2]
            rec.update(ms=ms, rounds_ms=times, GBps=nbytes / (ms * 1e-3) / 1e9,
                       TFLOPs=flops / (ms * 1e-3) / 1e12)
            if row["bound"] == "memory":
                rec["pct_ceiling"] = 100 * rec["GBps"] / ceil["copy_GBps"]
            else:
                rec["pct_ceiling"] = 100 * rec["TFLOPs"] / ceil["mm_bf16_TFLOPs"]

    def left() -> float:
        return deadline - time.monotonic()

    measure("eager", eager_fn(mod, variant, kw))
    # ours, default config
    try:
        bound = kernel.bind(args) if not kw else _bind(kernel, args, kw)
        default = bound.config_space.default()
        fn_default = bound.compile(default)
        measure("ours_default", lambda *a: fn_default(*a, **kw), config=config_dict(default))
        hand = _hand_picked(variant, shape_key, dtype_name, bound)
        if hand is not None:
            fn_hand = bound.compile(hand)
            measure("ours_hand", lambda *a: fn_hand(*a, **kw), config=config_dict(hand))
    except Exception as exc:  # noqa: BLE001
        impls["ours_default"] = {"status": f"error: {type(exc).__name__}: {str(exc)[:300]}",
                                 "traceback": traceback.format_exc()[-1500:]}
        bound = None
    # ours, autotuned
    if bound is not None and left() > opts.ours_budget + 20:
        try:
            t0 = time.perf_counter()
            hand = _hand_picked(variant, shape_key, dtype_name, bound)
            rep = autotune(bound, args, effort="quick", budget_s=opts.ours_budget, kernel=kernel,
                           seeds=[hand] if hand is not None else None,
                           kwargs=kw, cache=AutotuneCache(opts.cache_dir), force=True,
                           progress=False, keep_workers=True)
            tune_s = time.perf_counter() - t0
            fn_best = bound.compile(rep.config)
            statuses: dict[str, int] = {}
            for r in rep.results:
                statuses[r.status] = statuses.get(r.status, 0) + 1
            measure("ours_tuned", lambda *a: fn_best(*a, **kw), tune_s=tune_s,
                    evaluated=len(rep.results), statuses=statuses, stop=rep.stop_reason,
                    config=config_dict(rep.config), search_best_ms=rep.best_ms,
                    default_search_ms=rep.default_ms, curve=rep.best_curve(),
                    confirmed=rep.confirmed,
                    candidates=[{k: v for k, v in r.to_json().items() if k != "error"}
                                | {"error": r.error[:160]} for r in rep.results])
        except Exception as exc:  # noqa: BLE001
            impls["ours_tuned"] = {"status": f"error: {type(exc).__name__}: {str(exc)[:300]}",
                                   "traceback": traceback.format_exc()[-1500:]}
    # torch.compile
    if not opts.no_compile and left() > 40:
        try:
            compiled = torch.compile(eager_fn(mod, variant, kw), mode=opts.compile_mode)
            t0 = time.perf_counter()
            compiled(*args)
            bench.sync()
            measure("compile", compiled, compile_s=time.perf_counter() - t0, mode=opts.compile_mode)
        except Exception as exc:  # noqa: BLE001
            impls["compile"] = {"status": f"error: {type(exc).__name__}: {str(exc)[:300]}"}
    # Helion
    if not opts.no_helion:
        try:
            from benchmarks.helion_kernels import make

            tune = (tune_helion or variant in opts.helion_tune.split(",")) and (
                not opts.helion_default_only and left() > opts.helion_cap + 30)
            if tune:
                hk = make(variant, effort=opts.helion_effort, budget_s=opts.helion_cap)
            else:
                hk = make(variant, effort="none")
            hargs = args
            t0 = time.perf_counter()
            hk(*hargs)
            bench.sync()
            first_s = time.perf_counter() - t0
            measure("helion", hk, tune_s=first_s if tune else None,
                    effort=opts.helion_effort if tune else "none (default config)",
                    cap_s=opts.helion_cap if tune else None, config=_helion_config(hk, hargs))
        except Exception as exc:  # noqa: BLE001
            impls["helion"] = {"status": f"error: {type(exc).__name__}: {str(exc)[:300]}",
                               "traceback": traceback.format_exc()[-1500:]}
    time_all()
    return row


def _hand_picked(variant: str, shape_key: str, dtype_name: str, bound: Any) -> Any:
    """K2's hand-picked H100 config for this case (benchmarks/kernels_examples.py), or None."""
    try:
        from benchmarks.kernels_examples import find_case, hand_picked_config

        case = find_case(variant, shape_key, dtype_name)
        if case is None:
            return None
        config, _notes = hand_picked_config(case, bound)
        return None if config == bound.config_space.default() else config
    except Exception:  # noqa: BLE001 - optional helper of another file
        return None


def _helion_config(hk: Any, args: tuple[Any, ...]) -> str | None:
    """The config Helion ran (its tuned winner), as Helion prints it; None where unknown."""
    try:
        config = hk.bind(args)._config  # no public accessor in Helion 1.4
    except Exception:  # noqa: BLE001 - only a record
        return None
    return None if config is None else str(config)


def _bind(kernel: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    try:
        return kernel.bind(args, kw)
    except TypeError:
        return kernel.bind(tuple(args) + tuple(kw.values()))


def worker(opts: argparse.Namespace) -> int:
    """Run cases ``opts.start..`` in order, appending each result to the JSON as it finishes."""
    out_dir = Path(opts.out)
    state_path = out_dir / "kernels.json"
    state = json.loads(state_path.read_text())
    bench = Bench(opts.device)
    if "ceilings" not in state:
        state["ceilings"] = ceilings(bench)
        state["versions"] = _versions()
        _save(state_path, state)
    if opts.device == "cuda":
        # start the autotuner's worker processes once (imports, CUDA init): a long-lived
        # process tuning several kernels pays this once; recorded separately
        from torchship.kernels.autotune import prewarm

        state.setdefault("prewarm_s", []).append(prewarm(None, "cuda"))
        _save(state_path, state)
    deadline = time.monotonic() + opts.remaining_s
    cases = _selected(opts)
    for i in range(opts.start, len(cases)):
        if deadline - time.monotonic() < 15:
            state.setdefault("skipped", []).append(list(cases[i][:4]))
            continue
        (out_dir / "current_case").write_text(str(i))
        t0 = time.perf_counter()
        row = run_case(cases[i], bench, opts, state["ceilings"], deadline)
        row["case_s"] = time.perf_counter() - t0
        state["cases"].append(row)
        _save(state_path, state)
        print(_row_text(row), flush=True)
        import torch

        if opts.device == "cuda":
            try:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
            except Exception as exc:  # noqa: BLE001 - a poisoned context: restart the worker
                print(f"CUDA context unusable after case {i} ({exc}); restarting", flush=True)
                os._exit(3)
    (out_dir / "current_case").write_text("done")
    return 0


def _selected(opts: argparse.Namespace) -> list[tuple[str, str, str, str, bool]]:
    cases = CASES
    if opts.only:
        names = set(opts.only.split(","))
        cases = [c for c in cases if {c[0], c[1], f"{c[1]}:{c[2]}"} & names]
    if opts.part:
        k, n = map(int, opts.part.split("/"))
        cases = cases[k - 1::n]
    if opts.dry:
        seen: set[str] = set()
        cases = [c for c in cases if not (c[1] in seen or seen.add(c[1]))]
    return cases


def _save(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def _row_text(row: dict[str, Any]) -> str:
    parts = [f"{row['variant']}[{row['shape_key']},{row['dtype']}]"]
    for name, rec in row["impls"].items():
        parts.append(f"{name}={rec['ms'] * 1e3:.1f}us" if rec.get("status") == "ok"
                     else f"{name}={rec.get('status', '?')[:60]}")
    return " ".join(parts)


def driver(opts: argparse.Namespace) -> int:
    """Start workers until every case ran; a worker that dies loses only its current case."""
    out_dir = Path(opts.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / "kernels.json"
    _save(state_path, {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "argv": sys.argv[1:], "cases": [], "crashed": [],
                       "helion_prev": helion_prev(opts.helion_prev)})
    t_end = time.monotonic() + opts.deadline_s
    start = 0
    n = len(_selected(opts))
    while start < n and t_end - time.monotonic() > 20:
        cmd = [sys.executable, __file__, "--worker", "--start", str(start),
               "--remaining-s", str(int(t_end - time.monotonic()))] + [
            a for a in sys.argv[1:] if a != "--worker"]
        proc = subprocess.run(cmd, check=False)
        marker = (out_dir / "current_case").read_text().strip() if (out_dir / "current_case").exists() else "0"
        if marker == "done":
            break
        crashed = int(marker)
        state = json.loads(state_path.read_text())
        state["crashed"].append({"case": list(_selected(opts)[crashed][:4]), "exit": proc.returncode})
        _save(state_path, state)
        print(f"worker died on case {crashed} (exit {proc.returncode}); continuing", flush=True)
        start = crashed + 1
    report(out_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-out")
    p.add_argument("--device", default="cuda")
    p.add_argument("--deadline-s", type=float, default=520.0, help="whole run's wall budget")
    p.add_argument("--only", default=None,
                   help="comma list of examples, variants or variant:shape_key")
    p.add_argument("--part", default=None, help="K/N: run every N-th case from the K-th")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per case")
    p.add_argument("--helion-tune", default="", help="comma list of variants to tune Helion on")
    p.add_argument("--shape-key", default=None, help="override every case's shape key")
    p.add_argument("--ours-budget", type=float, default=15.0)
    p.add_argument("--helion-effort", default="quick")
    p.add_argument("--helion-cap", type=float, default=45.0, help="Helion autotune seconds cap")
    p.add_argument("--helion-default-only", action="store_true")
    p.add_argument("--helion-prev", default=None,
                   help="earlier kernels.json whose Helion-tuned figures fill cases not tuned now")
    p.add_argument("--no-helion", action="store_true")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--dry", action="store_true", help="one shape per variant (smoke run)")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--remaining-s", type=float, default=520.0, help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.cache_dir is None:
        opts.cache_dir = tempfile.mkdtemp(prefix="ts-autotune-")
    if opts.report_only:
        report(Path(opts.out))
        return 0
    return worker(opts) if opts.worker else driver(opts)


if __name__ == "__main__":
    sys.exit(main())
