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
import inspect
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np


def add_commands(sub: Any) -> None:
    """Register the edge subcommands on an argparse subparsers object.

    Example:
        >>> p = argparse.ArgumentParser(); add_commands(p.add_subparsers())
    """
    ex = sub.add_parser("export", help="export MODULE:FACTORY to a program file")
    ex.add_argument("target", help="MODULE:FACTORY (a dotted module or a .py file); FACTORY() returns a model or (model, example_inputs)")
    ex.add_argument("-o", "--output", required=True, help="program file to write")
    ex.add_argument("--input", action="append", default=[], metavar="SHAPE[:DTYPE]", help=f"example input shape like 1,3,32,32 or 2,16:i64 (dtype {'|'.join(_DT)}, default f32), one per input; overrides the factory's inputs")
    ex.add_argument("--dynamic", action="append", default=[], metavar="NAME=MIN..MAX@I:AXIS[,I:AXIS]", help="a dynamic dim shared by the listed input axes, e.g. seq=1..128@0:1,1:1")
    ex.add_argument("--method", action="append", default=[], help="also export this method of the model (same inputs), e.g. encode")
    ex.add_argument("--quantize", choices=["int8"], help="int8 weight-only linear/conv2d")
    ex.set_defaults(func=_export)

    run = sub.add_parser("run", help="run a program file on .npy inputs (numpy only)")
    run.add_argument("program", help="a .tsp program file (from `torchship edge export`)")
    run.add_argument("--input", action="append", default=[], metavar="FILE.npy", help="one per method input, in order")
    run.add_argument("--method", default=None, help="method to run (default: forward)")
    run.add_argument("-o", "--output", default=None, help="save the output(s) to this .npy (several outputs: FILE_0.npy, ...)")
    run.set_defaults(func=_run)

    ins = sub.add_parser("inspect", help="show methods, ops, memory plan and sizes of a program file")
    ins.add_argument("program", help="a .tsp program file (from `torchship edge export`)")
    ins.set_defaults(func=_inspect)


_DT = {"f32": "float32", "f64": "float64", "f16": "float16", "bf16": "bfloat16", "i64": "int64", "i32": "int32", "i8": "int8",
       "u8": "uint8", "bool": "bool"}


def _load_target(target: str) -> Any:
    if ":" not in target:
        raise SystemExit(f"error: expected MODULE:FACTORY, got {target!r} (e.g. examples/models/zoo.py:mlp)")
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
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            raise SystemExit(f"error: {target}: cannot import {exc.name!r} (give a dotted module importable "
                             "from the current directory, or a path to a .py file)") from None
    fn = getattr(module, factory, None)
    if fn is None:
        found = sorted(k for k, v in vars(module).items() if inspect.isfunction(v) and not k.startswith("_"))
        raise SystemExit(f"error: {mod_name} has no attribute {factory!r} (functions there: {', '.join(found) or 'none'})")
    try:
        inspect.signature(fn).bind()
    except TypeError as exc:
        raise SystemExit(f"error: {target}: the factory must be callable with no arguments ({exc})") from None
    except ValueError:  # no signature to check (a builtin): just call it
        pass
    return fn()


def parse_input(spec: str) -> tuple[list[int], str]:
    """Parse an ``--input SHAPE[:DTYPE]`` flag into (shape, torch dtype name).

    Example:
        >>> parse_input("2,16:i64")
        ([2, 16], 'int64')
    """
    shape_s, _, dt = spec.partition(":")
    if (dt or "f32") not in _DT:
        raise SystemExit(f"error: --input {spec!r}: unknown dtype {dt!r} (one of {', '.join(_DT)})")
    parts = [v.strip() for v in shape_s.split(",") if v.strip()]
    if not all(v.isdigit() for v in parts):
        raise SystemExit(f"error: --input {spec!r}: the shape must be non-negative integers separated by commas, e.g. 1,3,32,32")
    return [int(v) for v in parts], _DT[dt or "f32"]


