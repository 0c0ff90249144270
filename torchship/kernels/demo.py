"""Demo step for the kernels pillar: softmax, layer_norm and matmul written in the tile
language, run in reference mode and compiled (Triton interpreter on CPU, the real GPU where one
exists), checked against torch, with a snippet of the generated Triton.

Example:
    >>> from rich.console import Console
    >>> run_step(Console(), Path("/tmp/demo"), quick=True)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

DEMO_EXAMPLES = ("softmax", "layer_norm", "matmul")


@contextlib.contextmanager
def _env(**values: str | None) -> Iterator[None]:
    """Set (or, with None, remove) environment variables for the duration of the block."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _examples_module(name: str) -> Any:
    """Import ``examples.kernels.<name>`` (from the source checkout the package lives in)."""
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)
    import importlib

    return importlib.import_module(f"examples.kernels.{name}")


def _max_err(got: Any, expected: Any) -> float:
    return float((got.double() - expected.double()).abs().max().item())


def _timed(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run_step(console: Console, workdir: Path, quick: bool) -> bool:
    """Run the kernels demo; print a result table and generated code; True when all match.

    Example:
        >>> run_step(Console(), Path("/tmp/k"), quick=True)  # doctest: +SKIP
        True
    """
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    compiled_label = "compiled (GPU)" if device == "cuda" else "compiled (Triton interpreter)"
    console.print(f"device: [bold]{device}[/]; examples: {', '.join(DEMO_EXAMPLES)}")
    table = Table(title="tile-language kernels vs torch (float64 reference)")
    timed = ("first call", "next call")
    for col in ("kernel", "shape", "mode", "max |err|", "tolerance", *timed, "result"):
        table.add_column(col, justify="right" if col in ("max |err|", *timed) else "left")
    ok = True
    snippet: str | None = None
    for name in DEMO_EXAMPLES:
        try:
            mod = _examples_module(name)
        except ImportError as exc:
            console.print(
                f"[red]cannot import examples.kernels.{name} ({exc}); the kernels demo runs "
                "from a source checkout of torchship (the examples/ folder)"
            )
            return False
        kernel, kwargs = next(iter(mod.VARIANTS.values()))
        args = mod.make_inputs("test", device=device, dtype=torch.float32, seed=0)
        shape = " x ".join(str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor))
        expected = mod.reference(*[a.double() if a.is_floating_point() else a for a in args])
        tol = mod.TOLERANCE[torch.float32]
        modes = [("reference", {"TORCHSHIP_INTERPRET": "1"})]
        modes.append(
            (compiled_label, {"TORCHSHIP_INTERPRET": None, "TORCHSHIP_AUTOTUNE_EFFORT": "none"})
        )
        for mode, env in modes:
            try:
                with _env(**env):
                    got, first = _timed(kernel, args, kwargs)  # compiles (cached after)
                    _, again = _timed(kernel, args, kwargs)
                err = _max_err(got, expected)
                passed = bool(
                    torch.allclose(got.double(), expected.double(), **tol)
                )
                result = "[green]ok" if passed else "[red]MISMATCH"
                table.add_row(
                    name, shape, mode, f"{err:.1e}", f"{tol['atol']:.0e}", f"{first * 1e3:.1f} ms",
                    f"{again * 1e3:.1f} ms", result,
                )
            except Exception as exc:  # report every failure in the table, keep going
                passed = False
                table.add_row(name, shape, mode, "-", "-", "-", "-", f"[red]{type(exc).__name__}: {exc}"[:80])
            ok = ok and passed
        if snippet is None:
            try:
                with _env(TORCHSHIP_INTERPRET=None, TORCHSHIP_AUTOTUNE_EFFORT="none"):
                    snippet = kernel.to_triton_code(args=args)
            except Exception as exc:  # the table above already says what failed
                console.print(f"[yellow]no generated code to show: {type(exc).__name__}: {exc}")
                snippet = ""
    console.print(table)
    if snippet:
        lines = snippet.splitlines()
        shown = "\n".join(lines[: 25 if quick else 60])
        more = f"\n# ... {len(lines) - 25} more lines" if quick and len(lines) > 25 else ""
        (workdir / "softmax_triton.py").write_text(snippet)
        console.print(f"generated Triton for softmax (full text in {workdir / 'softmax_triton.py'}):")
        console.print(Syntax(shown + more, "python", theme="ansi_dark", line_numbers=False))
    return ok
