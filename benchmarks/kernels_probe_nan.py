"""What do NaN-propagating max/min cost? (issue 6, GPU only)

torch.maximum/minimum and amax/amin propagate NaN; our generated Triton does the same with
``tl.maximum(a, b, tl.PropagateNan.ALL)`` (pointwise and inside the max/min reduction
combine). This A/B times the suite's tuned and default configs of the kernels with max in their hot
loop (online softmax, two-pass softmax, cross entropy, attention, layer norm) with the
NaN-propagating forms and with plain ``tl.maximum`` / ``tl.max`` (and, for attention, the
NaN-propagating forms with a 128-register cap, ``maxnreg=128``), in 4 interleaved rounds,
and checks on the GPU that a row with NaN gives torch's answer. Writes ``OUT/nan_ab.json``.

Example:
    $ python benchmarks/kernels_probe_nan.py --out bench-out
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.kernels import _bind  # noqa: E402
from examples.kernels import load  # noqa: E402
from torchship.kernels.autotune.timing import CudaEventTimer  # noqa: E402
from torchship.kernels.config import Config  # noqa: E402
from torchship.kernels.ops import pointwise  # noqa: E402
from torchship.kernels.ops import reduce as red  # noqa: E402

CASES = {("softmax", "gpu_large"), ("softmax_two_pass", "gpu_large"),
         ("cross_entropy", "gpu_large"), ("cross_entropy", "gpu_small"),
         ("attention", "gpu_small"), ("attention_causal", "gpu_small"),
         ("attention_causal", "gpu_large"), ("layer_norm", "gpu_large")}
ON_FORMS, ON_KINDS = dict(pointwise._FLOAT_FORMS), dict(red.KINDS)
OFF_KINDS = {k: dataclasses.replace(v, float_combine=None) for k, v in red.KINDS.items()}


def set_nan_propagation(on: bool) -> None:
    """Switch the code generator between NaN-propagating and plain max/min forms.

    Example:
        >>> # set_nan_propagation(False); ...; set_nan_propagation(True)
    """
    pointwise._FLOAT_FORMS.clear()
    if on:
        pointwise._FLOAT_FORMS.update(ON_FORMS)
    red.KINDS.clear()
    red.KINDS.update(ON_KINDS if on else OFF_KINDS)


def main(argv: list[str] | None = None) -> int:
    """Run the A/B and write the JSON.

    Example:
        >>> main(["--out", "bench-out"])  # doctest: +SKIP
        0
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-out")
    p.add_argument("--suite", default=str(ROOT / "benchmarks/results/kernels.json"),
                   help="suite results whose tuned configs are timed")
    opts = p.parse_args(argv)
    timer = CudaEventTimer(target_ms=100.0, host_floor=False)
    timer.prepare("cuda")
    res: list[dict[str, Any]] = []
    for r in json.loads(Path(opts.suite).read_text())["cases"]:
        if (r["variant"], r["shape_key"]) not in CASES:
            continue
        mod = load(r["example"])
        kernel, kw = mod.VARIANTS[r["variant"]]
        args = tuple(mod.make_inputs(r["shape_key"], "cuda", getattr(torch, r["dtype"]), seed=0))
        bound = kernel.bind(args) if not kw else _bind(kernel, args, kw)
        for which in ("ours_tuned", "ours_default"):
            cfg = Config.from_dict(r["impls"][which]["config"])
            variants = {"propagating": (True, cfg), "plain": (False, cfg)}
            if "attention" in r["variant"] and cfg.maxnreg is None:
                variants["propagating, maxnreg=128"] = (True, cfg.replace(maxnreg=128))
            fns = {}
            for name, (on, c) in variants.items():
                set_nan_propagation(on)
                bound._runners.clear()
                f = bound.compile(c)
                f(*args, **kw)
                torch.cuda.synchronize()
                fns[name] = lambda f=f, a=args, k=kw: f(*a, **k)
            set_nan_propagation(True)
            times: dict[str, list[float]] = {name: [] for name in fns}
            for _ in range(4):
                for name, fn in fns.items():
                    times[name].append(timer.measure(fn, None) * 1e3)
            med = {name: sorted(v)[len(v) // 2] for name, v in times.items()}
            print(f"{r['variant']} {r['shape_key']} {which}: " + ", ".join(
                f"{name} {v:.1f} µs" for name, v in med.items()), flush=True)
            res.append({"variant": r["variant"], "shape_key": r["shape_key"], "config": which,
                        "us": times})
    from tests.kernels import test_reductions_nan as t

    x = t._with_nans(torch.float32).cuda()
    got = t.row_extremes(x).cpu()
    want = torch.stack([x.amax(1), x.amin(1)], 1).cpu()
    same = torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(),
                                                                  want.nan_to_num())
    print(f"row max/min with NaN like torch on the GPU: {same}", flush=True)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "nan_ab.json").write_text(json.dumps({"cases": res, "nan_like_torch": same}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
