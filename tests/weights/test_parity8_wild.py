"""Checkpoints as the ecosystem writes them (transformers, diffusers, PEFT, accelerate, timm,
Lightning, numpy), made locally with torch/numpy (transformers itself where installed), then
read by our loader, converter and scanner side by side with the peers: converted tensors equal
``torch.load(weights_only=True)`` (or ``numpy.load(allow_pickle=False)``) where that loads the
file; the scanner agrees with picklescan on which globals are suspicious; what we refuse is
refused with the file and the global named."""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sys
import types
import warnings

import numpy as np
import pytest
import torch

from tests.weights.test_parity_pickle import _flat, _same
from torchship.weights import torch as ours
from torchship.weights.format import SafetensorError
from torchship.weights.pickle import convert, scan
from torchship.weights.pickle.convert import ConvertError

peer = pytest.importorskip("safetensors.torch", reason="safetensors is the peer oracle (pip install '.[dev]')")
picklescan = pytest.importorskip("picklescan.scanner", reason="picklescan is a peer oracle (pip install '.[dev]')")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))


def _trained_optimizers(model: torch.nn.Module) -> tuple[dict, dict, dict]:
    adamw = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    adamw.step()
    sgd.step()
    sched = torch.optim.lr_scheduler.StepLR(adamw, 3)
    return adamw.state_dict(), sgd.state_dict(), sched.state_dict()


def _weights_only(path) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _flat(torch.load(path, weights_only=True))


def _check_converted(path, tmp_path) -> dict[str, torch.Tensor]:
    """Convert; every tensor torch's safe loader returns is in the output, bit for bit."""
    expected = _weights_only(path)
    report = convert(path, tmp_path / (os.path.basename(path) + ".safetensors"))
    got = ours.load_file(report.outputs[0])
    assert set(got) == set(expected) - set(report.tied)
    for name, t in expected.items():
        assert _same(got[report.tied.get(name, name)], t), name
    assert scan([path])[0].verdict == "safe"
    assert picklescan.scan_file_path(str(path)).infected_files == 0
    return got


def _picklescan_suspicious(path) -> set[str]:
    result = picklescan.scan_file_path(str(path))
    assert result.infected_files == 0 and not result.scan_err
    return {f"{g.module}.{g.name}" for g in result.globals if g.safety.name == "Suspicious"}


def _check_refused(path, tmp_path, global_name: str) -> None:
    """torch's safe loader refuses; we refuse naming the file and the global, and the scanner
    calls that global suspicious (not dangerous), as picklescan does."""
    with pytest.raises(Exception, match="Weights only load failed"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.load(path, weights_only=True)
    with pytest.raises(ConvertError) as info:
        convert(path, tmp_path / "refused.safetensors")
    assert str(path) in str(info.value) and f"'{global_name}'" in str(info.value)
    assert not (tmp_path / "refused.safetensors").exists()
    report = scan([path])[0]
    ours_suspicious = {g.qualname for g in report.globals if g.verdict == "suspicious"}
    assert report.verdict == "suspicious" and global_name in ours_suspicious
    assert global_name in _picklescan_suspicious(path)


def test_transformers_sharded_save_pretrained(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg)
    model.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and "total_size" in index["metadata"]
    theirs: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        theirs.update(peer.load_file(str(tmp_path / "hf" / shard)))
    for source in (tmp_path / "hf", tmp_path / "hf" / "model.safetensors.index.json"):
        mine = ours.load_file(source)
        assert set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k]) for k in theirs)
    # and the other way: our sharded save loads in transformers
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    cfg.save_pretrained(tmp_path / "ours")
    ours.save_sharded(state, tmp_path / "ours", "20KB", metadata={"format": "pt"})
    again = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours")
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_diffusers_and_variant_layouts(tmp_path) -> None:
    tensors = {"conv.weight": torch.randn(2, 3), "conv.bias": torch.randn(2)}
    unet = tmp_path / "unet"
    unet.mkdir()
    peer.save_file(tensors, str(unet / "diffusion_pytorch_model.safetensors"), {"format": "pt"})
    got = ours.load_file(unet)
    assert all(torch.equal(got[k], v) for k, v in tensors.items())
    # an fp16 variant beside it: two candidates, a clear error naming both
    peer.save_file({k: v.half() for k, v in tensors.items()}, str(unet / "diffusion_pytorch_model.fp16.safetensors"))
    with pytest.raises(SafetensorError, match=r"diffusion_pytorch_model\.fp16\.safetensors, diffusion_pytorch_model\.safetensors"):
        ours.load_file(unet)
    assert ours.load_file(unet / "diffusion_pytorch_model.fp16.safetensors")["conv.bias"].dtype == torch.float16
    # a sharded variant with transformers' variant index name
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    names = ["model.fp16-00001-of-00002.safetensors", "model.fp16-00002-of-00002.safetensors"]
    for name, key in zip(names, tensors, strict=True):
        peer.save_file({key: tensors[key].half()}, str(sharded / name), {"format": "pt"})
    index = {"metadata": {"total_size": 16}, "weight_map": dict(zip(tensors, names, strict=True))}
    (sharded / "model.safetensors.index.fp16.json").write_text(json.dumps(index))
    for source in (sharded, sharded / "model.safetensors.index.fp16.json"):
        got = ours.load_file(source)
        assert all(torch.equal(got[k], v.half()) for k, v in tensors.items())


