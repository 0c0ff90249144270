"""GPU benchmark of torchship.kernels against torch eager, torch.compile and Helion (issues 4, 6).

For each case (example variant x shape x dtype), in one process on one GPU:

- ``eager``: the example's torch ``reference`` (attention: ``F.scaled_dot_product_attention``);
- ``compile``: ``torch.compile(reference, mode="max-autotune-no-cudagraphs")`` (compile seconds);
- ``helion``: the same kernel written in Helion (benchmarks/helion_kernels.py), autotuned at
  effort quick with a time cap (its autotune seconds), or Helion's default config;
- ``ours``: the torchship kernel with its default (heuristic) config, and ``ours_tuned``:
  after ``torchship.kernels.autotune`` at effort quick (its autotune seconds).

Every output is checked against a float32 reference (relative L2 error) before it is timed;
timings are medians of CUDA-event-timed launches with an L2 flush before each. Ceilings are
measured in the same run (device copy bandwidth; bf16 torch.mm 8192^3). Results are written to
``OUT/kernels.json`` after each case (a crash loses one case: a driver process restarts the
worker after the case that died) and a table to ``OUT/kernels.md``.

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

# (example module, variant, shape key, dtype name, tune helion)
CASES: list[tuple[str, str, str, str, bool]] = [
    # Helion autotuned (effort quick, capped) only for attention, whose Helion body changed;
    # the other headline Helion-tuned figures can be carried from an earlier run of the same
    # Helion kernels on the same card and versions (--helion-prev), marked as such
    ("attention", "attention", "gpu_small", "bfloat16", True),
    ("softmax", "softmax", "gpu_large", "bfloat16", False),
    ("rms_norm", "rms_norm", "gpu_large", "bfloat16", False),
    ("matmul", "matmul", "gpu_large", "bfloat16", False),
    ("attention", "attention_causal", "gpu_small", "bfloat16", False),
    ("layer_norm", "layer_norm", "gpu_large", "bfloat16", False),
    ("add", "add", "gpu_large", "bfloat16", False),
    ("cross_entropy", "cross_entropy", "gpu_small", "bfloat16", False),
    ("swiglu", "swiglu", "gpu_large", "bfloat16", False),
    ("softmax", "softmax_two_pass", "gpu_large", "bfloat16", False),
    ("welford", "var_mean", "gpu_small", "float32", False),
    ("sum", "sum", "gpu_small", "bfloat16", False),
    ("geglu", "geglu", "gpu_large", "bfloat16", False),
    ("embedding", "embedding", "gpu_small", "bfloat16", False),
    ("matmul_epilogue", "matmul_bias_relu", "gpu_large", "bfloat16", False),
    ("bmm", "bmm", "gpu_small", "bfloat16", False),
    ("sum", "long_sum", "gpu_large", "float32", False),
    ("softmax", "softmax", "gpu_small", "bfloat16", False),
    ("rms_norm", "rms_norm", "gpu_small", "bfloat16", False),
    ("matmul", "matmul", "gpu_small", "bfloat16", False),
]
#: variants whose Helion body changed after 2026-11-26 16:19 (2-D blocks, exp2)
HELION_REWRITTEN = {"attention", "attention_causal"}
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
        self.timer = CudaEventTimer(target_ms=100.0) if device == "cuda" else WallTimer(reps=3)
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
            ms = bench.ms(lambda: fn(*args))
            rec.update(status="ok", ms=ms, GBps=nbytes / (ms * 1e-3) / 1e9,
                       TFLOPs=flops / (ms * 1e-3) / 1e12)
            if row["bound"] == "memory":
                rec["pct_ceiling"] = 100 * rec["GBps"] / ceil["copy_GBps"]
            else:
                rec["pct_ceiling"] = 100 * rec["TFLOPs"] / ceil["mm_bf16_TFLOPs"]
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            rec["status"] = f"error: {type(exc).__name__}: {str(exc)[:300]}"
            rec["traceback"] = traceback.format_exc()[-1500:]

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

            tune = tune_helion and not opts.helion_default_only and left() > opts.helion_cap + 30
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
                    cap_s=opts.helion_cap if tune else None)
        except Exception as exc:  # noqa: BLE001
            impls["helion"] = {"status": f"error: {type(exc).__name__}: {str(exc)[:300]}",
                               "traceback": traceback.format_exc()[-1500:]}
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
        cases = [c for c in cases if c[1] in names or c[0] in names]
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
                       "helion_prev": _helion_prev(opts.helion_prev)})
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


def _case_key(row: dict[str, Any]) -> str:
    return f"{row['variant']}|{row['shape_key']}|{row['dtype']}"


def _helion_prev(path: str | None) -> dict[str, Any]:
    """Helion-autotuned records of an earlier run's JSON (same kernels, card and versions),
    keyed by case, with that run's date and versions; {} when there is no such file."""
    if not path or not Path(path).exists():
        return {}
    old = json.loads(Path(path).read_text())
    out: dict[str, Any] = {}
    for row in old.get("cases", []):
        if row["variant"] in HELION_REWRITTEN:
            continue  # an earlier figure of a different Helion body is not carried
        rec = row.get("impls", {}).get("helion") or {}
        if rec.get("status") == "ok" and rec.get("tune_s"):
            out[_case_key(row)] = rec | {"date": old.get("date"), "versions": old.get("versions")}
    return out


