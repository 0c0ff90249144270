"""The examples' shared interface (what tests and K3's benchmarks rely on), and a check that
the test harness itself catches unwritten output elements."""

from __future__ import annotations

import pytest
import torch

import torchship as ts
from examples.kernels import EXAMPLES, load

from .test_examples import check_close, run_reference


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_exports_the_interface(example: str) -> None:
    mod = load(example)
    assert mod.VARIANTS, example
    for name, (kernel, kwargs) in mod.VARIANTS.items():
        assert callable(kernel) and isinstance(kwargs, dict), name
    assert set(mod.SHAPES) == {"test", "gpu_small", "gpu_large"}
    for dtype in mod.DTYPES:
        assert set(mod.TOLERANCE[dtype]) == {"atol", "rtol"}
    with pytest.raises(KeyError, match="unknown shape key"):
        mod.make_inputs("huge")


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_inputs_are_ragged_seeded_and_fresh(example: str) -> None:
    mod = load(example)
    args = mod.make_inputs("test", seed=7)
    again = mod.make_inputs("test", seed=7)
    fresh = mod.make_inputs("test")
    dims = {d for a in args if isinstance(a, torch.Tensor) for d in a.shape}
    assert any(d % 16 for d in dims if d > 16), f"{example}: test shapes {dims} are not ragged"
    for a, b, c in zip(args, again, fresh):
        assert torch.equal(a, b)
        if a.is_floating_point():
            assert not torch.equal(a, c), f"{example}: unseeded inputs repeat"
    for dtype in mod.DTYPES:
        assert all(
            a.dtype == dtype for a in mod.make_inputs("test", dtype=dtype, seed=1) if a.is_floating_point()
        )


@pytest.mark.parametrize("example", EXAMPLES)
def test_bytes_and_flops_are_consistent(example: str) -> None:
    mod = load(example)
    args = mod.make_inputs("test", seed=0)
    small = mod.BYTES(args)
    assert small >= sum(a.numel() * a.element_size() for a in args[:1])
    assert mod.FLOPS(args) >= 0
    half = mod.make_inputs("test", dtype=torch.float16, seed=0)
    assert mod.BYTES(half) < small  # fewer bytes per element


def test_matmul_and_attention_flops_by_hand() -> None:
    mm = load("matmul")
    a, b = mm.make_inputs("test", seed=0)
    assert mm.FLOPS((a, b)) == 2 * 65 * 97 * 81
    att = load("attention")
    q, k, v = att.make_inputs("test", seed=0)
    assert att.FLOPS((q, k, v)) == 4 * 2 * 3 * 67 * 67 * 32
    assert att.FLOPS((q, k, v), causal=True) == 2 * 2 * 3 * 67 * 67 * 32


@ts.kernel
def _forgets_last_row(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm in ts.tile(x.size(0) - 1):
        out[tm, :] = x[tm, :] * 2.0
    return out


@pytest.mark.parametrize("mode", ["ref_mode", "compiled_mode"])
def test_poisoned_outputs_expose_unwritten_elements(
    mode: str, request: pytest.FixtureRequest, poison_empty: None
) -> None:
    request.getfixturevalue(mode)
    x = torch.randn(67, 33)
    got = _forgets_last_row(x)
    assert torch.isnan(got[-1]).all() and not torch.isnan(got[:-1]).any()
    with pytest.raises(AssertionError):
        check_close(got, x.double() * 2, {"atol": 1e-6, "rtol": 1e-6}, "forgets_last_row")
    softmax = load("softmax")
    (y,) = softmax.make_inputs("test", seed=0)
    check_close(softmax.softmax(y), run_reference(softmax, (y,), {}), softmax.TOLERANCE[torch.float32], "ok")
