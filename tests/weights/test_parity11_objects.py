"""Checkpoints holding Python objects as users write them (Lightning/timm/fairseq hyper-parameters
as ``argparse.Namespace``, ``torch.save(model)``, HF ``training_args.bin``): ``convert(strict=
False)`` keeps every tensor and reports each skipped object with its dotted path and class;
``strict=True`` (the default) refuses. The oracle is ``torch.load(weights_only=False)`` run in a
subprocess on the file the test wrote (never unpickled here), its tensors written with the
peer's ``safetensors.torch.save_file`` and compared bit for bit."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from torchship.weights import torch as ours
from torchship.weights.pickle import convert, scan
from torchship.weights.pickle.convert import ConvertError

peer = pytest.importorskip("safetensors.torch", reason="safetensors is the peer oracle (pip install '.[dev]')")

_REFERENCE = textwrap.dedent('''
    import sys, numpy as np, torch
    from safetensors.torch import save_file
    def flat(obj, prefix, out):
        if isinstance(obj, torch.nn.Module):
            obj = obj.state_dict()
        if isinstance(obj, np.ndarray):
            obj = torch.from_numpy(obj)
        if isinstance(obj, torch.Tensor):
            out[prefix or "tensor"] = obj.detach().contiguous().clone()
            return
        items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
        for k, v in items:
            flat(v, f"{prefix}.{k}" if prefix else str(k), out)
    for src, dst in zip(sys.argv[1::2], sys.argv[2::2]):
        out = {}
        flat(torch.load(src, weights_only=False), "", out)
        save_file(out, dst)
''')


def reference(paths: list, extra_path: str | None = None) -> list[dict[str, torch.Tensor]]:
    """Every tensor ``torch.load(weights_only=False)`` returns for each file (a module as its
    state_dict), loaded in one subprocess; the tensors come back through the peer's
    safetensors files written beside each input."""
    args = [str(a) for p in paths for a in (p, f"{p}.ref.safetensors")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (extra_path, os.getcwd()) if p))
    subprocess.run([sys.executable, "-c", _REFERENCE, *args], check=True, env=env, capture_output=True)
    return [peer.load_file(f"{p}.ref.safetensors") for p in paths]


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes. Example: ``same(torch.ones(2), torch.ones(2))``."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def check_lenient(path, tmp_path, skipped: dict[str, str],
                  expected: dict[str, torch.Tensor] | None = None):
    """strict refuses naming the first class; strict=False converts every reference tensor and
    reports each skipped object's path and class. Returns the report and the tensors."""
    expected = reference([path])[0] if expected is None else expected
    out = tmp_path / (os.path.basename(path) + ".safetensors")
    with pytest.raises(ConvertError) as info:
        convert(path, out)
    assert str(path) in str(info.value) and not out.exists()
    assert any(f"'{cls}'" in str(info.value) for cls in skipped.values())
    report = convert(path, out, strict=False)
    got = ours.load_file(report.outputs[0])
    assert set(got) == set(expected) - set(report.tied)
    for name, t in expected.items():
        assert same(got[report.tied.get(name, name)], t), name
    for where, cls in skipped.items():
        assert cls in report.dropped[where] and report.objects[where] == cls, (where, report.dropped)
    return report, got


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_lightning_namespace_hyper_parameters(tmp_path, legacy) -> None:
    model = _model()
    ckpt = {"epoch": 2, "global_step": 20, "pytorch-lightning_version": "1.5.10",
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": argparse.Namespace(lr=0.1, batch_size=32, layers=[4, 3])}
    torch.save(ckpt, tmp_path / "last.ckpt", _use_new_zipfile_serialization=not legacy)
    report, got = check_lenient(tmp_path / "last.ckpt", tmp_path, {"hyper_parameters": "argparse.Namespace"})
    assert json.loads(report.values["epoch"]) == 2 and "state_dict.model.0.weight" in got
    assert report.dropped["hyper_parameters"].startswith("skipped")


def test_fairseq_args_namespace_and_nested_cfg(tmp_path) -> None:
    model = _model()
    cfg = {"common": {"fp16": True, "seed": 1}, "model": {"_name": "transformer", "encoder": {"layers": 6}},
           "optimization": {"lr": [0.0005], "max_update": 100}}
    ckpt = {"args": argparse.Namespace(arch="transformer", lr=[0.0005]), "cfg": cfg, "model": model.state_dict(),
            "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "num_updates": 10}],
            "extra_state": {"epoch": 3, "val_loss": 2.5}, "last_optimizer_state": None}
    torch.save(ckpt, tmp_path / "checkpoint_best.pt")
    report, got = check_lenient(tmp_path / "checkpoint_best.pt", tmp_path, {"args": "argparse.Namespace"})
    assert json.loads(report.values["cfg"]) == cfg and "model.1.running_var" in got


def test_whole_module_saved_with_torch_save(tmp_path) -> None:
    model = _model()
    model.register_buffer("scratch", torch.ones(2), persistent=False)  # not in the state_dict
    with torch.no_grad():
        model[1].running_mean.add_(0.5)
    paths = [tmp_path / "whole0.pt", tmp_path / "whole1.pt", tmp_path / "dict.pt"]
    torch.save(model, paths[0])
    torch.save(model, paths[1], _use_new_zipfile_serialization=False)
    # a module inside a dict: its names sit under the dict key; one report line per module
    torch.save({"model": model, "epoch": 1}, paths[2])
    whole0, whole1, in_dict = reference(paths)
    sequential = "torch.nn.modules.container.Sequential"
    for path, expected in zip(paths[:2], (whole0, whole1), strict=True):
        _, got = check_lenient(path, tmp_path, {"value": sequential}, expected)
        assert set(got) == set(model.state_dict())
    report, got = check_lenient(paths[2], tmp_path, {"model": sequential}, in_dict)
    assert set(got) == {f"model.{k}" for k in model.state_dict()} and list(report.dropped) == ["model"]


def test_timm_ema_checkpoint_with_args(tmp_path) -> None:
    model, ema = _model(), _model()
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.999)
    ckpt = {"epoch": 5, "arch": "resnet18", "state_dict": model.state_dict(), "state_dict_ema": ema.state_dict(),
            "optimizer": torch.optim.SGD(model.parameters(), lr=0.1).state_dict(), "version": 2,
            "args": argparse.Namespace(model="resnet18", model_ema=True), "metric": 0.75}
    torch.save(ckpt, tmp_path / "model_best.pth.tar")
    _, got = check_lenient(tmp_path / "model_best.pth.tar", tmp_path, {"args": "argparse.Namespace"})
    assert not same(got["state_dict.0.weight"], got["state_dict_ema.0.weight"])