def _fmt_us(rec: dict[str, Any] | None) -> str:
    if not rec:
        return "-"
    if rec.get("status") != "ok":
        return "fail" if rec.get("status", "").startswith(("error", "wrong")) else "-"
    return f"{rec['ms'] * 1e3:.1f}"


def report(out_dir: Path) -> None:
    """Print the rich table and write kernels.md (the BENCHMARKS.md section body)."""
    from rich.console import Console
    from rich.table import Table

    state = json.loads((out_dir / "kernels.json").read_text())
    ceil, ver = state.get("ceilings", {}), state.get("versions", {})
    cols = ["kernel", "shape", "eager µs", "compile µs", "helion def µs", "helion tuned µs",
            "ours def µs", "ours hand µs", "ours tuned µs", "ours % ceil", "vs helion",
            "vs compile", "tune s (ours/helion)", "ours ≤1.02×helion at s"]
    prev = state.get("helion_prev") or {}
    used_prev: list[str] = []
    table = Table(title=f"kernels on {ver.get('gpu', '?')}: copy {ceil.get('copy_GBps', 0):.0f} GB/s, "
                  f"mm bf16 {ceil.get('mm_bf16_TFLOPs', 0):.0f} TFLOP/s")
    for c in cols:
        table.add_column(c, justify="left" if c in ("kernel", "shape") else "right")
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    vs_h, vs_c, vs_ht, vs_hd, vs_e = [], [], [], [], []
    for row in state["cases"]:
        im = row["impls"]
        best_ours = im.get("ours_tuned") if (im.get("ours_tuned") or {}).get("status") == "ok" else im.get("ours_default")
        hand = im.get("ours_hand") or {}
        def ratio(peer: str, sink: list[float], im: dict = im, best_ours: Any = best_ours) -> str:
            p = im.get(peer) or {}
            if p.get("status") == "ok" and best_ours and best_ours.get("status") == "ok":
                r = p["ms"] / best_ours["ms"]
                sink.append(r)
                return f"{r:.2f}x"
            return "-"
        shape = "x".join(map(str, row["shapes"][0])) + f" {row['dtype'].replace('bfloat16', 'bf16')}"
        ours_t, hel_run = im.get("ours_tuned") or {}, im.get("helion") or {}
        hel_def = hel_run if hel_run.get("status") == "ok" and not hel_run.get("tune_s") else {}
        hel_tuned = hel_run if hel_run.get("tune_s") else {}
        mark = ""
        if not hel_tuned and _case_key(row) in prev:
            hel_tuned, mark = prev[_case_key(row)], "†"
            used_prev.append(row["variant"])
        # the Helion figure we compare with: tuned (this run, else the earlier run's), else default
        hel = hel_tuned if hel_tuned.get("status") == "ok" else hel_run
        im = dict(im, helion=hel)
        tune = (f"{ours_t['tune_s']:.0f}" if ours_t.get("tune_s") else "-") + " / " + (
            f"{hel['tune_s']:.0f}" if hel.get("tune_s") else "def")
        pct = f"{best_ours['pct_ceiling']:.0f}%" if best_ours and best_ours.get("status") == "ok" else "-"
        if hel.get("status") == "ok" and best_ours and best_ours.get("status") == "ok":
            (vs_ht if hel.get("tune_s") else vs_hd).append(hel["ms"] / best_ours["ms"])
        eag = im.get("eager") or {}
        if eag.get("status") == "ok" and best_ours and best_ours.get("status") == "ok":
            vs_e.append(eag["ms"] / best_ours["ms"])
        reach = "-"
        if hel.get("status") == "ok" and ours_t.get("candidates"):
            # first time the search's own measurement got within 2% of Helion's final time
            hits = [c["elapsed_s"] for c in ours_t["candidates"]
                    if c.get("status") == "ok" and c["time_ms"] <= 1.02 * hel["ms"]]
            reach = f"{min(hits):.1f}" if hits else "never"
        tuned_cell = _fmt_us(hel_tuned or None) + (mark if hel_tuned else "")
        if hel_run.get("tune_s") and hel_run.get("status") != "ok":
            tuned_cell = "fail"
        cells = [row["variant"], shape, _fmt_us(im.get("eager")), _fmt_us(im.get("compile")),
                 _fmt_us(hel_def or None) if hel_def or hel_run.get("tune_s") else _fmt_us(hel_run),
                 tuned_cell,
                 _fmt_us(im.get("ours_default")), _fmt_us(hand or None), _fmt_us(ours_t), pct,
                 ratio("helion", vs_h, im), ratio("compile", vs_c, im), tune, reach]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    gm = lambda xs: math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")  # noqa: E731
    summary = (f"geomean speed-up of ours (tuned, else default) over Helion autotuned: "
               f"{gm(vs_ht):.2f}x ({len(vs_ht)} cases); over Helion's default config: "
               f"{gm(vs_hd):.2f}x ({len(vs_hd)} cases); over all Helion rows: {gm(vs_h):.2f}x "
               f"({len(vs_h)}); over torch.compile max-autotune-no-cudagraphs: {gm(vs_c):.2f}x "
               f"({len(vs_c)} cases); over eager: {gm(vs_e):.2f}x ({len(vs_e)} cases)")
    if used_prev:
        dates = sorted({str(r.get("date")) for r in prev.values()})
        summary += (f"\n\n† Helion autotuned (effort quick) in an earlier run ({', '.join(dates)}) "
                    f"of the same Helion kernel, shape, card and versions, not re-tuned in this "
                    f"run for lack of device time: {', '.join(used_prev)}.")
    Console(width=240).print(table)
    print(summary)
    if state.get("crashed"):
        print("crashed cases:", state["crashed"])
    if state.get("skipped"):
        print("skipped (time):", state["skipped"])
    head = (f"{ver.get('gpu', '?')} (sm {ver.get('capability', '?')}), torch {ver.get('torch')}, "
            f"triton {ver.get('triton')}, helion {ver.get('helion')}; {state.get('date')}. "
            f"Ceilings measured in the same run: copy {ceil.get('copy_GBps', 0):.0f} GB/s, "
            f"torch.mm bf16 {ceil.get('mm_size')}^3 {ceil.get('mm_bf16_TFLOPs', 0):.0f} TFLOP/s.")
    (out_dir / "kernels.md").write_text(head + "\n\n" + "\n".join(md) + "\n\n" + summary + "\n")
    plot_curves(state, out_dir / "kernels_autotune.png")


