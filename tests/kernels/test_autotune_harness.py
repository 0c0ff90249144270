"""The crash-isolating harness: real worker processes (spawn), real crashes, a real Triton
kernel run through Triton's interpreter with the wall-clock timer."""

from __future__ import annotations

import pytest
import torch

from tests.kernels.test_autotune_fakes import FakeConfig, FakeTarget, TritonTarget, cost
from torchship.kernels.autotune import Harness, HarnessError, ModelTimer, WallTimer, autotune
from torchship.kernels.autotune.target import Target

BAD = {
    "crash": "crash",  # os._exit(7) inside the launch
    "segfault": "crash",  # SIGSEGV through ctypes
    "wrong": "wrong",  # one element off
    "scribble": "wrong",  # overwrites its input
    "compile_error": "compile_error",
    "raise": "runtime_error",
    "poison": "runtime_error",  # a CUDA-context-poisoning error: the worker restarts itself
    "hang": "timeout",  # sleeps for an hour: killed after bench_timeout_s
}


def test_bench_worker_survives_crashes_hangs_and_wrong_results():
    configs = [FakeConfig(64, 4, 2)]
    for mode in BAD:
        configs.append(FakeConfig(256, 4, 3, mode=mode))
    configs.append(FakeConfig(512, 4, 3))
    with Harness(FakeTarget(), timer=ModelTimer(cost), bench_timeout_s=2.5) as h:
        results = h.evaluate(configs)
        pids_restarts = h._bench.restarts
    statuses = [r.status for r in results]
    assert statuses == ["ok", *BAD.values(), "ok"], [(r.status, r.error) for r in results]
    by_mode = {r.config.mode: r for r in results[1:-1]}
    assert "exit code 7" in by_mode["crash"].error
    assert "exit code -11" in by_mode["segfault"].error
    assert "mismatch" in by_mode["wrong"].error and "args" in by_mode["scribble"].error
    assert "no answer within 2.5 s" in by_mode["hang"].error
    assert "illegal memory access" in by_mode["poison"].error
    # the worker was restarted after each of the four deaths and still measured the last one
    assert pids_restarts == 4
    assert results[-1].time_ms == cost(FakeConfig(512, 4, 3))


def test_parallel_compile_workers_isolate_crashes():
    configs = [FakeConfig(64, 4, 2), FakeConfig(128, 4, 3, mode="crash"),
               FakeConfig(256, 4, 3, mode="compile_error"), FakeConfig(128, 4, 3, mode="hang"),
               FakeConfig(256, 4, 3)]
    with Harness(FakeTarget(), timer=ModelTimer(cost), compile_workers=2,
                 compile_timeout_s=600) as h:
        warmup = h.evaluate([FakeConfig(b, 4, 2) for b in (16, 32, 128, 512)])
        assert all(r.ok for r in warmup)
        # four fast compiles seen: a hung one is cut at 5 s, not at the configured 600 s
        assert h.current_compile_timeout() == 5.0
        results = h.evaluate(configs)
        assert h.crashes == 2
    assert [r.status for r in results] == ["ok", "crash", "compile_error", "timeout", "ok"]
    assert "compile took over 5.0 s" in results[3].error
    # compile workers recorded compile times for the candidates that went on to the benchmark
    assert results[0].compile_s is not None and results[-1].time_ms == cost(FakeConfig(256, 4, 3))


def test_autotune_with_isolation_picks_the_fast_correct_config_despite_a_crasher():
    # the "crash" candidate is listed first among the fast ones: the run must survive it
    configs = [FakeConfig(256, 4, 3, mode="segfault"), FakeConfig(256, 4, 3, mode="wrong"),
               FakeConfig(128, 4, 3)]  # a hang is covered by the compile-worker test
    x = torch.randn(10)
    from tests.kernels.test_autotune_fakes import FakeBound

    rep = autotune(FakeBound(x), (x,), strategy=configs, target=FakeTarget(),
                   timer=ModelTimer(cost), cache=False, progress=False, patience=0)
    assert [r.status for r in rep.results] == ["ok", "crash", "wrong", "ok"]
    assert rep.config == FakeConfig(128, 4, 3)