def test_peft_adapter_files(tmp_path) -> None:
    lora = collections.OrderedDict({
        "base_model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(8, 32),
        "base_model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(32, 8),
    })
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    peer.save_file(lora, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    mine = ours.load_file(adapter)
    theirs = peer.load_file(str(adapter / "adapter_model.safetensors"))
    assert set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k]) for k in theirs)
    torch.save(lora, adapter / "adapter_model.bin")  # older PEFT
    _check_converted(adapter / "adapter_model.bin", tmp_path)


def test_accelerate_save_state_folder(tmp_path) -> None:
    """model.safetensors, optimizer.bin, scheduler.bin, random_states_0.pkl as accelerate writes."""
    model = _model()
    adamw, _sgd, sched = _trained_optimizers(model)
    state = tmp_path / "checkpoint_0"
    state.mkdir()
    peer.save_file(model.state_dict(), str(state / "model.safetensors"), {"format": "pt"})
    torch.save(adamw, state / "optimizer.bin")
    torch.save(sched, state / "scheduler.bin")
    rng = {"step": 0, "random_state": random.getstate(), "numpy_random_seed": np.random.get_state(),
           "torch_manual_seed": torch.get_rng_state()}
    torch.save(rng, state / "random_states_0.pkl")
    got = ours.load_file(state)
    assert all(torch.equal(got[k], v) for k, v in model.state_dict().items())
    converted = _check_converted(state / "optimizer.bin", tmp_path)
    assert {"state.0.exp_avg", "state.0.step", "state.1.exp_avg_sq"} <= set(converted)
    assert _check_converted(state / "scheduler.bin", tmp_path) == {}
    # torch's safe loader refuses the numpy RNG state; we convert it without running anything
    report = convert(state / "random_states_0.pkl", tmp_path / "rng.safetensors")
    out = ours.load_file(report.outputs[0])
    assert torch.equal(out["torch_manual_seed"], rng["torch_manual_seed"])
    assert np.array_equal(out["numpy_random_seed.1"].numpy(), rng["numpy_random_seed"][1])
    assert json.loads(report.values["random_state"]) == json.loads(json.dumps(rng["random_state"]))
    assert scan([state / "random_states_0.pkl"])[0].verdict == "safe"
    assert picklescan.scan_file_path(str(state / "random_states_0.pkl")).infected_files == 0


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_optimizer_states_and_plain_lightning_checkpoint(tmp_path, legacy) -> None:
    model = _model()
    adamw, sgd, sched = _trained_optimizers(model)
    kwargs = {"_use_new_zipfile_serialization": False} if legacy else {}
    torch.save(sgd, tmp_path / "sgd.pt", **kwargs)
    assert {"state.0.momentum_buffer"} <= set(_check_converted(tmp_path / "sgd.pt", tmp_path))
    ckpt = {"epoch": 3, "global_step": 30, "pytorch-lightning_version": "2.4.0",
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "loops": {}, "callbacks": {}, "optimizer_states": [adamw], "lr_schedulers": [sched],
            "hparams_name": "hparams", "hyper_parameters": {"lr": 0.1, "layers": [4, 3], "dtype": torch.bfloat16}}
    torch.save(ckpt, tmp_path / "epoch=3.ckpt", **kwargs)
    got = _check_converted(tmp_path / "epoch=3.ckpt", tmp_path)
    assert "state_dict.model.0.weight" in got and "optimizer_states.0.state.0.exp_avg" in got


