"""Pickle checkpoints a user converts, side by side with ``torch.load(weights_only=True)``.

Every tensor in the converted file must equal what torch's safe loader returns under the same
dotted name (bit for bit, same dtype and shape); what torch refuses we refuse too, without
running anything; what torch loads but safetensors cannot hold (sparse, quantized, meta
tensors) is refused with a message that says so.
"""

from __future__ import annotations

import collections
import json
import os
import warnings

import pytest
import torch

from torchship.weights import torch as ours
from torchship.weights.pickle import convert, scan
from torchship.weights.pickle.convert import ConvertError

DTYPES = ["float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
          "bool", "uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
          "float8_e5m2fnuz", "float8_e8m0fnu", "complex64"]


LEGACY_UNREADABLE = [n for n in DTYPES if n.startswith(("float8", "uint")) and n != "uint8"]


def _flat(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """Dotted names as the converter writes them (dict keys, list/tuple indices)."""
    if isinstance(obj, torch.Tensor):
        return {prefix or "tensor": obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list | tuple) else ()
    out: dict[str, torch.Tensor] = {}
    for key, value in items:
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def _convert_and_compare(tmp_path, obj, **save_kwargs):
    src = tmp_path / "ckpt.pt"
    torch.save(obj, src, **save_kwargs)
    expected = _flat(torch.load(src, weights_only=True))
    report = convert(src, tmp_path / "ckpt.safetensors")
    got = ours.load_file(report.outputs[0])
    for name, t in expected.items():
        kept = report.tied.get(name, name)
        assert _same(got[kept], t), name
    assert set(got) == set(expected) - set(report.tied)
    return report


X = torch.arange(12.0).reshape(3, 4)


@pytest.mark.parametrize(
    "make",
    [
        lambda: {"a": {"b": [X, (X + 1, {"c": X * 2})]}, "n": 5},
        lambda: [X, X + 1],
        lambda: X,
        lambda: {"p": torch.nn.Parameter(X.clone()), "q": torch.nn.Parameter(torch.ones(2), requires_grad=False)},
        lambda: {"a": X, "b": X[1], "c": X[:, 1], "d": X.view(-1)[3:7], "t": X.t(), "e": X[:, ::2]},
        lambda: {"x": torch.zeros(1, 3).expand(4, 3), "s": torch.tensor(3.0), "z": torch.zeros(0, 3)},
        lambda: {n: (torch.arange(12) % 3).to(getattr(torch, n)).reshape(3, 4).t() for n in DTYPES},
        lambda: {0: X, 1: {2: X + 1}},
    ],
    ids=["nested", "list", "bare-tensor", "parameters", "views", "odd-strides", "dtype-views", "int-keys"],
)
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_converted_tensors_equal_weights_only_load(tmp_path, make, legacy: bool) -> None:
    obj = make()
    if legacy and isinstance(obj, dict):  # torch cannot read these back from legacy (next test)
        obj = {k: v for k, v in obj.items() if k not in LEGACY_UNREADABLE}
    _convert_and_compare(tmp_path, obj, _use_new_zipfile_serialization=not legacy)


def test_legacy_dtypes_converted_where_torch_cannot_read_them(tmp_path) -> None:
    """torch 2.13 writes legacy-format float8 and uint16/32/64 storages it cannot load back
    (``UntypedStorage has no attribute dtype``); we convert them from the raw bytes."""
    tensors = {n: (torch.arange(6) % 3).to(getattr(torch, n)) for n in LEGACY_UNREADABLE}
    src = tmp_path / "f8.pt"
    torch.save(tensors, src, _use_new_zipfile_serialization=False)
    with pytest.raises(AttributeError):
        torch.load(src, weights_only=True)
    got = ours.load_file(convert(src, tmp_path / "f8.safetensors").outputs[0])
    assert all(_same(got[n], t) for n, t in tensors.items())


def test_ordered_dict_with_metadata_and_tied_weights(tmp_path) -> None:
    sd = collections.OrderedDict([("embed.weight", X), ("head.weight", X), ("b", torch.ones(3))])
    sd._metadata = collections.OrderedDict({"": {"version": 1}})
    report = _convert_and_compare(tmp_path, sd)
    assert report.tied == {"head.weight": "embed.weight"}
    with ours.safe_open(report.outputs[0], "pt") as f:
        assert f.metadata()["head.weight"] == "embed.weight"  # save_model's convention


def test_lightning_style_checkpoint(tmp_path) -> None:
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-3)
    lin(torch.randn(1, 3)).sum().backward()
    opt.step()
    ckpt = {"epoch": 3, "global_step": 100, "pytorch-lightning_version": "2.4.0",
            "state_dict": lin.state_dict(), "optimizer_states": [opt.state_dict()], "lr_schedulers": [],
            "hyper_parameters": {"lr": 1e-3, "layers": [3, 2], "name": "m", "flag": True, "none": None,
                                 "dtype": torch.bfloat16},
            "callbacks": {}, "loops": {}}
    report = _convert_and_compare(tmp_path, ckpt)
    assert report.dropped == {}
    with ours.safe_open(report.outputs[0], "pt") as f:
        meta = f.metadata()
    hp = json.loads(meta["hyper_parameters"])
    assert hp == {"lr": 1e-3, "layers": [3, 2], "name": "m", "flag": True, "none": None, "dtype": "torch.bfloat16"}
    assert json.loads(meta["epoch"]) == 3 and json.loads(meta["optimizer_states.0.param_groups"])[0]["lr"] == 1e-3


