"""GPU check of the device ops added on 2026-11-27 (prod, inverse trig/hyperbolic math, atan2
and pow, ts.rand/randn and dropout, ts.reduce/associative_scan, sort/argsort/topk, int8 dots
with an int32 acc, logcumsumexp): each test kernel of ``tests/kernels/test_user_kernels_ops6*.py``,
``test_user_kernels_int8.py`` and ``test_user_kernels_scan_ops.py`` runs on CUDA with the default config
and 3 sampled configs and is compared with the same kernel in the CPU interpreter (which the
tests check against torch); then the GPU default configs of matmul, bmm and attention are
timed against the previous defaults and torch. Prints one line per run; GPU only.

Example:
    $ python benchmarks/kernels_gpu_ops.py
"""

from __future__ import annotations

import os
import random
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TORCHSHIP_AUTOTUNE_EFFORT", "none")


def flat(o: Any) -> list[Any]:
    """The outputs of a kernel as a list.

    Example:
        >>> flat(1)
        [1]
    """
    return list(o) if isinstance(o, (tuple, list)) else [o]


def compare(cpu_out: Any, gpu_out: Any, exact: bool) -> str:
    """``ok (max rel ...)`` when the GPU outputs match the CPU ones (bit for bit if ``exact``).

    Example:
        >>> compare(torch.ones(2), torch.ones(2), True)
        'ok (max rel 0.00e+00)'
    """
    worst = 0.0
    for a, b in zip(flat(cpu_out), flat(gpu_out)):
        b = b.cpu()
        if exact or not a.is_floating_point():
            if not torch.equal(a, b) and not (a.is_floating_point() and torch.equal(a.nan_to_num(), b.nan_to_num())):
                return f"MISMATCH (exact) {(a != b).sum().item()} elems"
        else:
            d = (a.double() - b.double()).abs()
            fin = torch.isfinite(a.double())
            if not torch.equal(fin, torch.isfinite(b.double())):
                return "MISMATCH finite pattern"
            rel = (d[fin] / a.double()[fin].abs().clamp_min(1e-30)).max().item() if fin.any() else 0.0
            worst = max(worst, rel)
    return f"ok (max rel {worst:.2e})"


def time_defaults(example: str, variant: str, key: str) -> dict[str, Any]:
    """Median µs of 3 interleaved rounds: the default config, the previous default (128-wide
    output tiles for matmul/bmm, 4 warps for attention) and torch.

    Example:
        >>> time_defaults("matmul", "matmul", "gpu_large")  # doctest: +SKIP
    """
    import torch.nn.functional as F  # noqa: N812

    from examples.kernels import load
    from torchship.kernels.autotune.timing import CudaEventTimer

    timer = CudaEventTimer(target_ms=100.0, host_floor=False)
    timer.prepare("cuda")
    mod = load(example)
    kernel, kw = mod.VARIANTS[variant]
    args = tuple(mod.make_inputs(key, "cuda", torch.bfloat16, seed=0))
    bound = kernel.bind(args, kw) if kw else kernel.bind(args)
    new = bound.config_space.default()
    if example == "attention":
        old = new.replace(num_warps=4)
        fns = {"torch": lambda: F.scaled_dot_product_attention(*args, is_causal=bool(kw))}
    else:
        old = new.replace(block_sizes=[new.block_sizes[0], 128, *new.block_sizes[2:]])
        fns = {"torch": lambda: mod.reference(*args)}
    for name, cfg in (("new default", new), ("old default", old)):
        run = bound.compile(cfg)
        fns[name] = lambda run=run: run(*args, **kw)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(3):
        for name, fn in fns.items():
            times[name].append(timer.measure(fn, None) * 1e3)
    out: dict[str, Any] = {name: round(sorted(t)[1], 1) for name, t in times.items()}
    out["configs"] = {"new": str(new), "old": str(old)}
    return out


def main() -> None:
    """Run every check and print the verdicts.

    Example:
        >>> main()  # doctest: +SKIP
    """
    from tests.kernels import test_user_kernels_int8 as oi8
    from tests.kernels import test_user_kernels_ops6 as o6
    from tests.kernels import test_user_kernels_ops6_combine as oc
    from tests.kernels import test_user_kernels_ops6_sort as osr
    from tests.kernels import test_user_kernels_scan_ops as oscan
    torch.manual_seed(0)
    m, n = 40, 23
    x = 1.0 + 0.1 * torch.randn(m, n)
    cases = [
        ("prod", o6.row_products, (1.0 + 0.05 * torch.randn(45, 70), torch.randint(-3, 4, (33, 9), dtype=torch.int32)), False),
        ("inverse_math", o6.inverse_math, (torch.cat([o6._edge_values(), torch.randn(300) * 3, torch.rand(100) * 176 - 88]),), False),
        ("atan2/pow", o6.two_operand_math, (torch.randn(600) * 3, torch.randn(600) * 2, 2.5), False),
        ("rand", o6.uniform, (torch.empty(200, 150), 2024), True),
        ("dropout", o6.dropout, (torch.randn(200, 150), 0.25, 99), False),
        ("randn", o6.normal_noise, (torch.zeros(200, 150), 1.0, 11), False),
        ("combine", oc.combines, (x, torch.arange(n, dtype=torch.int32).expand(m, n).contiguous(), (1 << torch.randint(0, 20, (m, n))).to(torch.int32)), False),
        ("sort f32", osr.row_sorts, ((torch.stack([torch.randperm(n) for _ in range(m)]) - 11).float() * 0.5,), True),
        ("sort f16", osr.row_sorts, ((torch.stack([torch.randperm(n) for _ in range(m)]) - 11).half() * 0.5,), True),
        ("int8 dot", oi8.int8_linear, (torch.randint(-128, 128, (300, 260), dtype=torch.int8),
                                       torch.randint(-128, 128, (260, 190), dtype=torch.int8),
                                       torch.rand(300), torch.rand(190)), False),
        ("logcumsumexp", oscan.running_logsumexp, (torch.randn(40, 45) * 30,), False),
    ]
    ok = True
    for name, k, args, exact in cases:
        try:
            cpu_out = k(*args)
            gargs = tuple(a.cuda() if torch.is_tensor(a) else a for a in args)
            b = k.bind(gargs)
            space = b.config_space
            rng = random.Random(0)
            cfgs = [space.default()] + [space.sample(rng) for _ in range(3)]
            for c in cfgs:
                out = b.compile(c)(*gargs)
                torch.cuda.synchronize()
                verdict = compare(cpu_out, out, exact)
                ok &= verdict.startswith("ok")
                print(f"{name:14s} {verdict}  {c}", flush=True)
        except Exception as e:
            ok = False
            print(f"{name:14s} FAILED {type(e).__name__}: {str(e)[:400]}", flush=True)
            traceback.print_exc(limit=3)
    # the GPU default configs, timed against the previous defaults and torch
    for example, variant, key in (("matmul", "matmul", "gpu_large"), ("bmm", "bmm", "gpu_large"),
                                  ("attention", "attention", "gpu_small"),
                                  ("attention", "attention_causal", "gpu_small")):
        print(variant, key, time_defaults(example, variant, key), flush=True)
    print("ALL OK" if ok else "SOME FAILED")


if __name__ == "__main__":
    main()