def parse_dynamic(specs: list[str], ranks: list[int]) -> Any:
    """Parse ``NAME=MIN..MAX@I:AXIS,...`` flags into a torch.export dynamic_shapes tuple, for
    inputs of the given ranks.

    Example:
        >>> parse_dynamic(["seq=1..128@0:1,1:1"], [2, 2])  # doctest: +SKIP
        ({1: Dim('seq', min=1, max=128)}, {1: Dim('seq', min=1, max=128)})
    """
    if not specs:
        return None
    from torch.export import Dim

    shapes: list[dict[int, Any]] = [{} for _ in ranks]
    for spec in specs:
        m = re.fullmatch(r"(\w+)=(\d+)\.\.(\d+)@(\d+:\d+(?:,\d+:\d+)*)", spec)
        if not m:
            raise SystemExit(f"error: --dynamic {spec!r} must look like seq=1..128@0:1,1:1 (NAME=MIN..MAX@INPUT:AXIS,...)")
        name, lo, hi, where = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        if lo > hi:
            raise SystemExit(f"error: --dynamic {spec!r}: MIN {lo} is larger than MAX {hi}")
        dim = Dim(name, min=lo, max=hi)
        for item in where.split(","):
            i, axis = (int(v) for v in item.split(":"))
            if not 0 <= i < len(ranks):
                raise SystemExit(f"error: --dynamic {spec!r}: input {i} does not exist ({len(ranks)} inputs)")
            if axis >= ranks[i]:
                raise SystemExit(f"error: --dynamic {spec!r}: input {i} has {ranks[i]} dims, no axis {axis}")
            shapes[i][axis] = dim
    return tuple(d or None for d in shapes)


def dynamic_hint(specs: list[str], inputs: tuple[Any, ...]) -> str:
    """When torch.export found a ``--dynamic`` dim constant, name the unlisted input axes of
    the same example size (usually another input that follows the same length, e.g. a mask)
    and the flag that lists them too; empty when there are none.

    Example:
        >>> import numpy as np
        >>> dynamic_hint(["seq=1..128@0:1"], (np.zeros((2, 16)), np.zeros((2, 16))))
        'hint: input 1 axis 1 also has size 16; if it follows seq, list it too: --dynamic seq=1..128@0:1,1:1'
    """
    hints = []
    for spec in specs:
        head, _, where = spec.partition("@")
        listed = [tuple(int(v) for v in item.split(":")) for item in where.split(",")]
        sizes = {inputs[i].shape[axis] for i, axis in listed}
        others = [(i, axis) for i, x in enumerate(inputs) for axis, n in enumerate(getattr(x, "shape", ()))
                  if n in sizes and (i, axis) not in listed]
        if others:
            named = ", ".join(f"input {i} axis {a}" for i, a in others)
            size = "/".join(map(str, sorted(sizes)))
            flag = ",".join(f"{i}:{a}" for i, a in [*listed, *others])
            hints.append(f"hint: {named} also has size {size}; if it follows {head.split('=')[0]}, "
                         f"list it too: --dynamic {head}@{flag}")
    return "\n".join(hints)