def _attribute_dict_class(monkeypatch) -> type:
    """Lightning's AttributeDict (a dict subclass) under its real module name, without lightning."""

    class AttributeDict(dict):
        def __getattr__(self, key):
            return self[key]

    module = "lightning.fabric.utilities.data"
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    AttributeDict.__module__ = module
    AttributeDict.__qualname__ = "AttributeDict"
    sys.modules[module].AttributeDict = AttributeDict
    return AttributeDict


@pytest.mark.parametrize("hparams", ["namespace", "attribute_dict"])
def test_lightning_and_timm_hyper_parameter_objects_are_refused_by_name(tmp_path, monkeypatch, hparams) -> None:
    model = _model()
    if hparams == "namespace":
        value, name = argparse.Namespace(lr=0.1, epochs=3), "argparse.Namespace"
    else:
        value, name = _attribute_dict_class(monkeypatch)(lr=0.1), "lightning.fabric.utilities.data.AttributeDict"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": value}, tmp_path / "last.ckpt")
    _check_refused(tmp_path / "last.ckpt", tmp_path, name)
    # timm's train.py: checkpoint-<epoch>.pth.tar (a torch zip) with the argparse args
    torch.save({"epoch": 0, "arch": "resnet18", "state_dict": model.state_dict(), "version": 2,
                "args": argparse.Namespace(model="resnet18"), "metric": 0.5}, tmp_path / "checkpoint-0.pth.tar")
    _check_refused(tmp_path / "checkpoint-0.pth.tar", tmp_path, "argparse.Namespace")


def test_whole_module_and_meta_checkpoints(tmp_path) -> None:
    torch.save(_model(), tmp_path / "whole.pt")  # torch.save(model): pickles the classes
    _check_refused(tmp_path / "whole.pt", tmp_path, "torch.nn.modules.container.Sequential")
    torch.save(torch.nn.Linear(2, 2, device="meta").state_dict(), tmp_path / "meta.pt")
    assert set(_weights_only(tmp_path / "meta.pt")) == {"weight", "bias"}  # torch loads meta tensors
    with pytest.raises(ConvertError, match=r"meta\.pt.*meta tensor, which has no data to store"):
        convert(tmp_path / "meta.pt", tmp_path / "meta.safetensors")
    rebuild = "torch._utils._rebuild_meta_tensor_no_storage"
    assert scan([tmp_path / "meta.pt"])[0].verdict == "suspicious"
    assert rebuild in _picklescan_suspicious(tmp_path / "meta.pt")


