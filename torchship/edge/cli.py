"""``torchship edge export | run | inspect``.

``run`` and ``inspect`` use the numpy runtime only; ``export`` imports torch.

Example:
    $ torchship edge export examples/models/zoo.py:small_cnn -o cnn.tsp
    $ torchship edge run cnn.tsp --input x.npy
    $ torchship edge inspect cnn.tsp
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np


def add_commands(sub: Any) -> None:
    """Register the edge subcommands on an argparse subparsers object.

    Example:
        >>> p = argparse.ArgumentParser(); add_commands(p.add_subparsers())
    """
    ex = sub.add_parser("export", help="export MODULE:FACTORY to a program file")
    ex.add_argument("target", help="MODULE:FACTORY (a dotted module or a .py file); FACTORY() returns a model or (model, example_inputs)")
    ex.add_argument("-o", "--output", required=True, help="program file to write")
    ex.add_argument("--input", action="append", default=[], metavar="SHAPE[:DTYPE]", help="example input shape like 1,3,32,32 (dtype f32|i64|i32|bool), one per input; overrides the factory's inputs")
    ex.add_argument("--dynamic", action="append", default=[], metavar="NAME=MIN..MAX@I:AXIS[,I:AXIS]", help="a dynamic dim shared by the listed input axes, e.g. seq=1..128@0:1,1:1")
    ex.add_argument("--method", action="append", default=[], help="also export this method of the model (same inputs), e.g. encode")
    ex.add_argument("--quantize", choices=["int8"], help="int8 weight-only linear/conv2d")
    ex.set_defaults(func=_export)

    run = sub.add_parser("run", help="run a program file on .npy inputs (numpy only)")
    run.add_argument("program")
    run.add_argument("--input", action="append", default=[], metavar="FILE.npy", help="one per method input, in order")
    run.add_argument("--method", default=None, help="method to run (default: forward)")
    run.add_argument("-o", "--output", default=None, help="save the output(s) to this .npy (several outputs: FILE_0.npy, ...)")
    run.set_defaults(func=_run)

    ins = sub.add_parser("inspect", help="show methods, ops, memory plan and sizes of a program file")
    ins.add_argument("program")
    ins.set_defaults(func=_inspect)


_DT = {"f32": "float32", "i64": "int64", "i32": "int32", "bool": "bool", "f64": "float64"}


def _load_target(target: str) -> Any:
    if ":" not in target:
        raise SystemExit(f"error: expected MODULE:FACTORY, got {target!r}")
    mod_name, factory = target.rsplit(":", 1)
    if mod_name.endswith(".py") or "/" in mod_name:
        path = Path(mod_name).resolve()
        if not path.exists():
            raise SystemExit(f"error: {path} does not exist")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.path.insert(0, str(path.parent))
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        sys.path.insert(0, ".")
        module = importlib.import_module(mod_name)
    fn = getattr(module, factory, None)
    if fn is None:
        raise SystemExit(f"error: {mod_name} has no attribute {factory!r}")
    return fn()


def parse_dynamic(specs: list[str], n_inputs: int) -> Any:
    """Parse ``NAME=MIN..MAX@I:AXIS,...`` flags into a torch.export dynamic_shapes tuple.

    Example:
        >>> parse_dynamic(["seq=1..128@0:1,1:1"], 2)  # doctest: +SKIP
        ({1: Dim('seq', min=1, max=128)}, {1: Dim('seq', min=1, max=128)})
    """
    if not specs:
        return None
    from torch.export import Dim

    shapes: list[dict[int, Any]] = [{} for _ in range(n_inputs)]
    for spec in specs:
        m = re.fullmatch(r"(\w+)=(\d+)\.\.(\d+)@([\d:,]+)", spec)
        if not m:
            raise SystemExit(f"error: --dynamic {spec!r} must look like seq=1..128@0:1,1:1")
        name, lo, hi, where = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        dim = Dim(name, min=lo, max=hi)
        for item in where.split(","):
            i, axis = (int(v) for v in item.split(":"))
            if not 0 <= i < n_inputs:
                raise SystemExit(f"error: --dynamic {spec!r}: input {i} does not exist ({n_inputs} inputs)")
            shapes[i][axis] = dim
    return tuple(d or None for d in shapes)


def _export(args: argparse.Namespace) -> int:
    import torch

    from torchship.edge import export

    made = _load_target(args.target)
    model, inputs = (made if isinstance(made, tuple) else (made, None))
    if args.input:
        inputs = []
        for spec in args.input:
            shape_s, _, dt = spec.partition(":")
            shape = [int(v) for v in shape_s.split(",") if v]
            dtype = getattr(torch, _DT.get(dt or "f32", "float32"))
            inputs.append(torch.randn(shape).to(dtype) if dtype.is_floating_point else torch.ones(shape, dtype=dtype))
        inputs = tuple(inputs)
    if inputs is None:
        raise SystemExit("error: the factory returned only a model; give example input shapes with --input")
    dyn = parse_dynamic(args.dynamic, len(inputs))
    methods = {m: (inputs, dyn) for m in args.method}
    prog = export(model, inputs, dynamic_shapes=dyn, methods=methods, quantize=args.quantize)
    prog.save(args.output)
    _print_summary(args.output)
    for key, value in prog.metadata.items():
        if "_max_rel_err." in key:
            print(f"{args.quantize} accuracy loss ({key.split('.', 1)[1]}): max relative error {value} vs eager on the example inputs")
    return 0


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from torchship.edge.runtime import ProgramError, load

    console = Console()
    try:
        prog = load(args.program)
        method = prog.method(args.method or ("forward" if "forward" in prog.methods else next(iter(prog.methods))))
        arrays = [np.load(p, allow_pickle=False) for p in args.input]
        out = method(*arrays)
    except (ProgramError, OSError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1
    outs = out if isinstance(out, tuple) else (out,)
    for i, o in enumerate(outs):
        console.print(f"output {i}: {o.dtype} {list(o.shape)}  min {o.min() if o.size else 0:.6g}  max {o.max() if o.size else 0:.6g}")
        if args.output:
            path = args.output if len(outs) == 1 else str(Path(args.output).with_suffix("")) + f"_{i}.npy"
            np.save(path, o)
            console.print(f"  saved {path}")
    return 0


def _fmt(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _print_summary(path: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from torchship.edge.runtime import load

    prog = load(path)
    console = Console()
    size = Path(path).stat().st_size
    wbytes = sum(i.nbytes for i in prog.spec.weights.tensors.values())
    console.print(f"[bold]{path}[/]: {_fmt(size)}, {len(prog.spec.weights.tensors)} weights ({_fmt(wbytes)}) at offset {prog.spec.weights_offset}")
    for name, m in prog.methods.items():
        spec = m.spec
        t = Table(title=f"method {name}", show_header=True)
        t.add_column("what")
        t.add_column("value")
        t.add_row("inputs", _sig(spec, spec.inputs))
        t.add_row("outputs", _sig(spec, spec.outputs))
        t.add_row("symbols", ", ".join(f"{s} in [{lo}, {hi}]" for s, (lo, hi) in spec.symbols.items()) or "-")
        t.add_row("instructions", str(len(spec.instrs)))
        ops = Counter(i.op for i in spec.instrs)
        t.add_row("ops", ", ".join(f"{k} x{v}" for k, v in ops.most_common()))
        tb = m.tensor_bytes()
        t.add_row("arena (planned)", f"{_fmt(spec.arena_size)} vs {_fmt(tb)} sum of tensor sizes, unaligned, no reuse ({spec.arena_size / max(tb, 1):.0%})")
        console.print(t)


def _sig(spec: Any, vids: list[int]) -> str:
    return ", ".join(f"{spec.values[v].dtype}{spec.values[v].shape}" for v in vids)


def _inspect(args: argparse.Namespace) -> int:
    from rich.console import Console

    from torchship.edge.runtime import ProgramError

    try:
        _print_summary(args.program)
    except ProgramError as exc:
        Console().print(f"[red]error:[/] {exc}")
        return 1
    return 0
