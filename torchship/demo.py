"""``torchship demo``: the main job, end to end, on small inputs the demo builds itself.

Each pillar contributes one step (``torchship/<pillar>/demo.py`` with ``run_step(console,
workdir, quick)``); a step that needs an optional dependency that is missing is reported and
skipped, never silently.

Example:
    >>> from torchship.demo import run_demo
    >>> run_demo(quick=True)  # doctest: +SKIP
    0
"""

from __future__ import annotations

import importlib
import tempfile
import time
from pathlib import Path

from rich.console import Console

STEPS = (
    ("weights", "torchship.weights.demo"),
    ("pickle convert", "torchship.weights.pickle.demo"),
    ("kernels", "torchship.kernels.demo"),
    ("edge", "torchship.edge.demo"),
)


def run_demo(quick: bool = False) -> int:
    """Run every pillar's demo step; return 0 when all pass.

    Example:
        >>> run_demo(quick=True)  # doctest: +SKIP
        0
    """
    console = Console()
    console.rule("[bold]torchship demo")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="torchship-demo-") as tmp:
        for title, module_name in STEPS:
            console.rule(f"[bold cyan]{title}")
            workdir = Path(tmp) / title.replace(" ", "_")
            workdir.mkdir()
            start = time.perf_counter()
            try:  # a step that needs torch (or triton) is skipped where it is not installed
                ok = bool(importlib.import_module(module_name).run_step(console, workdir, quick))
            except ModuleNotFoundError as exc:
                console.print(f"[yellow]skipped: {exc}")
                continue
            failures += not ok
            status = "[green]ok" if ok else "[red]FAILED"
            console.print(f"{status}[/] ({time.perf_counter() - start:.1f} s)")
    console.rule("[bold green]all steps passed" if not failures else f"[bold red]{failures} failed")
    return 1 if failures else 0