def test_numpy_npz_and_npy(tmp_path) -> None:
    arrays = {"w": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32),
              "ids": np.arange(5, dtype=">i8"), "mask": np.array([True, False]),
              "fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3))}
    np.savez(tmp_path / "weights.npz", *[np.ones(2)], **arrays)
    np.savez_compressed(tmp_path / "packed.npz", **arrays)
    np.save(tmp_path / "single.npy", arrays["fortran"])
    for name in ("weights.npz", "packed.npz", "single.npy"):
        path = tmp_path / name
        if name.endswith(".npy"):  # numpy's own safe loader is the oracle
            expected = {"array": np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as loaded:
                expected = {k: loaded[k] for k in loaded.files}
        report = convert(path, tmp_path / f"{name}.safetensors")
        got = ours.load_file(report.outputs[0])
        assert set(got) == set(expected), name
        for key, array in expected.items():
            assert np.array_equal(got[key].numpy(), array) and got[key].numpy().dtype == array.dtype.newbyteorder("="), key
        assert scan([path])[0].verdict == "safe"
        assert picklescan.scan_file_path(str(path)).infected_files == 0


class _Payload:
    def __init__(self, canary: str) -> None:
        self.canary = canary

    def __reduce__(self):
        return (os.system, (f"touch {self.canary}",))


def test_object_arrays_in_npz_are_refused_and_never_run(tmp_path) -> None:
    canary = tmp_path / "CANARY"
    np.savez(tmp_path / "benign.npz", w=np.ones(2), meta=np.array([{"a": 1}], dtype=object))
    np.savez(tmp_path / "evil.npz", w=np.ones(2), x=np.array([_Payload(str(canary))], dtype=object))
    for name in ("benign", "evil"):
        path = tmp_path / f"{name}.npz"
        with pytest.raises(ValueError, match="allow_pickle"), np.load(path, allow_pickle=False) as z:
            z[z.files[-1]]  # numpy's safe mode refuses it too
        member = "meta" if name == "benign" else "x"
        with pytest.raises(ConvertError, match=rf"{name}\.npz!{member}\.npy: object array"):
            convert(path, tmp_path / f"{name}.safetensors")
    np.save(tmp_path / "evil.npy", np.array([_Payload(str(canary))], dtype=object), allow_pickle=True)
    with pytest.raises(ConvertError, match=r"evil\.npy: object array"):
        convert(tmp_path / "evil.npy", tmp_path / "evil_npy.safetensors")
    assert scan([tmp_path / "benign.npz"])[0].verdict == "suspicious"
    assert picklescan.scan_file_path(str(tmp_path / "benign.npz")).infected_files == 0
    for name in ("evil.npz", "evil.npy"):
        evil = scan([tmp_path / name])[0]
        assert evil.verdict == "dangerous" and "posix.system" in {g.qualname for g in evil.globals}, name
        assert picklescan.scan_file_path(str(tmp_path / name)).infected_files == 1, name
    assert not canary.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_every_pickle_protocol_torch_save_takes(tmp_path, legacy) -> None:
    """torch.save(pickle_protocol=p): torch's full loader reads 1..5 (its weights_only loader
    only 2 and 3); we convert all five to the same tensors (the oracle loads files we wrote
    ourselves, so running their pickle is safe) and neither reads protocol 0."""
    state = _model().state_dict()
    kwargs = {"_use_new_zipfile_serialization": False} if legacy else {}
    for proto in range(6):
        path = tmp_path / f"p{proto}.pt"
        torch.save(state, path, pickle_protocol=proto, **kwargs)
        if proto == 0:  # the persistent ids become strings, which torch.load cannot parse back
            with pytest.raises(Exception, match="saved_id must be a tuple"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.load(path, weights_only=False)
            with pytest.raises(ConvertError, match="persistent id"):
                convert(path, tmp_path / "p0.safetensors")
            continue
        got = ours.load_file(convert(path, tmp_path / f"p{proto}.safetensors").outputs[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = torch.load(path, weights_only=False)
        assert set(got) == set(expected) and all(torch.equal(got[k], v) for k, v in expected.items()), proto
        report = scan([path])[0]
        assert report.verdict == "safe" and report.format == ("legacy" if legacy else "zip"), (proto, report.problems)


def test_torch_export_and_distributed_checkpoints_get_a_clear_refusal(tmp_path) -> None:
    model = _model()
    torch.export.save(torch.export.export(model, (torch.randn(1, 4),)), tmp_path / "m.pt2")
    with pytest.raises(ConvertError, match=r"m\.pt2: a torch\.export archive \(\.pt2\).*torch\.export\.load"):
        convert(tmp_path / "m.pt2", tmp_path / "m.safetensors")
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": model.state_dict()}, checkpoint_id=str(tmp_path / "dcp"))
    with pytest.raises(ConvertError, match=r"dcp: a torch\.distributed\.checkpoint \(DCP\) directory.*dcp_to_torch_save"):
        convert(tmp_path / "dcp", tmp_path / "dcp_out")
    # its .metadata pickles DCP classes: suspicious for us and for picklescan, nothing dangerous
    report = scan([tmp_path / "dcp" / ".metadata"])[0]
    ours_suspicious = {g.qualname for g in report.globals if g.verdict == "suspicious"}
    assert report.verdict == "suspicious"
    assert "torch.distributed.checkpoint.metadata.Metadata" in ours_suspicious & _picklescan_suspicious(tmp_path / "dcp" / ".metadata")
