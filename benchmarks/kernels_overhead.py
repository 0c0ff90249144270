"""Host overhead of a cached ``@ts.kernel`` call vs raw Triton launches of the same kernel.

Every column launches the identical generated Triton kernel (same source, grid, constexprs,
warps and stages: the space's default config, ``TORCHSHIP_AUTOTUNE_EFFORT=none``) on tiny
inputs, many times in a loop, synchronised once at the end, so host-side launch cost dominates.
What each column does per call:

* **raw Triton** -- what a user of raw Triton writes for the same semantics: allocate the output
  (``torch.empty_like``), read the sizes and strides the kernel takes from the tensors, compute
  the grid (``triton.cdiv``; for softmax also the padded row block, ``triton.next_power_of_2``)
  and launch ``kernel[grid](...)`` (Triton's ``JITFunction.run``: bind, specialise, look up
  the compiled kernel, launch).
* **raw, args precomputed** -- ``kernel[grid](*args)`` with everything but the output computed
  once outside the loop: a lower bound for ``kernel[grid]`` launches (the older baseline).
* **torchship** -- the whole cached call: argument key, bound-kernel lookup, the kernel's own
  host code (``torch.empty_like``), the launch site's key, the generated launcher (sizes,
  strides, grid, size checks) and the *direct* launch: the ``CompiledKernel`` Triton returned
  earlier for the same specialisation key (device, pointer alignment, ints ==1 / %16, constexpr
  values, Triton's launch knobs) is called without going through ``JITFunction.run``.
* **torchship, via kernel[grid]** -- the same with ``TORCHSHIP_DIRECT_LAUNCH=0``: the launcher
  ends in ``kernel[grid](...)`` like the raw side.

Ratios are torchship / raw Triton. Before timing, every column's output is checked against
torch, and a check of the direct path runs (misaligned views, size-1 and multiple-of-16
sizes, strided inputs, new row lengths; each result against torch; after warm-up the timed
torchship calls must make no ``JITFunction.run`` call at all). On a machine without a GPU the
kernels run in Triton's interpreter (figures then measure the interpreter and say so; there is
no direct path there).

Run: ``python benchmarks/kernels_overhead.py [--n 10000] [--json out.json]``

Example:
    $ python benchmarks/kernels_overhead.py --n 2000
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ["TORCHSHIP_AUTOTUNE_EFFORT"] = "none"  # launch cost only: the default config

import torch  # noqa: E402
import triton  # noqa: E402

try:
    from rich.console import Console
    from rich.table import Table
except ImportError:  # the GPU machine may lack rich: plain text then
    Console = Table = None  # type: ignore[assignment,misc]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torchship as ts  # noqa: E402


def add_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        out[t] = x[t] + y[t]
    return out


def softmax_fn(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm in ts.tile(x.size(0)):
        row = x[tm, :].to(torch.float32)
        e = torch.exp(row - row.amax(dim=1, keepdim=True))
        out[tm, :] = (e / e.sum(dim=1, keepdim=True)).to(x.dtype)
    return out


add = ts.kernel(add_fn)
softmax = ts.kernel(softmax_fn)


def _params(kern: Any) -> list[str]:
    fn = kern
    while not inspect.isfunction(fn):  # jit / interpreter wrappers keep the function in .fn
        fn = fn.fn
    return list(inspect.signature(fn).parameters)


def _expect(kern: Any, names: list[str], block: list[str]) -> bool:
    """Check the generated kernel's parameters; True when it takes the block constexpr."""
    got = _params(kern)
    if got not in (names + block, names):
        raise SystemExit(f"the generated kernel's parameters changed: {got}; update the raw "
                         f"wrapper in {__file__} (it expects {names} [+ {block}])")
    return got == names + block


def _compiled(kernel: Any, args: tuple[Any, ...]) -> tuple[Any, Any]:
    """(jitted kernel, config) of the kernel's only launch site, compiled for ``args``."""
    bound = kernel.bind(args)
    config = bound.config_space.default()
    run = bound.compile(config)
    run(*args)
    hook = run.args[0].L[0]
    return next(iter(hook.compiled.values())).kernel, config


def raw_add(kern: Any, config: Any) -> Any:
    """A raw-Triton user's ``add``: allocate, read size and strides, compute the grid, launch."""
    names = ["t_end", "x", "x_stride0", "y", "y_stride0", "out", "out_stride0"]
    blocked = _expect(kern, names, ["BLOCK_T"])  # a block of 1 is compiled in, not passed
    block, warps, stages = config.block_sizes[0], config.num_warps, config.num_stages
    cdiv = triton.cdiv

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        n = x.size(0)
        if blocked:
            kern[(cdiv(n, block),)](n, x, x.stride(0), y, y.stride(0), out, out.stride(0),
                                    BLOCK_T=block, num_warps=warps, num_stages=stages)
        else:
            kern[(n,)](n, x, x.stride(0), y, y.stride(0), out, out.stride(0),
                       num_warps=warps, num_stages=stages)
        return out

    return run


