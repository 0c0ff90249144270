"""Generated Triton is readable (user names, source-line comments), printed on request, and
compiled once per (config, specialisation): cached calls go straight to the launcher."""

from __future__ import annotations

import re

import pytest
import torch

import torchship as ts
from torchship.kernels import Config
from torchship.kernels.backends.triton import launcher as launcher_mod
from torchship.kernels.backends.triton.codegen import TritonCodegen


@ts.kernel
def softmax(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm in ts.tile(x.size(0)):
        row = x[tm, :].to(torch.float32)
        shifted = row - row.amax(dim=1, keepdim=True)
        num = torch.exp(shifted)
        out[tm, :] = (num / num.sum(dim=1, keepdim=True)).to(x.dtype)
    return out


@ts.kernel
def matmul(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    m, k = x.size()
    n = y.size(1)
    out = torch.empty([m, n], dtype=x.dtype, device=x.device)
    for tm, tn in ts.tile([m, n]):
        acc = ts.zeros([tm, tn], dtype=torch.float32)
        for tk in ts.tile(k):
            acc = ts.dot(x[tm, tk], y[tk, tn], acc=acc)
        out[tm, tn] = acc.to(out.dtype)
    return out


def test_code_names_user_variables_and_points_to_lines() -> None:
    code = softmax.to_triton_code(args=(torch.randn(8, 40),))
    for name in ("row", "shifted", "num", "tm_index", "tm_mask"):
        assert re.search(rf"^\s+{name} = ", code, re.M), name
    assert re.search(r"# test_codegen\.py:\d+  row = x\[tm, :\]\.to\(torch\.float32\)", code)
    # one statement per value: no line computes two ops of the user's expression
    assert "tl.exp(row - " not in code
    compile(code, "<generated>", "exec")  # valid python


def test_looped_reduction_code_recomputes_inside_chunk_loops() -> None:
    bound = softmax.bind((torch.randn(8, 300),))
    cfg = bound.config_space.default().replace(reduction_loops=[64])
    code = bound.to_triton_code(cfg)
    assert code.count("tl.range(0, x_size1, 64)") == 3  # amax, sum, store
    assert code.count("tl.load(") == 3  # the row is reloaded per chunk, never held whole
    persistent = bound.to_triton_code(cfg.replace(reduction_loops=[None]))
    assert "tl.range(0, x_size1" not in persistent and persistent.count("tl.load(") == 1


def test_grid_knobs_show_in_code() -> None:
    bound = matmul.bind((torch.randn(64, 32), torch.randn(32, 48)))
    base = bound.config_space.default()
    grouped = bound.to_triton_code(base.replace(l2_grouping=8, loop_orders=[[0, 1]]))
    assert "group_id" in grouped and "tl.minimum(num_tm - first_tile, 8)" in grouped
    persistent = bound.to_triton_code(base.replace(pid_type="persistent"))
    assert "tl.range(tl.program_id(0), num_tiles, tl.num_programs(0))" in persistent
    swapped = bound.to_triton_code(base.replace(loop_orders=[[1, 0]]))
    assert "pid_0 = pid % num_tm" in swapped
    assert 'input_precision="ieee"' in grouped  # fp32 dot matches a float64 reference


def test_block_ptr_emitter() -> None:
    """Block pointers are removed in Triton >= 3.7 (not in the space there); the emitter is
    still checked here and run on the GPU machine (Triton 3.6)."""
    bound = matmul.bind((torch.randn(64, 32), torch.randn(32, 48)))
    launch = bound._trace[0]
    launch.order_slot = 0
    cfg = bound.config_space.default().replace(indexing="block_ptr")
    cg = TritonCodegen(launch, cfg, {}, "_k", "block_ptr")
    code = cg.generate()
    assert "tl.make_block_ptr(x, shape=(tm_end, k)" in code
    assert 'boundary_check=(0, 1), padding_option="zero"' in code
    assert "tl.store(tl.make_block_ptr(out" in code


def test_print_code_env(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                        compiled_mode: None) -> None:
    monkeypatch.setenv("TORCHSHIP_PRINT_CODE", "1")

    @ts.kernel(config=Config(block_sizes=[16]))
    def neg(x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for t in ts.tile(x.size(0)):
            out[t] = -x[t]
        return out

    torch.testing.assert_close(neg(torch.ones(20)), -torch.ones(20))
    assert "def _neg_kernel0(" in capsys.readouterr().out


def test_compiled_once_then_cached(monkeypatch: pytest.MonkeyPatch, compiled_mode: None) -> None:
    calls = []
    real = launcher_mod.compile_launch

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr("torchship.kernels.runtime.compile_launch", counting)

    @ts.kernel(config=Config(block_sizes=[32]))
    def twice(x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for t in ts.tile(x.size(0)):
            out[t] = x[t] * 2
        return out

    for n in (40, 50, 64):  # new sizes in one power-of-two bucket: same kernel
        torch.testing.assert_close(twice(torch.ones(n)), 2 * torch.ones(n))
    assert len(calls) == 1
    twice(torch.ones(77))  # another bucket: its own bound kernel (space, default, tuning)
    assert len(calls) == 2
    twice(torch.ones(50, dtype=torch.float64))  # new dtype: new bound kernel, new compile
    assert len(calls) == 3
    bound = twice.bind((torch.ones(33),))
    hook = bound._runner.args[0].L[0]
    assert hook.fast is not None and len(hook.fast_cache) == 1


def test_key_is_json_and_stable() -> None:
    b1 = softmax.bind((torch.randn(4, 8),))
    b2 = softmax.bind((torch.randn(3, 7),))  # the same power-of-two buckets
    assert b1 is b2 and b1.key_dict() == b2.key_dict()
    b3 = softmax.bind((torch.randn(9, 33),))
    assert b3 is not b1 and b3.key_dict() != b1.key_dict()
    assert softmax.bind((torch.randn(1, 8),)) is not b1  # size-1 dims are part of the key
    assert len(b1.source_hash) == 16


def test_power_of_two_full_dims_drop_their_mask_through_a_constexpr() -> None:
    code = softmax.to_triton_code(args=(torch.randn(8, 64),))
    assert "if EXACT_X1:" in code and "x_r1_mask = tl.full([R_X1], 1, tl.int1)" in code
    # both specialisations run and agree with torch: a power-of-two row (mask folded away) and
    # a ragged one (lanes past the size masked)
    for cols in (64, 67):
        x = torch.randn(8, cols, dtype=torch.float64).float()
        torch.testing.assert_close(softmax(x), torch.softmax(x.double(), dim=1).float())


def test_a_small_first_call_does_not_set_the_space_of_a_large_one() -> None:
    from examples.kernels import load

    fn = load("matmul").matmul.fn
    first_small = ts.kernel(fn)
    small = first_small.bind((torch.randn(8, 8), torch.randn(8, 8)))
    large = first_small.bind((torch.randn(256, 256), torch.randn(256, 256)))
    fresh = ts.kernel(fn).bind((torch.randn(256, 256), torch.randn(256, 256)))
    assert large is not small
    assert large.config_space.params == fresh.config_space.params
    assert large.config_space.default() == fresh.config_space.default()
    assert small.config_space.default().block_sizes != large.config_space.default().block_sizes
