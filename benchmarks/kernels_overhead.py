"""Host overhead of a cached ``@ts.kernel`` call vs a raw Triton launch of the same kernel.

Both sides allocate the output and launch the identical generated kernel (same grid, same
constexprs, same warps/stages): the raw side calls ``kernel[grid](...)`` directly with sizes
and strides precomputed (the best a hand-written launcher can do); the torchship side goes
through the whole cached path (argument key, bound-kernel lookup, host code, site key,
launcher). Tight loops of many launches on tiny inputs, synchronised at the end, so launch
cost dominates. On a machine without a GPU the kernels run in Triton's interpreter (the
figures then mostly measure the interpreter and say so).

Run: ``python benchmarks/kernels_overhead.py [--n 10000] [--json out.json]``

Example:
    $ python benchmarks/kernels_overhead.py --n 2000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

try:
    from rich.console import Console
    from rich.table import Table
except ImportError:  # the GPU machine may lack rich: plain text then
    Console = Table = None  # type: ignore[assignment,misc]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torchship as ts  # noqa: E402


@ts.kernel
def add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        out[t] = x[t] + y[t]
    return out


@ts.kernel
def softmax(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm in ts.tile(x.size(0)):
        row = x[tm, :].to(torch.float32)
        e = torch.exp(row - row.amax(dim=1, keepdim=True))
        out[tm, :] = (e / e.sum(dim=1, keepdim=True)).to(x.dtype)
    return out


def _raw_launcher(kernel: Any, args: tuple[torch.Tensor, ...]) -> Any:
    """Build ``raw(*args)``: allocate the output like the kernel does, then ``kernel[grid]``
    with every size/stride/constexpr precomputed (our launcher, run once, tells them)."""
    bound = kernel.bind(args)
    run = bound.compile(bound.config_space.default())
    run(*args)  # compile
    hook = run.args[0].L[0]
    compiled = next(iter(hook.compiled.values()))
    names = bound.parsed.sites[0].captured
    out = torch.empty_like(args[0])
    values = {"x": args[0], "y": args[1] if len(args) > 1 else None, "out": out}
    c = tuple(values[n] for n in names)
    a = (args[0].size(0),)
    src = compiled.launcher_source.replace("_k[grid](", "return grid, _collect(")
    ns: dict[str, Any] = {"_collect": lambda *p, **k: (list(p), k), "min": min}
    exec(src, ns)  # our own generated launcher, made to return what it would launch
    grid, (plist, kw) = ns["launch"](a, None, c)
    pos = next(i for i, v in enumerate(plist) if v is out)
    kern = compiled.kernel

    def raw(*xs: torch.Tensor) -> torch.Tensor:
        o = torch.empty_like(xs[0])
        plist[pos] = o
        kern[grid](*plist, **kw)
        return o

    return raw, f"kernel[{grid}](*{len(plist)} args, **{kw})"


def _time(fn: Any, args: tuple[Any, ...], n: int, sync: Any) -> float:
    fn(*args)
    sync()
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn(*args)
        sync()
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10000, help="launches per sample")
    parser.add_argument("--json", type=Path, default=Path("bench-out/kernels_overhead.json"))
    opts = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n = opts.n if device == "cuda" else min(opts.n, 300)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    console = Console() if Console is not None else None
    show = console.print if console is not None else print
    cases = {
        "add (1024)": (add, (torch.randn(1024, device=device), torch.randn(1024, device=device))),
        "softmax (8x256)": (softmax, (torch.randn(8, 256, device=device),)),
    }
    rows = []
    for name, (kernel, args) in cases.items():
        raw, src = _raw_launcher(kernel, args)
        torch.testing.assert_close(raw(*args), kernel(*args))
        t_raw = _time(raw, args, n, sync)
        t_ts = _time(kernel, args, n, sync)
        rows.append({"case": name, "raw_triton_us": t_raw, "torchship_us": t_ts,
                     "ratio": t_ts / t_raw, "raw_source": src})
    title = f"cached-call host overhead ({device}, {n} launches/sample, median of 5)"
    cols = ("case", "raw Triton launch (µs)", "torchship cached call (µs)", "ratio")
    cells = [(r["case"], f"{r['raw_triton_us']:.2f}", f"{r['torchship_us']:.2f}",
              f"{r['ratio']:.2f}x") for r in rows]
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
    if device == "cpu":
        show("[yellow]no GPU: both sides run Triton's interpreter; the ratio mostly "
                      "measures the interpreter")
    import triton

    meta = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "torch": torch.__version__, "triton": triton.__version__,
            "date": time.strftime("%Y-%m-%d"), "launches_per_sample": n}
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = opts.json.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    tmp.replace(opts.json)
    show(f"wrote {opts.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
