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
from collections.abc import Callable, Iterator, Sequence
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


def _pairs(got: Any, expected: Any) -> list[tuple[Any, Any]]:
    if isinstance(expected, tuple):
        if not isinstance(got, tuple) or len(got) != len(expected):
            raise TypeError(f"expected a tuple of {len(expected)} tensors, got {type(got).__name__}")
        return list(zip(got, expected))
    return [(got, expected)]


def _timed(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def check_examples(
    console: Console,
    names: Sequence[str],
    *,
    device: str,
    dtype: Any = None,
    shape_key: str = "test",
    all_variants: bool = False,
    seed: int = 0,
) -> bool:
    """Run example kernels in reference and compiled mode against their float64 reference
    (no autotuning: the default config); print one table; True when every run matches.

    Example:
        >>> check_examples(Console(), ["softmax"], device="cpu")  # doctest: +SKIP
        True
    """
    import torch

    dtype = dtype or torch.float32
    compiled_label = "GPU" if device == "cuda" else "interpreter"
    modes = [
        ("ref", {"TORCHSHIP_INTERPRET": "1"}),
        (compiled_label, {"TORCHSHIP_INTERPRET": None, "TORCHSHIP_AUTOTUNE_EFFORT": "none"}),
    ]
    table = Table(title=f"tile-language kernels vs torch (float64 reference), {dtype}, {device}")
    for col in ("kernel", "mode", "max |err|", "atol", "ms 1st/next", "result"):
        table.add_column(col, justify="left" if col in ("kernel", "mode") else "right",
                         no_wrap=True)
    shapes: list[str] = []
    ok = True
    for name in names:
        try:
            mod = _examples_module(name)
        except ImportError as exc:
            console.print(
                f"[red]cannot import examples.kernels.{name} ({exc}); the kernel examples run "
                "from a source checkout of torchship (the examples/ folder)"
            )
            return False
        variants = list(mod.VARIANTS.items())
        for variant, (kernel, kwargs) in variants if all_variants else variants[:1]:
            args = mod.make_inputs(shape_key, device=device, dtype=dtype, seed=seed)
            shape = ", ".join("x".join(map(str, a.shape)) for a in args if isinstance(a, torch.Tensor))
            shapes.append(f"{variant}: {shape}")
            wide = [a.double() if a.is_floating_point() else a for a in args]
            expected = mod.reference(*wide, **kwargs)
            tol = mod.TOLERANCE[dtype]
            for mode, env in modes:
                try:
                    with _env(**env):
                        got, first = _timed(kernel, args, kwargs)  # compiles (cached after)
                        _, again = _timed(kernel, args, kwargs)
                    pairs = _pairs(got, expected)
                    err = max(float((g.double() - e).abs().max()) for g, e in pairs)
                    passed = all(torch.allclose(g.double(), e, **tol) for g, e in pairs)
                    table.add_row(
                        variant, mode, f"{err:.1e}", f"{tol['atol']:.0e}",
                        f"{first * 1e3:.0f}/{again * 1e3:.0f}",
                        "[green]ok" if passed else "[red]MISMATCH",
                    )
                except Exception as exc:  # report every failure in the table, keep going
                    passed = False
                    message = f"[red]{type(exc).__name__}: {exc}"[:100]
                    table.add_row(variant, mode, "-", "-", "-", message)
                ok = ok and passed
    table.caption = "inputs: " + "; ".join(shapes) + (
        ". ref = reference mode (TORCHSHIP_INTERPRET=1); "
        f"{compiled_label} = compiled with the default config"
    )
    console.print(table)
    return ok


def run_step(console: Console, workdir: Path, quick: bool) -> bool:
    """Run the kernels demo; print a result table and generated code; True when all match.

    Example:
        >>> run_step(Console(), Path("/tmp/k"), quick=True)  # doctest: +SKIP
        True
    """
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    console.print(f"device: [bold]{device}[/]; examples: {', '.join(DEMO_EXAMPLES)}")
    ok = check_examples(console, DEMO_EXAMPLES, device=device)
    try:
        mod = _examples_module("softmax")
        args = mod.make_inputs("test", device=device, seed=0)
        with _env(TORCHSHIP_INTERPRET=None, TORCHSHIP_AUTOTUNE_EFFORT="none"):
            snippet = mod.softmax.to_triton_code(args=args)
    except Exception as exc:  # the table above already says what failed
        console.print(f"[yellow]no generated code to show: {type(exc).__name__}: {exc}")
        return False
    lines = snippet.splitlines()
    keep = 25 if quick else 60
    more = f"\n# ... {len(lines) - keep} more lines" if len(lines) > keep else ""
    path = workdir / "softmax_triton.py"
    path.write_text(snippet)
    console.print(f"generated Triton for softmax (full text in {path}):")
    console.print(Syntax("\n".join(lines[:keep]) + more, "python", theme="ansi_dark"))
    return ok
