"""safe_open: zero-copy CoW views, slicing against eager indexing, program files, errors."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from torchship.weights import SafetensorError, safe_open
from torchship.weights import numpy as ours_np
from torchship.weights import torch as ours_pt
from torchship.weights.reader import PROGRAM_MAGIC, SliceError

ARR = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)

SLICES = [
    1, -1, -3, (slice(None), 2), (Ellipsis, 1), (slice(0, 3, 2),), slice(1, 100), slice(2, 1),
    (slice(None), slice(-2, None)), (1, Ellipsis, slice(1, 4, 2)), (Ellipsis,), (), (-1, -1, -1),
    (slice(None, None, 3), slice(-10, 10)), (Ellipsis, slice(None), slice(None), slice(None)),
]


@pytest.fixture()
def arr_file(tmp_path):
    path = tmp_path / "a.safetensors"
    ours_np.save_file({"a": ARR, "s": np.array(7, np.int64), "z": np.zeros((0, 4), np.float16)}, path)
    return path


@pytest.mark.parametrize("framework", ["np", "pt"])
@pytest.mark.parametrize("index", SLICES, ids=[repr(s) for s in SLICES])
def test_slices_match_eager_indexing(arr_file, framework: str, index) -> None:
    with safe_open(arr_file, framework=framework) as f:
        got = f.get_slice("a")[index]
    expected = ARR[index]
    got_np = got if framework == "np" else got.numpy()
    assert got_np.shape == expected.shape
    assert np.array_equal(got_np, expected)
    if framework == "pt":
        assert torch.equal(got, torch.from_numpy(ARR)[index])


@pytest.mark.parametrize(
    ("index", "fragment"),
    [
        (3, "out of bounds for dimension 0 of size 3"),
        (-4, "out of bounds"),
        ((0, 0, 0, 0), "4 indices for a tensor with 3 dimensions"),
        ((Ellipsis, Ellipsis), "only one ellipsis"),
        (slice(None, None, -1), "step must be a positive integer"),
        (slice(None, None, 0), "step must be a positive integer"),
        ((None,), "unsupported index None"),
        ("x", "unsupported index 'x'"),
        (slice(0.5, 2), "slice bounds must be integers"),
        (True, "unsupported index True"),
        (np.array([0, 1]), "unsupported index array"),  # was numpy's "truth value is ambiguous"
        ((slice(0, 1), np.array([1, 2])), "unsupported index array"),
        ((torch.tensor([0, 1]), Ellipsis), "unsupported index tensor"),
    ],
)
def test_bad_slices_raise_clear_errors(arr_file, index, fragment: str) -> None:
    with safe_open(arr_file, framework="np") as f:
        sl = f.get_slice("a")
        assert sl.get_shape() == [3, 4, 5] and sl.get_dtype() == "F32"
        with pytest.raises(SliceError, match=fragment) as info:
            sl[index]
    assert "tensor 'a'" in str(info.value)
    assert isinstance(info.value, IndexError) and isinstance(info.value, SafetensorError)


def test_scalar_and_empty_slices(arr_file) -> None:
    with safe_open(arr_file, framework="pt") as f:
        assert f.get_slice("s")[...].item() == 7
        assert f.get_slice("s")[()].item() == 7
        assert tuple(f.get_slice("z")[:, 1:3].shape) == (0, 2)
        assert tuple(f.get_tensor("z").shape) == (0, 4)


def test_views_are_zero_copy_and_copy_on_write(arr_file) -> None:
    before = arr_file.read_bytes()
    with safe_open(arr_file, framework="np") as f:
        a = f.get_tensor("a")
        b = f.get_tensor("a")
    assert np.shares_memory(a, b)  # both views of the same mapping: no copy was made
    a[0, 0, 0] = 1234.0  # private mapping: writable, never written back to the file
    assert b[0, 0, 0] == 1234.0
    with safe_open(arr_file, framework="pt") as f:
        t = f.get_tensor("a")
        assert t[0, 0, 0].item() == 0.0
        t += 1
    assert arr_file.read_bytes() == before


def test_saving_over_a_mapped_file_keeps_old_views(arr_file) -> None:
    with safe_open(arr_file, framework="pt") as f:
        old = f.get_tensor("a")
    ours_pt.save_file({"a": torch.full((3, 4, 5), -1.0)}, arr_file)
    assert torch.equal(old, torch.from_numpy(ARR))  # old mapping still sees the old bytes
    assert ours_pt.load_file(arr_file)["a"].eq(-1).all()


def _program_file(path, blob: bytes, pad: int = 24) -> None:
    offset = 16 + pad
    path.write_bytes(PROGRAM_MAGIC + struct.pack("<Q", offset) + b"\xab" * pad + blob)


def test_program_file_embedded_weights(tmp_path) -> None:
    blob = ours_np.save({"w": ARR, "b": np.arange(4, dtype=np.int32)}, metadata={"kind": "program"})
    path = tmp_path / "model.tsp"
    _program_file(path, blob)
    for framework in ("np", "pt"):
        with safe_open(path, framework=framework) as f:
            assert f.keys() == ["b", "w"]
            assert f.metadata() == {"kind": "program"}
            w = f.get_tensor("w")
            assert np.array_equal(w if framework == "np" else w.numpy(), ARR)
    bad = tmp_path / "bad.tsp"
    bad.write_bytes(PROGRAM_MAGIC + struct.pack("<Q", 10_000) + blob)
    with pytest.raises(SafetensorError, match="weights offset 10000 is outside the file"):
        safe_open(bad, framework="np")
    _program_file(bad, blob + b"\0")  # trailing byte after the embedded blob
    with pytest.raises(SafetensorError, match="trailing bytes"):
        safe_open(bad, framework="np")


def test_open_errors(tmp_path, arr_file) -> None:
    with pytest.raises(SafetensorError, match="cannot open"):
        safe_open(tmp_path / "missing.safetensors", framework="np")
    with pytest.raises(SafetensorError, match="framework 'jnp' is not supported"):
        safe_open(arr_file, framework="jnp")
    with pytest.raises(SafetensorError, match="CPU only"):
        safe_open(arr_file, framework="np", device="cuda")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(SafetensorError, match="shorter than the 8-byte"):
        safe_open(empty, framework="np")
    f = safe_open(arr_file, framework="np")
    with pytest.raises(SafetensorError, match="no tensor named 'nope'"):
        f.get_tensor("nope")
    kept = f.get_tensor("a")
    f.close()
    with pytest.raises(SafetensorError, match="closed"):
        f.get_tensor("a")
    assert kept.sum() == ARR.sum()  # tensors outlive the handle


def test_f6_has_no_numpy_or_torch_view(tmp_path) -> None:
    from tests.weights._util import raw_blob, tensor

    path = tmp_path / "f6.safetensors"
    path.write_bytes(raw_blob({"h": tensor("F6_E2M3", [4], 0, 3)}, b"\0\0\0"))
    for framework in ("np", "pt"):
        with safe_open(path, framework=framework) as f:
            assert f.get_slice("h").get_dtype() == "F6_E2M3"
            with pytest.raises(SafetensorError, match="F6_E2M3"):
                f.get_tensor("h")


def test_load_to_device_views_on_cpu_path() -> None:
    """The GPU loader's layout logic (one buffer, aligned views, misaligned copies) on CPU."""
    from tests.weights._util import raw_blob, tensor
    from torchship.weights.format import parse_header

    blob = raw_blob({"b": tensor("U8", [1], 0, 1), "f": tensor("F32", [2], 1, 9)}, b"\x05" + np.array([1.5, -2], np.float32).tobytes())
    header = parse_header(blob)
    got = ours_pt.load_to_device(bytearray(blob), header, header.tensors, torch.device("cpu"))
    assert got["b"].tolist() == [5]
    assert got["f"].tolist() == [1.5, -2.0]  # offset 1 is misaligned for F32: copied, still right


@pytest.mark.parametrize("populate", [True, False])
def test_prefault_keeps_copy_on_write(arr_file, monkeypatch, populate: bool) -> None:
    from torchship.weights import reader

    monkeypatch.setattr(reader, "_populate_ok", populate)  # MADV_POPULATE_READ, or the WILLNEED fallback
    monkeypatch.setattr(reader, "_POPULATE_CHUNK", 64)  # several prefault threads even for a small file
    before = arr_file.read_bytes()
    with safe_open(arr_file, framework="np") as f:
        header = f.header
        reader.prefault(f._live_buf(), header.data_start, header.data_start + header.data_len)
        a = f.get_tensor("a")
    assert np.array_equal(a, ARR)
    a[...] = -1  # pages were populated read-only: the write copies, the file is untouched
    assert arr_file.read_bytes() == before
