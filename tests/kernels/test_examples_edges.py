"""Example kernels on inputs a user will try and the standard inputs don't cover: sizes of 1,
rows shorter than a block, sizes just past a power of two, and non-contiguous (transposed,
sliced) tensors -- in reference mode and compiled through the Triton interpreter."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

from examples.kernels import load

from .test_examples import check_close, run_reference

MODES = ["ref_mode", "compiled_mode"]


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _inputs(case: str, seed: int) -> tuple[str, str, tuple[Any, ...]]:
    """(example, variant, args) for a named edge case."""
    r = lambda *s: _randn(*s, seed=seed + len(s))  # noqa: E731
    cases: dict[str, tuple[str, str, tuple[Any, ...]]] = {
        "add-1x1": ("add", "add", (r(1, 1), r(1, 1))),
        "add-transposed": ("add", "add", (r(33, 65).t(), r(65, 33))),
        "softmax-single-column": ("softmax", "softmax", (r(5, 1),)),
        "softmax-row-257": ("softmax", "softmax", (r(3, 257) * 4,)),
        "softmax-sliced-rows": ("softmax", "softmax", (r(40, 100)[::3, 10:90],)),
        "two-pass-1x1": ("softmax", "softmax_two_pass", (r(1, 1),)),
        "layer_norm-1-row": ("layer_norm", "layer_norm", (r(1, 50) + 3, r(50), r(50))),
        "rms_norm-n-1": ("rms_norm", "rms_norm", (r(7, 1), r(1))),
        "matmul-1x1x1": ("matmul", "matmul", (r(1, 1), r(1, 1))),
        "matmul-thin-k": ("matmul", "matmul", (r(70, 3), r(3, 40))),
        "matmul-transposed-b": ("matmul", "matmul", (r(33, 65), r(47, 65).t())),
        "matmul-transposed-a": ("matmul", "matmul", (r(65, 33).t(), r(65, 47))),
        "split_k-long-k": ("matmul", "matmul_split_k", (r(17, 700), r(700, 19))),
        "bmm-batch-1": ("bmm", "bmm", (r(1, 20, 30), r(1, 30, 10))),
        "attention-seq-1": ("attention", "attention", (r(1, 2, 1, 16), r(1, 2, 1, 16), r(1, 2, 1, 16))),
        "attention-causal-kv-longer": (
            "attention", "attention_causal", (r(1, 2, 20, 16), r(1, 2, 45, 16), r(1, 2, 45, 16))
        ),
        "cross_entropy-vocab-1": (
            "cross_entropy", "cross_entropy", (r(4, 1), torch.zeros(4, dtype=torch.int64))
        ),
        "cross_entropy-edge-labels": (
            "cross_entropy", "cross_entropy",
            (r(6, 300) * 5, torch.tensor([0, 299, 0, 299, 150, 64])),
        ),
        "embedding-repeated-ids": (
            "embedding", "embedding", (torch.tensor([3, 3, 0, 9, 3]), r(10, 70))
        ),
        "embedding_rows-last-id": (
            "embedding", "embedding_rows", (torch.tensor([9, 0, 9]), r(10, 33))
        ),
        "sum-1-col": ("sum", "sum", (r(9, 1),)),
        "long_sum-transposed": ("sum", "long_sum", (r(300, 20).t(),)),
        "var_mean-2-cols": ("welford", "var_mean", (r(5, 2) + 100,)),
    }
    return cases[case]


EDGE_CASES = [
    "add-1x1", "add-transposed", "softmax-single-column", "softmax-row-257", "softmax-sliced-rows",
    "two-pass-1x1", "layer_norm-1-row", "rms_norm-n-1", "matmul-1x1x1", "matmul-thin-k",
    "matmul-transposed-b", "matmul-transposed-a", "split_k-long-k", "bmm-batch-1",
    "attention-seq-1", "attention-causal-kv-longer", "cross_entropy-vocab-1",
    "cross_entropy-edge-labels", "embedding-repeated-ids", "embedding_rows-last-id", "sum-1-col",
    "long_sum-transposed", "var_mean-2-cols",
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", EDGE_CASES)
def test_example_edge_case(
    case: str, mode: str, request: pytest.FixtureRequest, poison_empty: None
) -> None:
    request.getfixturevalue(mode)
    seed = random.SystemRandom().getrandbits(31)
    example, variant, args = _inputs(case, seed)
    mod = load(example)
    kernel, kwargs = mod.VARIANTS[variant]
    got = kernel(*args, **kwargs)
    check_close(
        got, run_reference(mod, args, kwargs), mod.TOLERANCE[torch.float32],
        f"{case} ({mode}) seed={seed}",
    )