def test_hf_pytorch_model_bin_shards(tmp_path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    shards = [{"model.embed.weight": torch.randn(5, 4), "model.layer.0.weight": torch.randn(4, 4)},
              {"model.layer.1.weight": torch.randn(4, 4).t(), "lm_head.bias": torch.zeros(5, dtype=torch.bfloat16)}]
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"pytorch_model-{i + 1:05d}-of-00002.bin"
        torch.save(shard, src / name)
        weight_map.update(dict.fromkeys(shard, name))
    (src / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    convert(src, out)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert sorted(index["weight_map"]) == sorted(weight_map)
    got = ours.load_file(out)
    for i in range(2):
        for name, t in torch.load(src / f"pytorch_model-{i + 1:05d}-of-00002.bin", weights_only=True).items():
            assert _same(got[name], t), name


# --------------------------------------------------------------------- refused like torch

class _Payload:
    def __init__(self, canary: str) -> None:
        self.canary = canary

    def __reduce__(self):
        return (os.system, (f"touch {self.canary}",))


class Sub(torch.Tensor):  # a tensor subclass pickled by reference
    pass


class Config:  # a model class pickled by reference: torch refuses, so do we
    def __init__(self) -> None:
        self.hidden = 4


@pytest.mark.parametrize(
    "make",
    [lambda c: {"w": X, "evil": _Payload(c)}, lambda c: {"w": X, "cfg": Config()},
     lambda c: {"w": X, "s": slice(1, 2)}],
    ids=["os-system", "custom-class", "slice"],
)
def test_what_weights_only_refuses_we_refuse_without_running(tmp_path, make) -> None:
    canary = tmp_path / "CANARY"
    src = tmp_path / "bad.pt"
    torch.save(make(str(canary)), src)
    with pytest.raises(Exception, match="Weights only load failed"):  # noqa: B017 - UnpicklingError
        torch.load(src, weights_only=True)
    with pytest.raises(ConvertError, match="bad.pt") as info:
        convert(src, tmp_path / "bad.safetensors")
    assert "refusing" in str(info.value) and not canary.exists()
    assert not (tmp_path / "bad.safetensors").exists()


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: {"a": X.to_sparse()}, "sparse tensor, which safetensors cannot store"),
        (lambda: {"a": X.to_sparse_csr()}, "sparse tensor, which safetensors cannot store"),
        (lambda: {"a": torch.quantize_per_tensor(X, 0.1, 0, torch.qint8)}, "quantized tensor"),
        (lambda: {"a": torch.empty(3, device="meta")}, "meta tensor, which has no data"),
        (lambda: {"a": torch.ones(2, dtype=torch.complex128)}, "torch.complex128 has no safetensors dtype"),
    ],
    ids=["sparse-coo", "sparse-csr", "quantized", "meta", "complex128"],
)
def test_what_torch_loads_but_safetensors_cannot_hold(tmp_path, make, fragment: str) -> None:
    """torch loads these with weights_only=True; safetensors has no form for them, so convert
    refuses with the reason (it used to say 'refusing to run code'), and the scanner never calls
    them dangerous (a sparse checkpoint used to be 'dangerous' because of
    torch.serialization._get_layout)."""
    src = tmp_path / "t.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(make(), src)
        torch.load(src, weights_only=True)
    with pytest.raises(ConvertError, match=fragment):
        convert(src, tmp_path / "t.safetensors")
    assert scan([src])[0].verdict in ("safe", "suspicious")