def test_real_triton_kernel_in_the_interpreter_with_wall_clock():
    configs = [FakeConfig(64), FakeConfig(128, mode="nomask"), FakeConfig(1024), FakeConfig(16)]
    with Harness(TritonTarget(1000), timer=WallTimer(reps=3)) as h:
        results = h.evaluate(configs)
    assert [r.status for r in results] == ["ok", "wrong", "ok", "ok"]
    # the ragged tail (1000 = 7*128 + 104) was not loaded by the unmasked variant
    assert "104 of 1000 elements" in results[1].error
    # interpreter cost scales with the number of programs: 1 program beats 63
    assert results[2].time_ms < results[3].time_ms


class _BrokenTarget(Target):
    def build(self):
        raise ImportError("no module named 'user_kernels'")


def test_target_that_cannot_build_is_a_clear_error():
    with pytest.raises(HarnessError, match="no module named 'user_kernels'"), Harness(_BrokenTarget()):
        pass


def test_in_process_mode_has_the_same_checks_without_isolation():
    configs = [FakeConfig(64, 4, 2), FakeConfig(256, 4, 3, mode="wrong"), FakeConfig(512, 4, 3)]
    with Harness(FakeTarget(), timer=ModelTimer(cost), isolate=False) as h:
        results = h.evaluate(configs)
    assert [r.status for r in results] == ["ok", "wrong", "ok"]


def test_kept_workers_are_reused_for_the_next_target():
    from torchship.kernels.autotune.harness import _IDLE, prewarm, shutdown_workers

    try:
        assert prewarm(1, "cpu") > 0
        pids = {w.proc.pid for pool in _IDLE.values() for w in pool}
        assert len(pids) == 2  # one bench, one compile worker, started ahead
        with Harness(FakeTarget(n=1000), timer=ModelTimer(cost), compile_workers=1,
                     keep_workers=True) as h:
            first = h.evaluate([FakeConfig(64, 4, 2)])
            assert {h._bench.proc.pid, h._compilers[0].proc.pid} == pids
        # a different target (other input size): same processes, new reference
        with Harness(FakeTarget(n=500, seed=3), timer=ModelTimer(cost), compile_workers=1,
                     keep_workers=True) as h:
            assert {h._bench.proc.pid, h._compilers[0].proc.pid} == pids
            second = h.evaluate([FakeConfig(256, 4, 3), FakeConfig(256, 4, 3, mode="wrong")])
    finally:
        shutdown_workers()
    assert first[0].ok
    assert [r.status for r in second] == ["ok", "wrong"]


@pytest.mark.parametrize("chunk", [7, 1 << 24])
def test_compare_outputs_in_chunks_matches_a_whole_tensor_check(monkeypatch, chunk):
    """The candidate check works chunk by chunk (bounded memory on multi-GB tensors); every
    verdict must be the one a whole-tensor float64 check gives."""
    from torchship.kernels.autotune import target

    monkeypatch.setattr(target, "_CHUNK", chunk)
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(100, generator=g)
    ref[[4, 60]] = float("nan")
    ref[9] = float("inf")
    close = ref * (1 + 1e-4)  # within float32's 2e-3, NaN/inf in place
    assert target.compare_outputs(close, ref) is None
    one_off = close.clone()
    one_off[77] += 1.0
    why = target.compare_outputs(one_off, ref)
    assert "1 of 100 elements off" in why and "max abs diff 1" in why
    nan_moved = close.clone()
    nan_moved[4], nan_moved[5] = 0.0, float("nan")
    assert "NaN at 2 places" in target.compare_outputs(nan_moved, ref)
    inf_flipped = close.clone()
    inf_flipped[9] = float("-inf")
    assert "infinities differ" in target.compare_outputs(inf_flipped, ref)
    # the relative norm error over the finite elements, as float64 on the whole tensor gives it
    noisy = ref + 0.1 * torch.randn(100, generator=g)
    fin = torch.isfinite(ref)
    expected = float((noisy[fin].double() - ref[fin].double()).norm() / ref[fin].double().norm())
    assert f"relative error {expected:.3g} (tolerance 0.002)" in target.compare_outputs(noisy, ref)
