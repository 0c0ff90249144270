"""The low-level ``TensorSpec``/``serialize``/``serialize_file``/``deserialize`` API, side by side
with safetensors 0.8's module-level functions: same argument forms, byte-identical output, the
same tensors back, and the peer's exception types on the same bad input."""

from __future__ import annotations

import doctest
import importlib
import os

import numpy as np
import pytest
import torch

import torchship.weights as ours
from torchship.weights.format import SafetensorError

peer = pytest.importorskip("safetensors", reason="safetensors is the peer oracle (pip install '.[dev]')")

TORCH_DTYPES = ["float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
                "bool", "uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                "float8_e5m2fnuz", "float8_e8m0fnu", "complex64", "float4_e2m1fn_x2"]


def _tensor(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Random bytes viewed as ``name`` (every bit pattern, NaNs included, compares bytewise)."""
    gen = torch.Generator().manual_seed(seed)
    itemsize = 1 if name == "float4_e2m1fn_x2" else torch.empty(0, dtype=getattr(torch, name)).element_size()
    n = int(np.prod(shape)) * itemsize
    raw = torch.randint(0, 256, (n,), dtype=torch.uint8, generator=gen)
    if name == "bool":
        raw = raw % 2
    return raw.view(getattr(torch, name)).reshape(shape)


def _specs(module, tensors: dict[str, torch.Tensor]) -> dict:
    return {k: module.TensorSpec(dtype=str(t.dtype).split(".")[-1], shape=t.shape,
                                 data_ptr=t.data_ptr(), data_len=t.numel() * t.element_size())
            for k, t in tensors.items()}


def _as_dict(listing) -> dict:
    return {k: (v["dtype"], list(v["shape"]), bytes(v["data"])) for k, v in listing}


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}, {"é": "ß ✓"}])
def test_every_dtype_serializes_byte_identical(metadata) -> None:
    tensors = {f"t.{name}": _tensor(name, (3, 4), seed) for seed, name in enumerate(TORCH_DTYPES)}
    tensors["scalar"] = torch.tensor(2.5)
    tensors["empty"] = torch.empty(0, 5, dtype=torch.float16)
    tensors["ünïcode"] = torch.arange(3, dtype=torch.int32)
    mine = ours.serialize(_specs(ours, tensors), metadata=metadata)
    theirs = peer.serialize(_specs(peer, tensors), metadata=metadata)
    assert mine == theirs
    assert _as_dict(ours.deserialize(theirs)) == _as_dict(peer.deserialize(mine))
    for key, (dtype, shape, data) in _as_dict(ours.deserialize(mine)).items():
        t = tensors[key]
        assert data == t.reshape(-1).view(torch.uint8).numpy().tobytes(), key
        logical = list(t.shape[:-1]) + [t.shape[-1] * 2] if dtype == "F4" else list(t.shape)
        assert shape == logical, key


def test_numpy_specs_as_safetensors_numpy_builds_them() -> None:
    arrays = {"f": np.linspace(-1, 1, 7, dtype=np.float32), "c": np.array([1 + 2j], np.complex64),
              "b": np.array([True, False]), "i": np.arange(4, dtype=np.int64).reshape(2, 2)}

    def specs(module):
        return {k: module.TensorSpec(dtype=a.dtype.name, shape=a.shape, data_ptr=a.ctypes.data, data_len=a.nbytes)
                for k, a in arrays.items()}

    assert ours.serialize(specs(ours)) == peer.serialize(specs(peer))
    loaded = {k: np.frombuffer(v["data"], arrays[k].dtype).reshape(v["shape"]) for k, v in ours.deserialize(peer.serialize(specs(peer)))}
    for key, array in arrays.items():
        np.testing.assert_array_equal(loaded[key], array)


def test_serialize_file_writes_the_serialize_bytes(tmp_path) -> None:
    tensors = {"w": _tensor("bfloat16", (5, 3), 1), "b": _tensor("float32", (3,), 2)}
    ours.serialize_file(_specs(ours, tensors), tmp_path / "ours.safetensors", metadata={"k": "v"})
    peer.serialize_file(_specs(peer, tensors), str(tmp_path / "peer.safetensors"), {"k": "v"})
    ours.serialize_file(tensor_dict=_specs(ours, tensors), filename=str(tmp_path / "kw.safetensors"))
    mine = (tmp_path / "ours.safetensors").read_bytes()
    assert mine == (tmp_path / "peer.safetensors").read_bytes()
    assert mine == ours.serialize(_specs(ours, tensors), {"k": "v"})
    assert (tmp_path / "kw.safetensors").read_bytes() == peer.serialize(_specs(peer, tensors))
    with peer.safe_open(str(tmp_path / "ours.safetensors"), "pt") as f:
        assert torch.equal(f.get_tensor("w"), tensors["w"])


def test_tensor_spec_fields_and_repr_match() -> None:
    a = np.zeros(16, np.uint8)
    for dtype, shape in [("float32", (2, 3)), ("bool", [True, 2]), ("float4_e2m1fn_x2", (2, 3)),
                         ("float4_e2m1fn_x2", ()), ("bfloat16", torch.Size([4])), ("int8", (np.int64(3),))]:
        kwargs = dict(dtype=dtype, shape=shape, data_ptr=a.ctypes.data, data_len=7)
        mine, theirs = ours.TensorSpec(**kwargs), peer.TensorSpec(**kwargs)
        assert (mine.dtype, mine.shape, mine.data_ptr, mine.data_len) == \
            (theirs.dtype, theirs.shape, theirs.data_ptr, theirs.data_len)
        assert repr(mine) == repr(theirs)
    spec = ours.TensorSpec(dtype="float32", shape=[1], data_ptr=0, data_len=4)
    with pytest.raises(AttributeError):
        spec.dtype = "float64"


def _bad_specs(module):
    buf = np.arange(6, dtype=np.float32)
    ptr = buf.ctypes.data

    def spec(dtype="float32", shape=(6,), data_ptr=ptr, data_len=24):
        return module.TensorSpec(dtype=dtype, shape=shape, data_ptr=data_ptr, data_len=data_len)

    def f4_scalar():
        return module.serialize({"f": spec("float4_e2m1fn_x2", (), ptr, 1)})

    return buf, {
        "dtype safetensors code": lambda: spec(dtype="F32"),
        "dtype short name": lambda: spec(dtype="float"),
        "dtype not a str": lambda: spec(dtype=1),
        "shape a str": lambda: spec(shape="6"),
        "shape of floats": lambda: spec(shape=(6.0,)),
        "negative dim": lambda: spec(shape=(-1,)),
        "dim past u64": lambda: spec(shape=(2**64,)),
        "negative pointer": lambda: spec(data_ptr=-1),
        "pointer past u64": lambda: spec(data_ptr=2**64),
        "float length": lambda: spec(data_len=24.0),
        "positional arguments": lambda: module.TensorSpec("float32", (6,), ptr, 24),
        "missing argument": lambda: module.TensorSpec(dtype="float32", shape=(6,), data_ptr=ptr),
        "length short": lambda: module.serialize({"a": spec(data_len=20)}),
        "length long": lambda: module.serialize({"a": spec(data_len=28)}),
        "shape and length disagree": lambda: module.serialize({"a": spec(shape=(2, 2))}),
        "element count overflows": lambda: module.serialize({"a": spec("float64", (2**62, 2**62))}),
        "F4 scalar": f4_scalar,
        "not a dict": lambda: module.serialize([("a", spec())]),
        "value is an array": lambda: module.serialize({"a": buf}),
        "name not a str": lambda: module.serialize({1: spec()}),
        "metadata value not a str": lambda: module.serialize({"a": spec()}, {"x": 1}),
        "metadata key not a str": lambda: module.serialize({"a": spec()}, {1: "x"}),
        "metadata a list": lambda: module.serialize({"a": spec()}, [("x", "y")]),
        "deserialize a str": lambda: module.deserialize("abc"),
        "deserialize a short blob": lambda: module.deserialize(b"\x00" * 4),
        "deserialize trailing bytes": lambda: module.deserialize(module.serialize({"a": spec()}) + b"x"),
        "deserialize a wrong keyword": lambda: module.deserialize(data=b""),
        "filename as bytes": lambda: module.serialize_file({"a": spec()}, b"x.safetensors"),
        "filename an int": lambda: module.serialize_file({"a": spec()}, 3),
    }


def test_bad_input_raises_the_peers_exception_type(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _keep_a, mine = _bad_specs(ours)
    _keep_b, theirs = _bad_specs(peer)
    for case, call in theirs.items():
        with pytest.raises(Exception) as peer_exc:
            call()
        peer_type = type(peer_exc.value)
        with pytest.raises(Exception) as our_exc:
            mine[case]()
        err = our_exc.value
        if peer_type is peer.SafetensorError:
            assert isinstance(err, SafetensorError), (case, err)
        else:  # a builtin exception: ours is that type too (and a SafetensorError unless Python raised it)
            assert isinstance(err, peer_type), (case, peer_type, err)
        assert not (tmp_path / "x.safetensors").exists()


def test_errors_name_the_tensor_and_the_sizes() -> None:
    a = np.zeros(6, np.float32)
    spec = ours.TensorSpec(dtype="float32", shape=(2, 2), data_ptr=a.ctypes.data, data_len=24)
    with pytest.raises(SafetensorError, match=r"tensor 'layer\.0': data_len is 24 bytes but F32 \[2, 2\] needs 16"):
        ours.serialize({"layer.0": spec})
    with pytest.raises(SafetensorError, match='Unknown dtype "F32". Supported dtypes: bool, .*float4_e2m1fn_x2'):
        ours.TensorSpec(dtype="F32", shape=(), data_ptr=0, data_len=4)


@pytest.mark.parametrize("where", ["missing directory", "existing directory"])
def test_a_failed_write_is_a_safetensor_error_like_the_peers(tmp_path, where) -> None:
    """The peer raises SafetensorError for an I/O failure; ours is that and the OSError."""
    from safetensors.numpy import save_file as peer_np_save
    from safetensors.torch import save_file as peer_pt_save

    from torchship.weights.numpy import save_file as our_np_save
    from torchship.weights.torch import save_file as our_pt_save

    target = tmp_path / "no" / "x.safetensors" if where == "missing directory" else tmp_path
    t = torch.zeros(1)
    kind = FileNotFoundError if where == "missing directory" else IsADirectoryError
    for call in (lambda: peer.serialize_file(_specs(peer, {"a": t}), str(target)),
                 lambda: peer_pt_save({"a": t}, str(target)), lambda: peer_np_save({"a": t.numpy()}, str(target))):
        with pytest.raises(peer.SafetensorError):
            call()
    for call in (lambda: ours.serialize_file(_specs(ours, {"a": t}), target),
                 lambda: our_pt_save({"a": t}, target), lambda: our_np_save({"a": t.numpy()}, target)):
        with pytest.raises(SafetensorError) as info:
            call()
        assert isinstance(info.value, kind) and info.value.filename == str(target)
    assert os.listdir(tmp_path) == []


def test_deserialize_lists_tensors_in_data_order() -> None:
    tensors = {name: _tensor("int64" if name < "m" else "float32", (2,), i) for i, name in enumerate("qwertyuiop")}
    blob = peer.serialize(_specs(peer, tensors))
    mine = ours.deserialize(blob)
    theirs = peer.deserialize(blob)
    assert sorted(k for k, _ in theirs) == sorted(k for k, _ in mine)
    assert [k for k, _ in mine] == sorted(tensors, key=lambda k: (tensors[k].dtype != torch.int64, k))
    assert [k for k, _ in mine] == [k for k, _ in ours.deserialize(blob)]
    assert all(isinstance(v["data"], bytearray) and isinstance(v["shape"], list) for _, v in mine)


def test_deliberate_differences(tmp_path) -> None:
    a = np.arange(6, dtype=np.float32)

    def spec(module):
        return module.TensorSpec(dtype="float32", shape=(6,), data_ptr=a.ctypes.data, data_len=24)

    # the reserved name: the peer writes a file nobody can read back; we refuse
    broken = peer.serialize({"__metadata__": spec(peer)})
    with pytest.raises(peer.SafetensorError):
        peer.deserialize(broken)
    with pytest.raises(SafetensorError, match="reserved"):
        ours.serialize({"__metadata__": spec(ours)})
    # empty dict with empty metadata: the peer's JSON is invalid, ours reads back
    with pytest.raises(peer.SafetensorError):
        peer.deserialize(peer.serialize({}, {}))
    assert peer.deserialize(ours.serialize({}, {})) == []
    # several metadata keys: the peer's order varies, ours is sorted, both read back the same map
    meta = {k: "v" for k in "fedcba"}
    blob = ours.serialize({"a": spec(ours)}, meta)
    assert blob[8:].startswith(b'{"__metadata__":{"a":"v","b":"v","c":"v","d":"v","e":"v","f":"v"}')
    path = tmp_path / "m.safetensors"
    path.write_bytes(blob)
    with peer.safe_open(str(path), "np") as f:
        assert f.metadata() == meta
    # deserialize also takes a bytearray/memoryview (the peer wants bytes)
    good = ours.serialize({"a": spec(ours)})
    assert ours.deserialize(bytearray(good)) == ours.deserialize(memoryview(good)) == ours.deserialize(good)


def test_exported_where_the_peer_exports_them() -> None:
    for name in ("TensorSpec", "serialize", "serialize_file", "deserialize", "safe_open", "SafetensorError"):
        assert hasattr(peer, name) and hasattr(ours, name), name
    assert set(peer.__all__ if hasattr(peer, "__all__") else []) <= set(ours.__all__)


@pytest.mark.parametrize("module", ["torchship.weights", "torchship.weights.raw"])
def test_docstring_examples(module, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
    assert not os.listdir(tmp_path)
