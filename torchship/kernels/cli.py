"""``torchship kernels ...``: autotune a kernel, manage the autotune cache, print generated code.

Example:
    $ torchship kernels autotune examples/kernels/softmax.py::softmax --shape-key gpu_small
    $ torchship kernels autotune my_kernels.py::scale --shape 4096,4096 --dtype float16
    $ torchship kernels cache list
    $ torchship kernels code examples/kernels/add.py::add --config '{"block_sizes": [32, 64]}'
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from typing import Any

DTYPES = ("float32", "float16", "bfloat16", "float64")


class CliError(Exception):
    """A user error with a message for the terminal."""


def add_commands(subparsers: Any) -> None:
    """Register ``autotune``, ``cache`` and ``code`` under ``torchship kernels``.

    Example:
        >>> import argparse
        >>> p = argparse.ArgumentParser(); add_commands(p.add_subparsers(dest="sub"))
        >>> p.parse_args(["cache", "list"]).cache_action
        'list'
    """
    tune = subparsers.add_parser("autotune", help="autotune FILE::KERNEL on given inputs")
    _add_target_args(tune)
    tune.add_argument("--effort", choices=["quick", "full"], default="quick",
                      help="search size (default: quick)")
    tune.add_argument("--budget", type=float, default=None, help="time budget in seconds")
    tune.add_argument("--strategy", choices=["guided", "random", "exhaustive"], default=None,
                      help="search strategy (default: exhaustive when the space is small, else guided)")
    tune.add_argument("--max-evals", type=int, default=None,
                      help="stop after this many evaluated configs")
    tune.add_argument("--top", type=int, default=5, help="how many configs to print")
    tune.add_argument("--plot", default=None, help="PNG path (default: <kernel>-autotune.png)")
    tune.add_argument("--log", default=None, help="JSON log of every candidate")
    tune.add_argument("--force", action="store_true", help="ignore a cached winner")
    tune.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    tune.add_argument("--in-process", action="store_true", help="no worker processes")
    tune.set_defaults(func=_cmd_autotune)

    cache = subparsers.add_parser("cache", help="list | clear | export | import the autotune cache")
    cache.add_argument("cache_action", choices=["list", "clear", "export", "import"],
                       help="list the tuned winners, delete them, or write/read a bundle file")
    cache.add_argument("path", nargs="?", help="bundle file for export/import")
    cache.add_argument("--dir", default=None, help="cache dir (default: $TORCHSHIP_CACHE_DIR, "
                       "else $XDG_CACHE_HOME/torchship, else ~/.cache/torchship)")
    cache.set_defaults(func=_cmd_cache)

    code = subparsers.add_parser("code", help="print the generated Triton for FILE::KERNEL")
    _add_target_args(code)
    code.add_argument("--config", default=None, help="config as JSON, or @file.json")
    code.set_defaults(func=_cmd_code)


def _add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="FILE::KERNEL, e.g. examples/kernels/softmax.py::softmax")
    p.add_argument("--shape", action="append", default=[],
                   help="shape of the next tensor argument, e.g. 4096,4096 (repeat per tensor)")
    p.add_argument("--shape-key", default=None,
                   help="for example files: make_inputs key (test, gpu_small, gpu_large)")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="dtype of the tensor arguments (default: float32)")
    p.add_argument("--device", default=None,
                   help="cuda or cpu (default: cuda when available; cpu runs Triton's interpreter)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")


def load_kernel(spec: str) -> tuple[Any, Any]:
    """Import ``FILE::KERNEL`` and return ``(module, kernel)``.

    Files inside packages (folders with ``__init__.py``) are imported by their dotted name so
    worker processes can import them again.

    Example:
        >>> load_kernel("nofile.py::k")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        CliError: nofile.py: no such file
    """
    if "::" not in spec:
        raise CliError(f"{spec!r}: expected FILE::KERNEL, e.g. examples/kernels/add.py::add")
    file_part, name = spec.rsplit("::", 1)
    path = Path(file_part).resolve()
    if not path.is_file():
        raise CliError(f"{file_part}: no such file")
    parts = [path.stem]
    root = path.parent
    while (root / "__init__.py").exists():
        parts.insert(0, root.name)
        root = root.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if len(parts) > 1:
        module = importlib.import_module(".".join(parts))
    else:
        spec_ = importlib.util.spec_from_file_location(path.stem, path)
        assert spec_ is not None and spec_.loader is not None
        module = importlib.util.module_from_spec(spec_)
        sys.modules[path.stem] = module
        spec_.loader.exec_module(module)
    kernel = getattr(module, name, None)
    if kernel is None or not hasattr(kernel, "bind"):
        found = sorted(
            k for k, v in vars(module).items()
            if hasattr(v, "bind") and not isinstance(v, type) and not k.startswith("_")
        )
        raise CliError(f"{file_part}: no kernel named {name!r} (kernels here: {', '.join(found) or 'none'})")
    return module, kernel


def build_inputs(module: Any, kernel: Any, args: argparse.Namespace) -> tuple[Any, ...]:
    """Inputs from ``--shape`` (random tensors for the tensor parameters) or ``make_inputs``.

    Example:
        >>> # build_inputs(module, kernel, parse_args(["autotune", "f.py::k", "--shape", "8,8"]))
    """
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CliError(f"--device {device}: torch sees no CUDA device here (use --device cpu)")
    dtype = getattr(torch, args.dtype)
    if not args.shape:
        make = getattr(module, "make_inputs", None)
        if make is None:
            raise CliError("give --shape for each tensor argument (this file has no make_inputs)")
        key = args.shape_key or ("gpu_small" if device == "cuda" else "test")
        try:
            try:
                return tuple(make(key, device, dtype, seed=args.seed))
            except TypeError:
                return tuple(make(key, device, dtype))
        except KeyError as exc:  # the examples' make_inputs: unknown shape key, with the known ones
            raise CliError(f"--shape-key {key!r}: {exc.args[0] if exc.args else exc}") from None
    fn = getattr(kernel, "fn", None) or getattr(kernel, "__wrapped__", None) or kernel
    params = list(inspect.signature(fn).parameters.values())
    shapes = list(args.shape)
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    out: list[Any] = []
    for p in params:
        ann = p.annotation
        is_tensor = ann is torch.Tensor or (isinstance(ann, str) and "Tensor" in ann)
        if is_tensor:
            if not shapes:
                raise CliError(f"parameter {p.name!r} is a tensor: add a --shape for it")
            text = shapes.pop(0)
            parts = [s.strip() for s in text.replace("x", ",").split(",") if s.strip()]
            if not all(s.isdigit() for s in parts):
                raise CliError(f"--shape {text!r} for {p.name!r}: expected non-negative integers "
                               "separated by commas, e.g. 4096,4096")
            shape = [int(s) for s in parts]
            out.append(torch.randn(shape, generator=gen).to(device=device, dtype=dtype))
        elif p.default is not inspect.Parameter.empty:
            out.append(p.default)
        else:
            raise CliError(f"parameter {p.name!r} has no default; only tensors come from --shape")
    if shapes:
        raise CliError(f"{len(shapes)} --shape more than the kernel's tensor parameters")
    return tuple(out)


def prepare(args: argparse.Namespace) -> tuple[Any, tuple[Any, ...], Any]:
    """Load the target kernel, build its inputs and bind it: ``(kernel, inputs, bound)``; a
    kernel the compiler refuses for these inputs is a :class:`CliError` with its message.

    Example:
        >>> # prepare(parse_args(["code", "examples/kernels/add.py::add"]))[2].config_space
    """
    from torchship.kernels.errors import KernelError

    module, kernel = load_kernel(args.target)
    inputs = build_inputs(module, kernel, args)
    try:
        return kernel, inputs, kernel.bind(inputs)
    except KernelError as exc:
        shapes = " ".join("x".join(map(str, getattr(x, "shape", ()))) or "scalar" for x in inputs
                          if hasattr(x, "shape"))
        raise CliError(f"{args.target} cannot run on inputs of shape {shapes}: {exc}") from None


def _cmd_autotune(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from torchship.kernels.autotune import AutotuneCache, autotune
    from torchship.kernels.autotune.plot import plot_report
    from torchship.kernels.autotune.records import config_dict

    console = Console(soft_wrap=True)
    try:
        kernel, inputs, bound = prepare(args)
    except CliError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    report = autotune(
        bound, inputs, effort=args.effort, budget_s=args.budget, strategy=args.strategy,
        kernel=kernel, cache=False if args.no_cache else AutotuneCache(),
        force=args.force, isolate=not args.in_process, max_evals=args.max_evals,
        progress=True, log_path=args.log,
    )
    name = args.target.rsplit("::", 1)[1]
    if report.from_cache:
        took = f"{report.best_ms * 1e3:.1f} µs" if report.best_ms is not None else "no time recorded"
        console.print(f"cached winner for {name} ({took}); --force to re-tune")
        console.print(f"best config: {json.dumps(config_dict(report.config))}", markup=False)
        return 0
    table = Table(title=f"{name}: top configs ({len(report.results)} evaluated in "
                  f"{report.elapsed_s:.1f} s; stopped: {report.stop_reason})")
    table.add_column("#")
    table.add_column("time (µs)", justify="right")
    table.add_column("vs default", justify="right")
    table.add_column("config")
    for i, r in enumerate(report.top(args.top), 1):
        ratio = f"{report.default_ms / r.time_ms:.2f}x" if report.default_ms else "-"
        table.add_row(str(i), f"{r.time_ms * 1e3:.1f}", ratio,
                      Text(json.dumps(config_dict(r.config))))  # Text: no markup in "[None]"
    console.print(table)
    if any(getattr(x, "device", None) is not None and x.device.type == "cpu" for x in inputs):
        console.print("(CPU: times of Triton's interpreter, which rank configs for the interpreter "
                      "only; tune on the GPU for GPU configs)")
    failed: dict[str, int] = {}
    for r in report.results:
        if not r.ok:
            failed[r.status] = failed.get(r.status, 0) + 1
    if failed:
        console.print("rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(failed.items())))
    if report.results:
        png = plot_report(report, args.plot or f"{name}-autotune.png", title=f"autotune {name}")
        console.print(f"plot: {png}")
    if report.log_path:
        console.print(f"log: {report.log_path}")
    console.print(f"best config: {json.dumps(config_dict(report.config))}", markup=False)
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from torchship.kernels.autotune import AutotuneCache

    console = Console(soft_wrap=True)
    cache = AutotuneCache(args.dir)
    if args.cache_action == "list":
        table = Table(title=f"autotune cache: {cache.root}")
        for col in ("kernel", "args", "device", "time (µs)", "config"):
            table.add_column(col, overflow="fold")  # a cut device name or config is unreadable
        n = 0
        for _, e in cache.entries():
            k = e["key"]
            shapes = " ".join(
                "x".join(map(str, a[1])) + ":" + a[0].replace("torch.", "")
                for a in k.get("args", []) if len(a) == 3
            )
            t = e.get("time_ms")
            table.add_row(str(k.get("kernel", "?")), shapes, str(k.get("device", {}).get("name")),
                          f"{t * 1e3:.1f}" if t is not None else "-", Text(json.dumps(e["config"])))
            n += 1
        if n:
            console.print(table)
            console.print(f"{n} entries")
        else:
            missing = "" if cache.root.is_dir() else ", the directory does not exist"
            console.print(f"autotune cache {escape(str(cache.root))}: no entries{missing} "
                          "(`torchship kernels autotune FILE::KERNEL` adds one)")
    elif args.cache_action == "clear":
        console.print(f"removed {cache.clear()} entries from {cache.root}")
    else:
        if not args.path:
            console.print(f"[red]error:[/] 'cache {args.cache_action}' needs a bundle path")
            return 2
        if args.cache_action == "import" and not Path(args.path).is_file():
            console.print(f"[red]error:[/] {escape(args.path)}: no such file (write a bundle with "
                          "`torchship kernels cache export FILE` on the machine that tuned)")
            return 1
        try:
            if args.cache_action == "export":
                console.print(f"exported {cache.export(args.path)} entries to {args.path}")
            else:
                console.print(f"imported {cache.import_bundle(args.path)} entries into {cache.root}")
        except (ValueError, OSError) as exc:
            console.print(f"[red]error:[/] {exc}")
            return 1
    return 0


def _cmd_code(args: argparse.Namespace) -> int:
    try:
        _, _, bound = prepare(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = None
    if args.config:
        text = args.config
        if text.startswith("@"):
            try:
                text = Path(text[1:]).read_text(encoding="utf-8")
            except OSError as exc:
                print(f"error: --config {args.config}: cannot read: {exc.strerror or exc}", file=sys.stderr)
                return 2
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            print(f"error: --config is not JSON: {exc}", file=sys.stderr)
            return 2
        default = bound.config_space.default()
        merged = {**default.to_dict(), **data}  # unspecified knobs keep their default
        try:
            config = type(default).from_dict(merged)
            bound.config_space.validate(config)
        except Exception as exc:  # KernelConfigError names the bad knob
            print(f"error: --config: {exc}\nthe space is:\n{bound.config_space!r}", file=sys.stderr)
            return 2
    else:
        config = bound.config_space.default()
    print(bound.to_triton_code(config))
    return 0
