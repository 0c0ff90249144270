"""Run the example kernels against torch: ``python -m examples.kernels [NAME ...]``.

Each variant runs in reference mode (``TORCHSHIP_INTERPRET=1``) and compiled (the Triton
interpreter on CPU, the GPU with ``--device cuda``) with its default config, and is compared to
its float64 reference. Exit status 0 when everything matches.

Example:
    $ python -m examples.kernels softmax matmul
    $ python -m examples.kernels --device cuda --shape gpu_small --dtype bfloat16
"""

from __future__ import annotations

import argparse

import torch
from rich.console import Console

from examples.kernels import EXAMPLES
from torchship.kernels.demo import check_examples


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the examples, print the table; 0 when all match.

    Example:
        >>> main(["add"])  # doctest: +SKIP
        0
    """
    parser = argparse.ArgumentParser(prog="python -m examples.kernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", choices=[[], *EXAMPLES], metavar="NAME",
                        help=f"examples to run (default: all): {', '.join(EXAMPLES)}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", default="test", choices=["test", "gpu_small", "gpu_large"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args(argv)
    ok = check_examples(
        Console(), opts.names or EXAMPLES, device=opts.device, dtype=getattr(torch, opts.dtype),
        shape_key=opts.shape, all_variants=True, seed=opts.seed,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