def raw_softmax(kern: Any, config: Any) -> Any:
    """A raw-Triton user's row softmax: also pads the row length to a power of two."""
    names = ["tm_end", "x", "x_size1", "x_stride0", "x_stride1", "out", "out_stride0",
             "out_stride1", "R_X1"]
    blocked = _expect(kern, names, ["BLOCK_TM"])
    block, warps, stages = config.block_sizes[0], config.num_warps, config.num_stages
    cdiv, p2 = triton.cdiv, triton.next_power_of_2

    def run(x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        m, n = x.shape
        sx, so = x.stride(), out.stride()
        if blocked:
            kern[(cdiv(m, block),)](m, x, n, sx[0], sx[1], out, so[0], so[1],
                                    R_X1=max(16, p2(n)), BLOCK_TM=block, num_warps=warps,
                                    num_stages=stages)
        else:
            kern[(m,)](m, x, n, sx[0], sx[1], out, so[0], so[1], R_X1=max(16, p2(n)),
                       num_warps=warps, num_stages=stages)
        return out

    return run


def raw_prebound(make_raw: Any, kern: Any, config: Any, args: tuple[Any, ...]) -> Any:
    """``kernel[grid](*args)`` with every argument but the output computed once."""
    calls: list[Any] = []

    class Capture:
        fn = kern  # the same parameters

        def __getitem__(self, grid: Any) -> Any:
            return lambda *a, **k: calls.append((grid, list(a), k))

    out = make_raw(Capture(), config)(*args)
    grid, plist, kw = calls[0]
    pos = next(i for i, v in enumerate(plist) if v is out)

    def run(*xs: torch.Tensor) -> torch.Tensor:
        o = torch.empty_like(xs[0])
        plist[pos] = o
        kern[grid](*plist, **kw)
        return o

    return run


def _without_direct(fn: Any, args: tuple[Any, ...]) -> Any:
    """A fresh kernel of ``fn`` whose launcher was built with TORCHSHIP_DIRECT_LAUNCH=0."""
    os.environ["TORCHSHIP_DIRECT_LAUNCH"] = "0"
    try:
        kernel = ts.kernel(fn)
        kernel(*args)  # compiles now, while the variable is set
        return kernel
    finally:
        del os.environ["TORCHSHIP_DIRECT_LAUNCH"]


def _count_runs(kern: Any, fn: Any, args: tuple[Any, ...], n: int = 20) -> int:
    """How many ``JITFunction.run`` calls ``n`` calls of ``fn`` make."""
    if not hasattr(kern, "run"):
        return -1
    count = [0]
    real = kern.run

    def counting(*a: Any, **k: Any) -> Any:
        count[0] += 1
        return real(*a, **k)

    kern.run = counting
    try:
        for _ in range(n):
            fn(*args)
    finally:
        del kern.run
    return count[0]


def check_fast_path(device: str) -> list[dict[str, Any]]:
    """Outputs of the cached path against torch for inputs that change Triton's
    specialisation between calls; each case twice (first: Triton's run, then: direct)."""
    base = torch.randn(8192, device=device)
    rows = []
    cases: list[tuple[str, Any, tuple[Any, ...], Any]] = []
    for n in (1, 16, 17, 1000, 1024):
        for off, step in ((0, 1), (1, 1), (4, 1), (0, 2)):
            x = base[off:off + n * step:step]
            y = base[2048 + off:2048 + off + n]
            cases.append((f"add n={n} offset={off} step={step}", add, (x, y), x + y))
    for m, n in ((1, 7), (8, 256), (5, 33), (3, 1000), (8, 256)):
        x = torch.randn(m, n + 1, device=device)[:, 1:]  # misaligned rows, stride n+1
        want = torch.softmax(x.double(), dim=1).to(x.dtype)
        cases.append((f"softmax {m}x{n} (strided view)", softmax, (x,), want))
        x = x.contiguous()
        cases.append((f"softmax {m}x{n}", softmax, (x,), want))
    for name, kernel, args, want in cases:
        for attempt in ("first", "again"):
            got = kernel(*args)
            err = float((got.double() - want.double()).abs().max()) if got.numel() else 0.0
            ok = got.shape == want.shape and err < 1e-5
            rows.append({"case": name, "call": attempt, "ok": ok, "max_abs_err": err})
    return rows


def _time(fns: dict[str, tuple[Any, tuple[Any, ...]]], n: int, sync: Any,
          rounds: int = 5) -> dict[str, float]:
    """Median µs per call of each function, the functions interleaved round by round."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for fn, args in fns.values():
        for _ in range(max(10, n // 20)):
            fn(*args)
    sync()
    for _ in range(rounds):
        for name, (fn, args) in fns.items():
            t0 = time.perf_counter()
            for _ in range(n):
                fn(*args)
            sync()
            samples[name].append((time.perf_counter() - t0) / n * 1e6)
    return {k: statistics.median(v) for k, v in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10000, help="launches per sample")
    parser.add_argument("--json", type=Path, default=Path("bench-out/kernels_overhead.json"))
    opts = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n = opts.n if device == "cuda" else min(opts.n, 20)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    console = Console(width=150) if Console is not None else None
    show = console.print if console is not None else print

    checks = check_fast_path(device)
    bad = [r for r in checks if not r["ok"]]
    show(f"fast-path check: {len(checks) - len(bad)}/{len(checks)} outputs match torch")
    for r in bad:
        show(f"  MISMATCH {r['case']} ({r['call']} call): max abs err {r['max_abs_err']:.3g}")

    cases = {
        "add (1024)": (add, add_fn, raw_add, (torch.randn(1024, device=device),
                                              torch.randn(1024, device=device)),
                       lambda x, y: x + y),
        "softmax (8x256)": (softmax, softmax_fn, raw_softmax,
                            (torch.randn(8, 256, device=device),),
                            lambda x: torch.softmax(x, dim=1)),
    }
    rows = []
    for name, (kernel, fn, make_raw, args, ref) in cases.items():
        kern, config = _compiled(kernel, args)
        raw = make_raw(kern, config)
        pre = raw_prebound(make_raw, kern, config, args)
        plain = _without_direct(fn, args)
        want = ref(*args)
        for f in (raw, pre, kernel, plain):
            torch.testing.assert_close(f(*args), want)
        runs = {"torchship": _count_runs(kern, kernel, args),
                "via_kernel_grid": _count_runs(_compiled(plain, args)[0], plain, args)}
        t = _time({"raw": (raw, args), "pre": (pre, args), "ts": (kernel, args),
                   "plain": (plain, args)}, n, sync)
        rows.append({"case": name, "config": config.to_dict(), "raw_triton_us": t["raw"],
                     "raw_prebound_us": t["pre"], "torchship_us": t["ts"],
                     "torchship_via_kernel_grid_us": t["plain"],
                     "ratio": t["ts"] / t["raw"], "ratio_via_kernel_grid": t["plain"] / t["raw"],
                     "jit_runs_per_20_calls": runs})
    title = f"cached-call host overhead ({device}, {n} launches/sample, median of 5)"
    cols = ("case", "raw Triton (µs)", "raw, args precomputed (µs)", "torchship (µs)",
            "ratio", "torchship via kernel[grid] (µs)", "ratio")
    cells = [(r["case"], f"{r['raw_triton_us']:.2f}", f"{r['raw_prebound_us']:.2f}",
              f"{r['torchship_us']:.2f}", f"{r['ratio']:.2f}x",
              f"{r['torchship_via_kernel_grid_us']:.2f}", f"{r['ratio_via_kernel_grid']:.2f}x")
             for r in rows]
    if Table is not None:
        table = Table(title=title)
        for col in cols:
            table.add_column(col, justify="right")
        for row in cells:
            table.add_row(*row)
        show(table)
    else:
        show(title)
        for row in (cols, *cells):
            show(" | ".join(row))
    for r in rows:
        show(f"{r['case']}: JITFunction.run calls per 20 cached calls: "
             f"torchship {r['jit_runs_per_20_calls']['torchship']}, via kernel[grid] "
             f"{r['jit_runs_per_20_calls']['via_kernel_grid']}")
    if device == "cpu":
        show("no GPU: every column runs Triton's interpreter (no direct path there); the "
             "ratios mostly measure the interpreter")
    meta = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "torch": torch.__version__, "triton": triton.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "launches_per_sample": n, "command": "python benchmarks/kernels_overhead.py "
            + " ".join(argv if argv is not None else sys.argv[1:])}
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = opts.json.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows, "fast_path_check": checks},
                              indent=2))
    tmp.replace(opts.json)
    show(f"wrote {opts.json}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
