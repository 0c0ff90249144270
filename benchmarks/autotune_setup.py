"""Where the seconds of a fresh-process autotune go (issue 6, GPU only).

For a few examples at their realistic shapes this runs ``torchship.kernels.autotune.autotune``
exactly as a user's first call would (fresh worker processes, no cache, effort quick, a 10 s
budget) and reports, from the :class:`TuneReport`: the whole tune, its start-up
(``setup_s``: booting the worker processes, shipping the arguments, the reference run), the
bench worker's own part of it (unpickling the target, rebuilding the arguments, the reference
run), the time of the first result, the candidates evaluated, and the best config and time.
Writes ``OUT/autotune_setup.json`` (and each tune's JSON log beside it) and prints a table.

Example:
    $ python benchmarks/autotune_setup.py --out bench-out
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

CASES = [("cross_entropy", "cross_entropy", "gpu_large"), ("cross_entropy", "cross_entropy", "gpu_small"),
         ("softmax", "softmax", "gpu_large"), ("matmul", "matmul", "gpu_large")]


def one(example: str, variant: str, shape_key: str, out: Path, budget_s: float) -> dict[str, Any]:
    """Tune one case in fresh workers and summarise its report.

    Example:
        >>> one("add", "add", "gpu_small", Path("out"), 10.0)  # doctest: +SKIP
    """
    import importlib

    import torch

    from torchship.kernels.autotune.tuner import autotune

    mod = importlib.import_module(f"examples.kernels.{example}")
    kernel = mod.VARIANTS[variant][0]
    args = mod.make_inputs(shape_key, "cuda", torch.bfloat16, seed=0)
    log = out / f"{variant}-{shape_key}.json"
    t0 = time.perf_counter()
    rep = autotune(kernel.bind(args), args, effort="quick", budget_s=budget_s, cache=False,
                   force=True, log_path=log, progress=False)
    row = {"case": f"{variant}:{shape_key}", "input_MB": sum(a.numel() * a.element_size() for a in args) / 1e6,
           "tune_s": time.perf_counter() - t0, "setup_s": rep.setup_s, "worker": rep.setup,
           "first_result_s": min((r.elapsed_s for r in rep.results), default=None),
           "evaluated": len(rep.results), "best_ms": rep.best_ms, "config": str(rep.config),
           "stop": rep.stop_reason}
    del args
    torch.cuda.empty_cache()
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench-out")
    p.add_argument("--budget-s", type=float, default=10.0)
    opts = p.parse_args()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch
    from rich.console import Console
    from rich.table import Table

    rows = [one(e, v, k, out, opts.budget_s) for e, v, k in CASES]
    table = Table(title=f"fresh-process autotune on {torch.cuda.get_device_name()} (budget {opts.budget_s:g} s)")
    for col in ("case", "input MB", "tune s", "setup s", "worker: unpickle / args / reference s",
                "first result s", "evaluated", "best µs"):
        table.add_column(col)
    for r in rows:
        w = r["worker"]
        table.add_row(r["case"], f"{r['input_MB']:.0f}", f"{r['tune_s']:.1f}", f"{r['setup_s']:.1f}",
                      f"{w.get('load_s', 0):.2f} / {w.get('build_s', 0):.2f} / {w.get('reference_s', 0):.2f}",
                      f"{r['first_result_s']:.1f}", str(r["evaluated"]), f"{r['best_ms'] * 1000:.1f}")
    Console().print(table)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "gpu": torch.cuda.get_device_name(),
            "torch": torch.__version__, "budget_s": opts.budget_s, "rows": rows}
    (out / "autotune_setup.json").write_text(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