def test_numpy_and_python_values_torch_refuses_are_converted_safely(tmp_path) -> None:
    """weights_only=True refuses numpy arrays and sets/complex numbers (not on its allowlist);
    our own code rebuilds them from raw bytes and plain data, so they convert."""
    import numpy as np

    arrays = {"a": np.arange(4.0), "b": np.ones((2, 3), np.float16).T, "be": np.arange(3, dtype=">i4"),
              "bo": np.array([True, False])}
    src = tmp_path / "np.pt"
    torch.save({**arrays, "s": {1, 2}, "c": 1 + 2j, "k": np.int64(3)}, src)
    with pytest.raises(Exception, match="Weights only load failed"):  # noqa: B017 - UnpicklingError
        torch.load(src, weights_only=True)
    report = convert(src, tmp_path / "np.safetensors")
    with ours.safe_open(report.outputs[0], "np") as f:
        for name, arr in arrays.items():
            got = f.get_tensor(name)
            assert got.dtype == arr.dtype.newbyteorder("=") and np.array_equal(got, arr), name
        meta = f.metadata()
    assert (json.loads(meta["s"]), json.loads(meta["c"]), json.loads(meta["k"])) == ([1, 2], [1.0, 2.0], 3)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_plain_tensors_with_python_attributes(tmp_path, legacy: bool) -> None:
    """A tensor carrying attributes (``t.tag = ...``) is pickled through
    torch._tensor._rebuild_from_type_v2(_rebuild_tensor_v2, torch.Tensor, ...), which
    weights_only=True loads; we convert it (it used to be refused as 'code'). A tensor
    subclass is refused by both."""
    t = torch.arange(6.0).reshape(2, 3).t()
    t.tag = "x"
    u = torch.ones(2, dtype=torch.bfloat16)
    u.meta = {"a": 1}
    _convert_and_compare(tmp_path, {"t": t, "u": u, "plain": X}, _use_new_zipfile_serialization=not legacy)

    src = tmp_path / "sub.pt"
    torch.save({"s": torch.ones(2).as_subclass(Sub)}, src, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(Exception, match="Weights only load failed"):  # noqa: B017 - UnpicklingError
        torch.load(src, weights_only=True)
    with pytest.raises(ConvertError, match="tensor subclass .*Sub.* is not supported"):
        convert(src, tmp_path / "sub.safetensors")


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_counters_and_bare_storages(tmp_path, legacy: bool) -> None:
    """collections.Counter (on weights_only's allowlist) becomes a JSON map of its counts; a
    bare storage becomes a 1-D tensor of its elements (torch.load gives a TypedStorage)."""
    src = tmp_path / "c.pt"
    torch.save({"w": X, "vocab": collections.Counter("aab"), "s": torch.arange(4.0).half().storage()},
               src, _use_new_zipfile_serialization=not legacy)
    ref = torch.load(src, weights_only=True)
    report = convert(src, tmp_path / "c.safetensors")
    with ours.safe_open(report.outputs[0], "pt") as f:
        assert json.loads(f.metadata()["vocab"]) == dict(ref["vocab"]) == {"a": 2, "b": 1}
        assert _same(f.get_tensor("s"), torch.tensor(ref["s"].tolist(), dtype=ref["s"].dtype))
        assert _same(f.get_tensor("w"), ref["w"])