def plot_curves(state: dict[str, Any], path: Path) -> None:
    """One panel per case with a Helion time: our best-so-far (search timer) against tuning
    seconds, with Helion's and torch.compile's final times as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in state["cases"] if (r["impls"].get("ours_tuned") or {}).get("candidates")]
    if not rows:
        return
    n = len(rows)
    cols = min(4, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(4 * cols, 3 * ((n + cols - 1) // cols)),
                             squeeze=False, dpi=110)
    for ax, row in zip(axes.flat, rows):
        cands = row["impls"]["ours_tuned"]["candidates"]
        best, xs, ys = math.inf, [], []
        for c in cands:
            if c.get("status") == "ok" and c["time_ms"] < best:
                best = c["time_ms"]
            if math.isfinite(best):
                xs.append(c["elapsed_s"])
                ys.append(best * 1e3)
        # x from 0 s: the gap before the first point is worker set-up and the first batch
        ax.step(xs, ys, where="post", marker=".", label="torchship best so far")
        ax.set_xlim(0, max(xs[-1] if xs else 1.0, 1.0) * 1.05)
        ax.ticklabel_format(axis="x", useOffset=False)
        for name, style in (("helion", "--"), ("compile", ":"), ("eager", "-.")):
            rec = row["impls"].get(name) or {}
            label = name
            prev = (state.get("helion_prev") or {}).get(_case_key(row))
            if name == "helion" and not rec.get("tune_s") and prev:
                rec, label = prev, "helion tuned (earlier run) †"
            elif name == "helion":
                label = "helion tuned" if rec.get("tune_s") else "helion default"
            if rec.get("status") == "ok":
                ax.axhline(rec["ms"] * 1e3, linestyle=style, color="gray", label=label)
        ax.set_title(f"{row['variant']} {row['shape_key']}", fontsize=9)
        ax.set_xlabel("tuning seconds")
        ax.set_ylabel("µs")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-out")
    p.add_argument("--device", default="cuda")
    p.add_argument("--deadline-s", type=float, default=520.0, help="whole run's wall budget")
    p.add_argument("--only", default=None, help="comma list of variants or examples")
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
