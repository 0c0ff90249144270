"""``torchship weights convert`` and ``torchship weights scan``.

Example:
    $ torchship weights convert pytorch_model.bin -o model.safetensors
    $ torchship weights scan downloads/ --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from torchship.weights.pickle.convert import ConvertError, convert
from torchship.weights.pickle.scan import ScanReport, scan

_COLOURS = {"safe": "green", "suspicious": "yellow", "dangerous": "bold red"}


def _check_output(src: str, out: str | None) -> None:
    """``-o DIR/`` (a trailing slash) for a file input is a directory, made if missing (as
    for a directory of shards); any other ``-o`` needs an existing parent directory."""
    if out is None or not Path(src).is_file():  # a directory, or missing: convert says
        return
    if out.endswith("/"):
        Path(out).mkdir(parents=True, exist_ok=True)
    elif not Path(out).resolve().parent.is_dir():
        raise ConvertError(f"-o {out}: directory {Path(out).resolve().parent} does not exist")


def _convert(args: argparse.Namespace) -> int:
    console = Console(stderr=args.json, soft_wrap=True)  # a message stays one line
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=args.json or not console.is_terminal) as bar:
        task = bar.add_task("converting", total=None)

        def progress(name: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=escape(name[-40:]))

        try:
            _check_output(args.input, args.output)
            report = convert(args.input, args.output, verify=not args.no_verify,
                             progress=progress, strict=not args.skip_objects)
        except ConvertError as exc:
            console.print(f"[bold red]refused:[/] {escape(str(exc))}")
            return 2
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    console.print(f"[green]converted[/] {escape(report.source)} ({report.container}) -> "
                  + ", ".join(escape(o) for o in report.outputs))
    console.print(f"  {report.tensors} tensors, {report.nbytes / 2**20:.1f} MiB, "
                  f"{report.seconds:.2f} s, "
                  + ("verified by reading back" if report.verified else "[yellow]not verified"))
    if report.tied:
        console.print(f"  tied weights stored once: {len(report.tied)} "
                      f"(e.g. {escape(next(iter(report.tied)))} -> "
                      f"{escape(next(iter(report.tied.values())))}), recorded in metadata")
    if report.views_copied:
        console.print(f"  {report.views_copied} non-contiguous views written contiguous")
    if report.values:
        shown = ", ".join(f"{escape(k)}={escape(v[:30])}" for k, v in list(report.values.items())[:6])
        console.print(f"  non-tensor values kept in metadata ({len(report.values)}): {shown}")
    for name, why in list(report.dropped.items())[:10]:
        console.print(f"  [yellow]dropped[/] {escape(name)}: {escape(why)}")
    return 0


def print_reports(console: Console, reports: list[ScanReport]) -> None:
    """Rich table of scan verdicts, one row per file, then the globals of unsafe files.

    Example: ``print_reports(Console(), scan(['m.pt']))``.
    """
    table = Table(title="pickle scan")
    table.add_column("file", overflow="fold")  # a cut path can hide which file is dangerous
    table.add_column("format")
    table.add_column("verdict")
    table.add_column("globals (not safe first)", overflow="fold")
    for r in reports:
        gl = sorted(r.globals, key=lambda g: -{"dangerous": 2, "suspicious": 1}.get(g.verdict, 0))
        names = ", ".join(f"[{_COLOURS[g.verdict]}]{escape(g.qualname)}[/]" for g in gl[:6])
        if len(gl) > 6:
            names += f", +{len(gl) - 6}"
        table.add_row(escape(r.path), r.format, f"[{_COLOURS[r.verdict]}]{r.verdict}[/]", names)
    console.print(table)
    for r in reports:
        if r.verdict == "safe":
            continue
        console.print(f"[{_COLOURS[r.verdict]}]{r.verdict}[/] {escape(r.path)}")
        for g in r.globals:
            if g.verdict != "safe":
                console.print(f"  {escape(g.qualname)} ({g.verdict}, x{g.count}, {escape(g.where)} "
                              f"@{g.offset}): {escape(g.reason)}")
        for call in r.calls[:20]:
            console.print(f"  would run: {escape(call)}")
        for problem in r.problems[:20]:
            console.print(f"  problem: {escape(problem)}")


def _scan(args: argparse.Namespace) -> int:
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        print(f"error: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    reports = scan(args.paths)
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=2))
    else:
        console = Console()
        if not reports:
            console.print("[yellow]no files to scan")
        print_reports(console, reports)
    if not reports:
        return 1
    return 0 if all(r.verdict == "safe" for r in reports) else 1


def add_commands(subparsers: Any) -> None:
    """Add ``convert`` and ``scan`` to the ``torchship weights`` subcommands.

    Example:
        >>> p = argparse.ArgumentParser(); add_commands(p.add_subparsers(dest="cmd"))
        >>> p.parse_args(["scan", "a.pt", "--json"]).json
        True
    """
    conv = subparsers.add_parser(
        "convert", help="convert a pickle checkpoint (or a directory of shards) to safetensors "
        "without executing it")
    conv.add_argument("input", help="a .bin/.pt/.pth/.ckpt/.npz/.npy file or a directory of pickle shards")
    conv.add_argument("-o", "--output", default=None,
                      help="output file, or directory (DIR/, made if missing; for shards, always); "
                           "default: beside the input")
    conv.add_argument("--no-verify", action="store_true", help="skip reading the result back")
    conv.add_argument("--json", action="store_true", help="print the report as JSON")
    conv.add_argument("--skip-objects", action="store_true",
                      help="do not refuse objects of classes that run no code themselves "
                           "(argparse.Namespace hyper-parameters, a pickled nn.Module): convert "
                           "the tensors (a module's as its state_dict) and list what was skipped")
    conv.set_defaults(func=_convert)
    sc = subparsers.add_parser(
        "scan", help="report what pickle checkpoints would run; exit code 0 only if all are safe")
    sc.add_argument("paths", nargs="+", help="files or directories")
    sc.add_argument("--json", action="store_true", help="print the reports as JSON")
    sc.set_defaults(func=_scan)


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="torchship-pickle")
    add_commands(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args()
    sys.exit(ns.func(ns))
