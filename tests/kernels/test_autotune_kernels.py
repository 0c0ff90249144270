"""The autotuner on real torchship kernels (examples/kernels), compiled by the real compiler
and run through Triton's interpreter on CPU, in isolated worker processes."""

from __future__ import annotations

import json

import pytest
import torch

from examples.kernels import load
from torchship.kernels.autotune import AutotuneCache, WallTimer, autotune


def _check(mod, variant, args, out):
    kernel, kw = mod.VARIANTS[variant]
    ref = mod.reference(*[a.double() if a.is_floating_point() else a for a in args], **kw)
    tol = mod.TOLERANCE[args[0].dtype] if args[0].is_floating_point() else mod.TOLERANCE[
        torch.float32]
    torch.testing.assert_close(out.double(), ref.double(), **tol)


@pytest.mark.parametrize("name,variant", [("softmax", "softmax"), ("rms_norm", "rms_norm")])
def test_tuning_a_real_kernel_picks_a_correct_config(name, variant, tmp_path):
    mod = load(name)
    kernel, kw = mod.VARIANTS[variant]
    args = mod.make_inputs("test", "cpu", torch.float32, seed=1)
    bound = kernel.bind(args, kw) if kw else kernel.bind(args)
    # rms_norm also goes through a compile worker fed a layout-only ("light") target
    rep = autotune(bound, args, effort="quick", max_evals=4, kernel=kernel, kwargs=kw,
                   cache=AutotuneCache(tmp_path), timer=WallTimer(warmup=0, reps=1),
                   progress=False, strategy="random", patience=0,
                   compile_workers=1 if name == "rms_norm" else None,
                   reference="ref" if name == "softmax" else "default")
    if name == "rms_norm":
        assert all(r.compile_s is not None for r in rep.results if r.ok)
    assert len(rep.results) == 4 and rep.results[0].config == bound.config_space.default()
    assert rep.best_ms is not None
    bound.config_space.validate(rep.config)
    # the winner computes the right thing on fresh inputs (independent float64 reference)
    fresh = mod.make_inputs("test", "cpu", torch.float32, seed=7)
    out = kernel.bind(fresh, kw).compile(rep.config)(*fresh, **kw) if kw else \
        kernel.bind(fresh).compile(rep.config)(*fresh)
    _check(mod, variant, fresh, out)
    # every candidate the harness called ok also matched the default config's output
    entry = AutotuneCache(tmp_path).get(rep.key)
    assert entry is not None and entry["config"] == rep.config.to_dict()
    with open(rep.log_path) as f:
        log = json.load(f)
    assert [c["status"] for c in log["candidates"]] == [r.status for r in rep.results]


def test_kernel_autotune_uses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHSHIP_CACHE_DIR", str(tmp_path))
    mod = load("add")
    kernel, _ = mod.VARIANTS["add"]
    args = mod.make_inputs("test", "cpu", torch.float32, seed=2)
    cfg = kernel.autotune(args, effort="quick", budget_s=3)
    logs = list((tmp_path / "logs").glob("*.json"))
    assert len(logs) == 1
    first = json.loads(logs[0].read_text())
    assert first["best_ms"] is not None, [(c["status"], c["error"]) for c in first["candidates"]]
    assert cfg == kernel.autotune(args, effort="quick", budget_s=3)  # cached: no new search
    assert list((tmp_path / "logs").glob("*.json")) == logs
    out = kernel(*args)
    _check(mod, "add", args, out)


def test_light_target_ships_layouts_only():
    import pickle

    from torchship.kernels.autotune.target import KernelTarget

    mod = load("cross_entropy")
    kernel, _ = mod.VARIANTS["cross_entropy"]
    logits, labels = mod.make_inputs("test", "cpu", torch.float32, seed=3)
    target = KernelTarget(kernel, (logits, labels))
    full, light = pickle.dumps(target), pickle.dumps(target.light())
    assert len(light) < len(full) - logits.numel() * 4 // 2
    bound, (lg, lb), _ = pickle.loads(light).build()
    assert lg.shape == logits.shape and lg.stride() == logits.stride()
    assert torch.equal(lb, labels)  # integer data (class indices) is shipped for real
    assert not torch.equal(lg, logits)  # float data is a random stand-in
    _, (fg, _), _ = pickle.loads(full).build()
    assert torch.equal(fg, logits)


def test_target_payload_keeps_live_arguments_out_of_pickles():
    import pickle

    from torchship.kernels.autotune.target import KernelTarget

    mod = load("cross_entropy")
    kernel, _ = mod.VARIANTS["cross_entropy"]
    logits, labels = mod.make_inputs("test", "cpu", torch.float32, seed=4)
    target = KernelTarget(kernel, (logits, labels))
    # in-process the build hands out the caller's own tensors (the harness copies them)
    _, (lg, lb), _ = target.build()
    assert lg is logits and lb is labels
    # CPU arguments travel as bytes in the payload (CUDA ones as IPC handles on a GPU)
    rebuilt = pickle.loads(target.payload())
    assert not hasattr(rebuilt, "_args") and isinstance(rebuilt.data, bytes)
    _, (fg, fb), _ = rebuilt.build()
    assert torch.equal(fg, logits) and fg is not logits and torch.equal(fb, labels)
