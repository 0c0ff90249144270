"""The examples' shared interface (what tests and K3's benchmarks rely on), and a check that
the test harness itself catches unwritten output elements."""

from __future__ import annotations

import sys
from typing import Any

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


def _bench_table() -> Any:
    import importlib.util

    from .conftest import REPO_ROOT

    path = REPO_ROOT / "benchmarks" / "kernels_examples.py"
    spec = importlib.util.spec_from_file_location("kernels_examples_table", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_benchmark_table_cases_and_hand_picked_config(compiled_mode: None) -> None:
    table = _bench_table()
    described = [table.describe(c) for c in table.CASES]
    assert {d["variant"] for d in described} >= {"matmul", "softmax", "attention", "embedding"}
    mm = next(d for d in described if d["variant"] == "matmul" and d["shape_key"] == "gpu_large")
    assert mm["shapes"] == [[4096, 4096], [4096, 4096]]
    assert mm["flops"] == 2 * 4096**3
    # hand-picked knobs merge into a real (CPU) config space and compute the right thing
    mod = load("matmul")
    a, b = mod.make_inputs("test", seed=3)
    bound = mod.matmul.bind((a, b))
    case = table.find_case("matmul", "gpu_small", "float16")
    config, notes = table.hand_picked_config(case, bound)
    bound.config_space.validate(config)
    assert config.block_sizes == [128, 128, 64] and config.num_warps == 8, (config, notes)
    check_close(bound.compile(config)(a, b), run_reference(mod, (a, b), {}),
                mod.TOLERANCE[torch.float32], f"matmul {config}")
    # a knob value the space lacks is reported, not silently used
    odd = table.BenchCase("matmul", "matmul", "gpu_small", "float16", {"blocks": {"tm": 3}})
    config, notes = table.hand_picked_config(odd, bound)
    assert config == bound.config_space.default() and any("tm=3" in n for n in notes)


def test_examples_runner_checks_every_variant(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.kernels.__main__ import main

    monkeypatch.setenv("COLUMNS", "160")  # rich's table width
    assert main(["softmax", "welford"]) == 0
    out = capsys.readouterr().out
    for variant in ("softmax_two_pass", "var_mean_population", "ref", "interpreter"):
        assert variant in out
    assert "MISMATCH" not in out
    with pytest.raises(SystemExit) as exc:
        main(["no_such_kernel"])
    assert exc.value.code == 2


# embedding_rows indexes with a loaded scalar id: torch turns a 0-d index into an int with
# .item(), which needs values (meta tensors have none).
META_CASES = [
    (example, variant)
    for example in EXAMPLES
    for variant in load(example).VARIANTS
    if variant != "embedding_rows"
]


@pytest.mark.parametrize(("example", "variant"), META_CASES, ids=[v for _, v in META_CASES])
def test_ref_mode_keeps_everything_on_the_inputs_device(
    example: str, variant: str, ref_mode: None
) -> None:
    """On meta tensors (no data), a kernel that made a block or index on another device
    (a CPU default) would fail: ref mode must run where the inputs live, e.g. on a GPU."""
    mod = load(example)
    kernel, kwargs = mod.VARIANTS[variant]
    args = mod.make_inputs("test", "meta")
    got, expected = kernel(*args, **kwargs), mod.reference(*args, **kwargs)
    got_t = got if isinstance(got, tuple) else (got,)
    exp_t = expected if isinstance(expected, tuple) else (expected,)
    assert len(got_t) == len(exp_t)
    for g, e in zip(got_t, exp_t):
        assert (g.device.type, g.shape, g.dtype) == ("meta", e.shape, e.dtype)
