"""The real safetensors package as oracle, in both directions, plus the real MiniLM checkpoint."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import safetensors
import safetensors.numpy as peer_np
import safetensors.torch as peer_pt
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.weights._util import ALL_DTYPES_NP, minilm_path
from torchship.weights import numpy as ours_np
from torchship.weights import safe_open
from torchship.weights import torch as ours_pt


def _np_dict(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for i, (name, dtype) in enumerate(ALL_DTYPES_NP.items()):
        shape = [(), (0,), (3,), (2, 5), (1, 2, 3)][i % 5]
        raw = rng.integers(0, 256, size=int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype=np.uint8)
        arr = raw.view(np.uint8 if dtype is np.bool_ else dtype).reshape(shape)
        if dtype is np.bool_:
            arr = np.asarray((arr & 1).astype(np.bool_)).reshape(shape)
        out[f"t.{name.lower()}"] = arr
    return out


def _torch_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    out = {
        "f64": base.double(), "f32": base, "f16": base.half(), "bf16": base.bfloat16(),
        "i64": torch.randint(-(2**62), 2**62, (5,), generator=g), "i32": torch.randint(-100, 100, (2, 3), generator=g, dtype=torch.int32),
        "i16": torch.arange(-3, 3, dtype=torch.int16), "i8": torch.arange(-4, 4, dtype=torch.int8),
        "u8": torch.arange(7, dtype=torch.uint8), "bool": base > 0, "c64": torch.randn(3, dtype=torch.complex64, generator=g),
        "u16": torch.arange(5).to(torch.uint16), "u32": torch.arange(5).to(torch.uint32), "u64": torch.arange(5).to(torch.uint64),
        "f8e4": base.to(torch.float8_e4m3fn), "f8e5": base.to(torch.float8_e5m2),
        "f8e4z": base.to(torch.float8_e4m3fnuz), "f8e5z": base.to(torch.float8_e5m2fnuz),
        "e8m0": torch.tensor([1, 127, 130], dtype=torch.uint8).view(torch.float8_e8m0fnu),
        "f4": torch.tensor([[0x21, 0x6A], [0xF0, 0x07]], dtype=torch.uint8).view(torch.float4_e2m1fn_x2),
        "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3),
    }
    return out


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8) if t.numel() else t.reshape(-1).to(torch.uint8)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


def test_numpy_bytes_identical_and_cross_readable(tmp_path) -> None:
    arrays = _np_dict()
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    ours_np.save_file(arrays, ours, metadata={"format": "np"})
    peer_np.save_file(arrays, str(theirs), metadata={"format": "np"})
    assert ours.read_bytes() == theirs.read_bytes()
    assert ours_np.save(arrays) == peer_np.save(arrays)
    for loaded in (ours_np.load_file(theirs), peer_np.load_file(str(ours)), ours_np.load(peer_np.save(arrays))):
        assert loaded.keys() == arrays.keys()
        for k, v in arrays.items():
            assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape
            assert np.array_equal(loaded[k].reshape(-1).view(np.uint8), v.reshape(-1).view(np.uint8)), k


def test_torch_all_dtypes_bytes_identical_and_cross_readable(tmp_path) -> None:
    tensors = _torch_dict()
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    ours_pt.save_file(tensors, ours, metadata={"format": "pt"})
    peer_pt.save_file(tensors, str(theirs), metadata={"format": "pt"})
    assert ours.read_bytes() == theirs.read_bytes()
    assert ours_pt.save(tensors) == peer_pt.save(tensors)
    for loaded in (ours_pt.load_file(theirs), ours_pt.load(theirs.read_bytes())):
        assert loaded.keys() == tensors.keys()
        for k, v in tensors.items():
            assert _same(loaded[k], v), k
    # the peer cannot build e8m0/f4 tensors in load(); compare the dtypes it supports
    with safetensors.safe_open(str(ours), "pt") as f:
        for k in f.keys():  # noqa: SIM118 - safe_open, not a dict
            assert _same(f.get_tensor(k), tensors[k]), k


def test_safe_open_api_matches_peer(tmp_path) -> None:
    path = tmp_path / "m.safetensors"
    peer_pt.save_file(_torch_dict(), str(path), metadata={"format": "pt", "note": "x"})
    with safe_open(path, framework="pt") as mine, safetensors.safe_open(str(path), "pt") as ref:
        assert mine.keys() == ref.keys()
        assert mine.offset_keys() == ref.offset_keys()
        assert mine.metadata() == ref.metadata()
        for k in ref.keys():  # noqa: SIM118 - safe_open, not a dict
            assert mine.get_slice(k).get_shape() == ref.get_slice(k).get_shape()
            assert mine.get_slice(k).get_dtype() == ref.get_slice(k).get_dtype()
        got = mine.get_tensors()
        assert list(got) == ref.offset_keys()


def test_minilm_checkpoint_equal_to_safetensors() -> None:
    path = minilm_path()
    theirs = peer_pt.load_file(str(path))
    mine = ours_pt.load_file(path)
    assert len(mine) == len(theirs) > 50
    assert mine.keys() == theirs.keys()
    for k, v in theirs.items():
        assert _same(mine[k], v), k
    mine_np = ours_np.load_file(path)
    for k, v in peer_np.load_file(str(path)).items():
        assert mine_np[k].dtype == v.dtype and np.array_equal(mine_np[k], v), k
    with safe_open(path, "np") as f, safetensors.safe_open(str(path), "np") as g:
        assert f.metadata() == g.metadata()
        assert f.offset_keys() == g.offset_keys()


def test_minilm_resave_is_byte_identical(tmp_path) -> None:
    tensors = peer_pt.load_file(str(minilm_path()))
    ours, theirs = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    ours_pt.save_file(tensors, ours, metadata={"format": "pt"})
    peer_pt.save_file(tensors, str(theirs), metadata={"format": "pt"})
    assert ours.read_bytes() == theirs.read_bytes()


def test_non_contiguous_numpy_saved_with_right_values() -> None:
    # safetensors 0.8 writes these in memory order (bug #825); we write the logical values
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    cases = {"transposed": base.T, "strided": base[:, ::2], "reversed": base[::-1], "fortran": np.asfortranarray(base)}
    loaded = ours_np.load(ours_np.save(cases))
    for k, v in cases.items():
        assert np.array_equal(loaded[k], v), k
    assert np.array_equal(peer_np.load(ours_np.save(cases))["transposed"], base.T)
    assert not np.array_equal(peer_np.load(peer_np.save({"t": base.T}))["t"], base.T)  # the peer's bug


def test_big_endian_numpy_saved_little_endian() -> None:
    arr = np.arange(5, dtype=">i4")
    out = ours_np.load(ours_np.save({"x": arr}))["x"]
    assert out.dtype == np.dtype("<i4") and out.tolist() == [0, 1, 2, 3, 4]


def test_bf16_float8_load_in_numpy_via_ml_dtypes(tmp_path) -> None:
    t = torch.tensor([1.5, -2.0, 0.25, 448.0])
    path = tmp_path / "x.safetensors"
    peer_pt.save_file({"bf": t.bfloat16(), "e4": t.to(torch.float8_e4m3fn), "e5": t.to(torch.float8_e5m2)}, str(path))
    loaded = ours_np.load_file(path)
    assert loaded["bf"].dtype == ml_dtypes.bfloat16
    assert loaded["e4"].dtype == ml_dtypes.float8_e4m3fn
    assert loaded["e5"].dtype == ml_dtypes.float8_e5m2
    for k, v in {"bf": t.bfloat16(), "e4": t.to(torch.float8_e4m3fn), "e5": t.to(torch.float8_e5m2)}.items():
        assert np.array_equal(loaded[k].astype(np.float64), v.double().numpy()), k


def test_f4_numpy_roundtrip_and_torch_packing(tmp_path) -> None:
    values = np.array([[0.5, 1.0, -1.0, 4.0], [6.0, -0.0, 0.0, -6.0]], dtype=ml_dtypes.float4_e2m1fn)
    path = tmp_path / "f4.safetensors"
    ours_np.save_file({"q": values}, path)
    assert np.array_equal(ours_np.load_file(path)["q"].astype(np.float32), values.astype(np.float32))
    packed = ours_pt.load_file(path)["q"]  # torch view: two values per byte, first in the low nibble
    assert packed.dtype == torch.float4_e2m1fn_x2 and tuple(packed.shape) == (2, 2)
    assert packed.view(torch.uint8).tolist() == [[0x21, 0x6A], [0x87, 0xF0]]
    with safetensors.safe_open(str(path), "pt") as f:
        assert torch.equal(f.get_tensor("q").view(torch.uint8), packed.view(torch.uint8))


names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12).filter(lambda s: s != "__metadata__")
shapes = st.lists(st.integers(0, 4), max_size=3)
dtypes = st.sampled_from(sorted(ALL_DTYPES_NP))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(names, st.tuples(dtypes, shapes), max_size=6),
    st.one_of(st.none(), st.dictionaries(names, st.text(max_size=8), max_size=1)),
    st.integers(0, 2**32 - 1),
)
def test_random_dicts_byte_identical_to_peer(spec, metadata, seed) -> None:
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, (dtype_name, shape) in spec.items():
        dtype = np.dtype(ALL_DTYPES_NP[dtype_name])
        raw = rng.integers(0, 256, size=int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
        arrays[name] = (raw & 1).astype(np.bool_).reshape(shape) if dtype == np.bool_ else raw.view(dtype).reshape(shape)
    blob = ours_np.save(arrays, metadata=metadata)
    if not arrays and metadata == {}:
        # safetensors 0.8 writes '{},"__metadata__":{}}' here, which no one (itself included) can read
        with pytest.raises(safetensors.SafetensorError):
            safetensors.deserialize(peer_np.save(arrays, metadata=metadata))
        assert ours_np.load(blob) == {}
        return
    assert blob == peer_np.save(arrays, metadata=metadata)
    back = peer_np.load(blob)
    assert back.keys() == arrays.keys()
    for k, v in arrays.items():
        assert np.array_equal(back[k].reshape(-1).view(np.uint8), v.reshape(-1).view(np.uint8))


@pytest.mark.parametrize("framework", ["np", "pt"])
def test_peer_reads_multi_key_metadata_we_sort(tmp_path, framework: str) -> None:
    path = tmp_path / "m.safetensors"
    ours_np.save_file({"x": np.zeros(2, np.float32)}, path, metadata={"z": "1", "a": "2", "m": "3"})
    assert b'{"__metadata__":{"a":"2","m":"3","z":"1"}' in path.read_bytes()
    with safetensors.safe_open(str(path), framework) as f:
        assert f.metadata() == {"z": "1", "a": "2", "m": "3"}