def test_object_holding_tensors_is_refused_by_class_and_path(tmp_path) -> None:
    ns = argparse.Namespace(lr=0.1, pos_weight=torch.ones(3))
    torch.save({"state_dict": _model().state_dict(), "hyper_parameters": ns}, tmp_path / "t.ckpt")
    with pytest.raises(ConvertError, match=r"t\.ckpt: hyper_parameters: tensors inside an object of class argparse\.Namespace"):
        convert(tmp_path / "t.ckpt", tmp_path / "t.safetensors", strict=False)
    assert not (tmp_path / "t.safetensors").exists()


def test_code_running_globals_are_refused_even_when_not_strict(tmp_path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"w": torch.ones(2), "hook": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ConvertError, match=r"evil\.pt.*refusing to run code: REDUCE would call posix\.system"):
        convert(tmp_path / "evil.pt", tmp_path / "evil.safetensors", strict=False)
    assert scan([tmp_path / "evil.pt"])[0].verdict == "dangerous"


def test_cli_skip_objects(tmp_path) -> None:
    torch.save({"w": torch.arange(4.0), "args": argparse.Namespace(a=1)}, tmp_path / "c.pt")
    cmd = [sys.executable, "-m", "torchship.weights.pickle.cli", "convert", str(tmp_path / "c.pt"), "--json"]
    refused = subprocess.run(cmd, capture_output=True, text=True)
    assert refused.returncode == 2 and "argparse.Namespace" in refused.stderr
    done = subprocess.run([*cmd, "--skip-objects"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "argparse.Namespace" in json.loads(done.stdout)["dropped"]["args"]


def test_whole_module_with_tied_and_shared_layers(tmp_path) -> None:
    """A language-model head tied to its embedding and one layer used twice: the converter
    stores each storage once and records the other names as tied, like save_model."""
    emb, head, shared = torch.nn.Embedding(5, 4), torch.nn.Linear(4, 5, bias=False), torch.nn.Linear(4, 4)
    head.weight = emb.weight
    model = torch.nn.Sequential(emb, shared, shared, head)
    torch.save(model, tmp_path / "lm.pt")
    report, got = check_lenient(tmp_path / "lm.pt", tmp_path, {"value": "torch.nn.modules.container.Sequential"})
    assert set(got) | set(report.tied) == set(model.state_dict())
    assert report.tied["3.weight"] == "0.weight" and report.tied["2.bias"] == "1.bias"


def test_self_referencing_objects_end(tmp_path) -> None:
    """An object whose state refers back to itself, and a module listed as its own child: the
    walk is bounded (torch.load(weights_only=False) on the second would recurse forever)."""
    ns = argparse.Namespace(lr=0.1)
    ns.parent = ns
    torch.save({"w": torch.ones(2), "args": ns}, tmp_path / "cycle.pt")
    report = convert(tmp_path / "cycle.pt", tmp_path / "cycle.safetensors", strict=False)
    assert report.tensors == 1 and "argparse.Namespace" in report.dropped["args"]
    layer = torch.nn.Linear(2, 2)
    layer._modules["again"] = layer
    torch.save(layer, tmp_path / "loop.pt")
    with pytest.raises(ConvertError, match=r"loop\.pt: checkpoint structure nests deeper than"):
        convert(tmp_path / "loop.pt", tmp_path / "loop.safetensors", strict=False)