def _export(args: argparse.Namespace) -> int:
    try:
        import torch
    except ImportError:
        raise SystemExit("error: edge export needs torch: pip install 'torchship[torch]' "
                         "(from a clone: pip install '.[torch]'); run and inspect need only numpy") from None

    from torchship.edge import ExportError, export
    from torchship.edge.runtime import ProgramError

    out_dir = Path(args.output).resolve().parent
    if not out_dir.is_dir():
        raise SystemExit(f"error: -o {args.output}: directory {out_dir} does not exist")
    if Path(args.output).is_dir():
        raise SystemExit(f"error: -o {args.output}: is a directory; give the program file's name, "
                         f"e.g. -o {Path(args.output) / 'model.tsp'}")
    parsed = [parse_input(spec) for spec in args.input]
    made = _load_target(args.target)
    if isinstance(made, tuple) and len(made) != 2:
        raise SystemExit(f"error: {args.target} returned a tuple of {len(made)}; a factory returns a model "
                         "or (model, example_inputs)")
    model, inputs = (made if isinstance(made, tuple) else (made, None))
    if not isinstance(model, torch.nn.Module):
        raise SystemExit(f"error: {args.target} returned a {type(model).__name__}, not a torch.nn.Module "
                         "(wrap the function in a Module's forward)")
    if isinstance(inputs, torch.Tensor):  # (model, x): one example input
        inputs = (inputs,)
    if parsed:
        inputs = []
        for shape, dtype_name in parsed:
            dtype = getattr(torch, dtype_name)
            inputs.append(torch.randn(shape).to(dtype) if dtype.is_floating_point else torch.ones(shape, dtype=dtype))
        inputs = tuple(inputs)
    if inputs is None:
        raise SystemExit("error: the factory returned only a model; give example input shapes with --input")
    dyn = parse_dynamic(args.dynamic, [getattr(x, "ndim", 0) for x in inputs])
    methods = {m: (inputs, dyn) for m in args.method}
    try:
        prog = export(model, inputs, dynamic_shapes=dyn, methods=methods, quantize=args.quantize)
    except ExportError as exc:
        hint = dynamic_hint(args.dynamic, inputs) if "specialized it to be a constant" in str(exc) else ""
        raise SystemExit(f"error: {exc}" + (f"\n{hint}" if hint else "")) from None
    prog.save(args.output)
    try:
        _print_summary(args.output)
    except ProgramError as exc:  # the exporter wrote a file its own runtime refuses
        raise SystemExit(f"error: {args.output} was written but does not load (an export bug; please report it): {exc}") from None
    for key, value in prog.metadata.items():
        if "_max_rel_err." in key:
            print(f"{args.quantize} accuracy loss ({key.split('.', 1)[1]}): max relative error {value} vs eager on the example inputs")
    return 0


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from torchship.edge.runtime import ProgramError, load

    console = Console(soft_wrap=True)
    try:
        if args.output and (args.output.endswith("/") or Path(args.output).is_dir()):
            raise ValueError(f"-o {args.output}: is a directory; give a .npy file name, e.g. -o {Path(args.output) / 'out.npy'}")
        if args.output and not Path(args.output).resolve().parent.is_dir():
            raise ValueError(f"-o {args.output}: directory {Path(args.output).resolve().parent} does not exist")
        prog = load(args.program)
        method = prog.method(args.method or ("forward" if "forward" in prog.methods else next(iter(prog.methods))))
        if len(args.input) != len(method.spec.inputs):
            raise ValueError(f"{args.program}: {method.name} takes {len(method.spec.inputs)} input(s) "
                             f"({_sig(method.spec, method.spec.inputs)}), got {len(args.input)} --input: "
                             "give one --input FILE.npy per input, in order")
        arrays = [_load_npy(p) for p in args.input]
        out = method(*arrays)
    except (ProgramError, OSError, ValueError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 1
    outs = out if isinstance(out, tuple) else (out,)
    for i, o in enumerate(outs):
        console.print(f"output {i}: {o.dtype} {list(o.shape)}  min {o.min() if o.size else 0:.6g}  max {o.max() if o.size else 0:.6g}")
        if args.output:
            stem = str(Path(args.output).with_suffix("")) if args.output.endswith(".npy") else args.output
            path = f"{stem}.npy" if len(outs) == 1 else f"{stem}_{i}.npy"  # the name np.save writes
            np.save(path, o)
            raw = " (bfloat16 as raw 2-byte records: np.load(...).view(ml_dtypes.bfloat16))" if o.dtype == ml_dtypes.bfloat16 else ""
            console.print(f"  saved {escape(path)}{raw}")
    return 0


def _load_npy(path: str) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except FileNotFoundError:
        raise ValueError(f"--input {path}: no such file") from None
    if magic != b"\x93NUMPY":
        raise ValueError(f"--input {path}: not a .npy file (write one with numpy.save)")
    arr = np.load(path, allow_pickle=False)
    # numpy.save writes an ml_dtypes.bfloat16 array as raw 2-byte records: read them back as bf16
    return arr.view(ml_dtypes.bfloat16) if arr.dtype.kind == "V" and arr.dtype.itemsize == 2 else arr


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
    from rich.markup import escape

    from torchship.edge.runtime import ProgramError

    try:
        _print_summary(args.program)
    except ProgramError as exc:
        Console(soft_wrap=True).print(f"[red]error:[/] {escape(str(exc))}")
        return 1
    return 0
