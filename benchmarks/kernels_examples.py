"""The example kernels' benchmark shapes and hand-picked H100 configs, as a table.

``benchmarks/kernels.py`` (the GPU suite) measures the examples; this file records, per example
variant and shape key, the input shapes, bytes moved, flops, and a *hand-picked* config for an
H100 (what an engineer would choose from the Triton tutorials: whole rows per program for row
kernels, 128x128x64 tiles with L2 grouping and 3 stages for matmul, ...). Hand-picked knobs are
given by loop-variable name (``tm``, ``tn``, ``tk``...) and merged into the kernel's own
``config_space.default()`` by :func:`hand_picked_config`, so they stay valid when the compiler's
knob order changes.

Run (no GPU needed; shapes are read from the examples, inputs are not allocated):
    $ python benchmarks/kernels_examples.py --json /tmp/kernels_examples.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHAPE_KEYS = ("gpu_small", "gpu_large")
ROW_WARPS = {"gpu_small": 8, "gpu_large": 16}


@dataclass(frozen=True)
class BenchCase:
    """One benchmark case: an example variant at a shape key and dtype, with its knobs."""

    example: str
    variant: str
    shape_key: str
    dtype: str
    knobs: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def _row(example: str, variant: str, dtype: str = "bfloat16", warps: int | None = None,
         stages: int = 1, **blocks: int) -> list[BenchCase]:
    return [
        BenchCase(example, variant, key, dtype, {
            "blocks": {"tm": 1, **blocks}, "num_warps": warps or ROW_WARPS[key],
            "num_stages": stages,
        })
        for key in SHAPE_KEYS
    ]


def _tiles2d(example: str, variant: str) -> list[BenchCase]:
    return [
        BenchCase(example, variant, key, "bfloat16",
                  {"blocks": {"tm": 4, "tn": 1024}, "num_warps": 8, "num_stages": 1})
        for key in SHAPE_KEYS
    ]


def _mm(example: str, variant: str, dtype: str) -> list[BenchCase]:
    return [
        BenchCase(example, variant, key, dtype, {
            "blocks": {"tb": 1, "tm": 128, "tn": 128 if key == "gpu_small" or dtype == "float32"
                       else 256, "tk": 64 if dtype != "float32" else 32},
            "num_warps": 8, "num_stages": 3 if dtype != "float32" else 2, "l2_grouping": 8,
        })
        for key in SHAPE_KEYS
    ]


CASES: list[BenchCase] = [
    *_tiles2d("add", "add"),
    *_row("softmax", "softmax"),
    # streaming rows: 2048-wide chunks, 8 warps (H100 run of 2026-11-26: 112.6 us at 8192^2,
    # vs 209.5 us for 1024-wide chunks with 16 warps)
    *_row("softmax", "softmax_two_pass", warps=8, stages=2, tn=2048),
    *_row("layer_norm", "layer_norm"),
    *_row("rms_norm", "rms_norm"),
    *_mm("matmul", "matmul", "bfloat16"),
    *_mm("matmul", "matmul", "float16"),
    *_mm("matmul", "matmul", "float32")[:1],
    *_mm("matmul_epilogue", "matmul_bias_relu", "bfloat16"),
    *_mm("bmm", "bmm", "bfloat16"),
    *[
        BenchCase("attention", variant, key, "bfloat16",
                  {"blocks": {"tb": 1, "tm": 128, "tn": 64}, "num_warps": 8, "num_stages": 3})
        for variant in ("attention", "attention_causal")
        for key in SHAPE_KEYS
    ],
    *_row("cross_entropy", "cross_entropy", tv=4096),
    *_tiles2d("swiglu", "swiglu"),
    *_tiles2d("geglu", "geglu"),
    *[
        BenchCase("embedding", "embedding", key, "bfloat16",
                  {"blocks": {"tn": 16, "td": 256}, "num_warps": 4, "num_stages": 1})
        for key in SHAPE_KEYS
    ],
    *_row("sum", "sum", dtype="float32"),
    *_row("sum", "long_sum", dtype="float32", tn=4096),
    *_row("welford", "var_mean", dtype="float32", tn=4096),
]


def find_case(variant: str, shape_key: str, dtype: str) -> BenchCase | None:
    """The hand-picked case for a variant at a shape key and dtype name, if there is one.

    Example:
        >>> find_case("matmul", "gpu_large", "bfloat16").knobs["num_stages"]
        3
    """
    for case in CASES:
        if (case.variant, case.shape_key, case.dtype) == (variant, shape_key, dtype):
            return case
    return None


def _block_name(spec: Any) -> str:
    return str(getattr(spec, "name", ""))


def hand_picked_config(case: BenchCase, bound: Any) -> tuple[Any, list[str]]:
    """The case's knobs merged into ``bound.config_space.default()``; returns (config, notes).

    A knob the space does not have, or a value it does not allow, is left at the default and
    named in ``notes`` (so a benchmark can print what it really ran).

    Example:
        >>> cfg, notes = hand_picked_config(CASES[0], bound)  # doctest: +SKIP
    """
    space = bound.config_space
    config = space.default()
    notes: list[str] = []
    d = config.to_dict()
    blocks = dict(case.knobs.get("blocks", {}))
    specs = list(getattr(space, "block_params", []))
    used: set[str] = set()
    for i, spec in enumerate(specs):  # a name applies to every loop of that name
        name = _block_name(spec)
        match = next((k for k in blocks if name == k or name.startswith(f"{k}_")), None)
        if match is None:
            continue
        used.add(match)
        value = blocks[match]
        choices = space.params.get(f"block_sizes[{i}]", [])
        if value in choices:
            d["block_sizes"][i] = value
        else:
            notes.append(f"{match}={value} not in {choices}")
    notes += [f"no block knob named {k}" for k in blocks if k not in used]
    for knob in ("num_warps", "num_stages", "l2_grouping", "pid_type", "indexing"):
        if knob not in case.knobs:
            continue
        value = case.knobs[knob]
        if value in space.params.get(knob, []):
            d[knob] = value
        else:
            notes.append(f"{knob}={value} not in {space.params.get(knob)}")
    candidate = type(config).from_dict(d)
    try:
        space.validate(candidate)
    except Exception as exc:  # the space's own rule (e.g. block budget) rejects the mix
        notes.append(f"hand-picked config invalid ({exc}); using the default")
        return config, notes
    return candidate, notes


def describe(case: BenchCase) -> dict[str, Any]:
    """Shapes, bytes and flops of a case, from meta tensors (nothing allocated).

    Example:
        >>> describe(CASES[0])["shapes"]
        [[4096, 4096], [4096, 4096]]
    """
    import torch

    from examples.kernels import load

    mod = load(case.example)
    kernel, kwargs = mod.VARIANTS[case.variant]
    dtype = getattr(torch, case.dtype)
    args = mod.make_inputs(case.shape_key, "meta", dtype, seed=0)
    return {
        "example": case.example, "variant": case.variant, "shape_key": case.shape_key,
        "dtype": case.dtype, "kwargs": kwargs,
        "shapes": [list(a.shape) for a in args if isinstance(a, torch.Tensor)],
        "bytes": mod.BYTES(args, **kwargs) if kwargs else mod.BYTES(args),
        "flops": mod.FLOPS(args, **kwargs) if kwargs else mod.FLOPS(args),
        "knobs": case.knobs,
    }


def main(argv: list[str] | None = None) -> int:
    """Print the table (rich) and write it as JSON.

    Example:
        >>> main(["--json", "/tmp/kernels_examples.json"])  # doctest: +SKIP
        0
    """
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None, help="write the table here as JSON")
    opts = parser.parse_args(argv)
    rows = [describe(c) for c in CASES]
    table = Table(title="kernel examples: benchmark shapes and hand-picked H100 configs")
    for col in ("variant", "shape", "dtype", "shapes", "MB", "GFLOP", "hand-picked knobs"):
        table.add_column(col, justify="right" if col in ("MB", "GFLOP") else "left")
    for r in rows:
        knobs = dict(r["knobs"])
        blocks = knobs.pop("blocks", {})
        short = {"num_warps": "w", "num_stages": "s", "l2_grouping": "g"}
        knob_text = " ".join(f"{k}={v}" for k, v in blocks.items()) + " " + " ".join(
            f"{short.get(k, k)}={v}" for k, v in knobs.items()
        )
        table.add_row(
            r["variant"] + (f" {r['kwargs']}" if r["kwargs"] else ""), r["shape_key"], r["dtype"],
            " ".join("x".join(map(str, s)) for s in r["shapes"]),
            f"{r['bytes'] / 1e6:,.0f}", f"{r['flops'] / 1e9:,.1f}" if r["flops"] else "-",
            knob_text.strip(),
        )
    Console().print(table)
    if opts.json is not None:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=opts.json.parent, prefix=".kernels_examples.")
        with os.fdopen(fd, "w") as fh:
            json.dump({"cases": rows}, fh, indent=1, default=str)
        os.replace(tmp, opts.json)
        print(f"wrote {opts.json}")
    return 0 if all(math.isfinite(r["bytes"]) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
