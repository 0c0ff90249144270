"""The ``torchship`` command: one CLI, a subcommand per pillar plus ``demo``.

Each pillar owns its subcommands in ``torchship/<pillar>/cli.py`` through a function
``add_commands(subparsers)``; this module only wires them together and imports a pillar when
its subcommand runs, so ``torchship weights ...`` works without torch installed.

Example:
    $ torchship weights inspect model.safetensors
    $ torchship demo
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

PILLARS = ("weights", "kernels", "edge")
EXTRAS = {"weights": "torch", "kernels": "kernels", "edge": "torch"}  # pyproject extras
PILLAR_HELP = {
    "weights": "safetensors files: inspect, verify; pickle checkpoints: convert, scan",
    "kernels": "tile kernels: autotune, the autotune cache, generated Triton code",
    "edge": "program files: export a torch model, run or inspect one with numpy only",
}


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser.

    Example:
        >>> build_parser().parse_args(["demo"]).command
        'demo'
    """
    from torchship import __version__

    parser = argparse.ArgumentParser(prog="torchship", description="Ship PyTorch models to production: kernels, weights, edge.")
    parser.add_argument("--version", action="version", version=f"torchship {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for pillar in PILLARS:
        pillar_parser = sub.add_parser(pillar, help=PILLAR_HELP[pillar], description=PILLAR_HELP[pillar])
        try:
            module = importlib.import_module(f"torchship.{pillar}.cli")
        except ImportError as exc:  # an optional dependency of that pillar is missing
            pillar_parser.add_argument("args", nargs=argparse.REMAINDER, help=f"unavailable here: {exc}")
            pillar_parser.set_defaults(_import_error=exc)
            continue
        pillar_sub = pillar_parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
        module.add_commands(pillar_sub)
        _describe_commands(pillar_sub)
    demo_help = "run the main job end to end on a built-in model (every pillar, in a temp dir)"
    demo = sub.add_parser("demo", help=demo_help, description=demo_help)
    demo.add_argument("--quick", action="store_true", help="smaller sizes")
    demo.set_defaults(func=_run_demo)
    return parser


def _describe_commands(subparsers: argparse._SubParsersAction) -> None:
    """Give each subcommand's ``--help`` its one-line ``help`` as a description (the pillars
    register them with ``help=`` only, which argparse shows in the parent's list alone)."""
    helps = {action.dest: action.help for action in subparsers._choices_actions}
    for name, command in subparsers.choices.items():
        if command.description is None and helps.get(name):
            command.description = helps[name]


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name`` of ``parser``."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return actions[0].choices[name]


def _run_demo(args: argparse.Namespace) -> int:
    from torchship.demo import run_demo

    return run_demo(quick=args.quick)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``torchship`` console script.

    Example:
        >>> main(["weights", "verify", "missing.safetensors"])  # doctest: +SKIP
        1
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or (len(argv) == 1 and argv[0] in PILLARS):  # `torchship`, `torchship edge`: what is there
        shown = _subparser(parser, argv[0]) if argv else parser
        if shown.get_default("_import_error") is None:
            shown.print_help(sys.stderr)
            return 2
    args = parser.parse_args(argv)
    error = getattr(args, "_import_error", None)
    if error is not None:
        extra = EXTRAS[args.command]
        print(f"torchship {args.command}: error: {error}; install it with pip install 'torchship[{extra}]' "
              f"(from a clone: pip install '.[{extra}]')", file=sys.stderr)
        return 2
    func = getattr(args, "func", None)
    if func is None:
        parser.error("missing subcommand")
    try:
        return int(func(args) or 0)
    except BrokenPipeError:  # `torchship ... | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
