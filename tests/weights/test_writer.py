"""The streaming writer: layout, lazy data, atomic replace, and refusal of bad input."""

from __future__ import annotations

import io
import os
import stat

import numpy as np
import pytest

from torchship.weights import SafetensorError
from torchship.weights import numpy as ours_np
from torchship.weights.format import parse_header
from torchship.weights.writer import Entry, save_entries, write_entries


def test_lazy_callables_called_once_in_layout_order(tmp_path) -> None:
    calls: list[str] = []

    def make(name: str, arr: np.ndarray):
        def produce() -> np.ndarray:
            calls.append(name)
            return arr

        return produce

    arrays = {"small": np.arange(3, dtype=np.uint8), "big": np.arange(4, dtype=np.float64), "mid": np.arange(2, dtype=np.float32)}
    entries = {k: Entry(ours_np.to_entries({k: v})[k].dtype, v.shape, make(k, v)) for k, v in arrays.items()}
    path = tmp_path / "lazy.safetensors"
    save_entries(entries, path)
    assert calls == ["big", "mid", "small"]  # F64, F32, U8: alignment descending
    loaded = ours_np.load_file(path)
    for k, v in arrays.items():
        assert np.array_equal(loaded[k], v)


def test_write_entries_at_file_position_returns_size() -> None:
    buf = io.BytesIO()
    buf.write(b"PREFIX..")
    n = write_entries(buf, {"x": Entry("I32", (2,), np.array([7, -1], np.int32))}, {"k": "v"})
    blob = buf.getvalue()
    assert n == len(blob) - 8
    header = parse_header(blob, base=8)
    assert np.frombuffer(blob, np.int32, 2, header.data_start).tolist() == [7, -1]


def test_accepts_bytes_memoryview_and_arrays() -> None:
    entries = {
        "b": Entry("U8", (2,), b"\x01\x02"),
        "m": Entry("U16", (2,), memoryview(np.array([3, 4], np.uint16))),
        "a": Entry("F32", (1, 1), np.array([[2.5]], np.float32)),
        "fn": Entry("I8", (1,), lambda: bytearray(b"\xff")),
    }
    loaded = ours_np.load(_blob(entries))
    assert loaded["b"].tolist() == [1, 2] and loaded["m"].tolist() == [3, 4]
    assert loaded["a"].tolist() == [[2.5]] and loaded["fn"].tolist() == [-1]


def _blob(entries, metadata=None) -> bytes:
    buf = io.BytesIO()
    write_entries(buf, entries, metadata)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("entries", "metadata", "fragment"),
    [
        ({"__metadata__": Entry("U8", (1,), b"x")}, None, "reserved"),
        ({"x": Entry("U8", (2,), b"x")}, None, "tensor 'x': data holds 1 bytes but its dtype and shape need 2"),
        ({"x": Entry("u8", (1,), b"x")}, None, "unknown dtype 'u8'"),
        ({"x": Entry("F4", (3,), b"xx")}, None, "not a whole number of bytes"),
        ({"x": Entry("U8", (-1,), b"")}, None, "non-negative"),
        ({"x": Entry("U8", (1,), 42)}, None, "not bytes-like"),
        ({"x": Entry("U8", (2,), memoryview(b"abcd")[::2])}, None, "not C-contiguous"),
        ({}, {"k": 1}, "metadata must map str to str"),
        ({}, ["k"], "metadata must be a mapping"),
        ({1: Entry("U8", (1,), b"x")}, None, "must be a str"),
        ({"\ud800": Entry("U8", (1,), b"x")}, None, "surrogate"),
    ],
    ids=["reserved-name", "short-data", "bad-dtype", "sub-byte", "neg-dim", "not-bytes", "strided", "meta-value", "meta-type", "int-name", "surrogate"],
)
def test_bad_input_refused_and_nothing_written(tmp_path, entries, metadata, fragment: str) -> None:
    path = tmp_path / "out.safetensors"
    path.write_bytes(b"previous")
    with pytest.raises(SafetensorError, match=fragment):
        save_entries(entries, path, metadata)
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors"]  # no temp left behind


def test_failure_mid_stream_leaves_no_partial_file(tmp_path) -> None:
    def boom() -> bytes:
        raise RuntimeError("disk on fire")

    path = tmp_path / "m.safetensors"
    ours_np.save_file({"w": np.ones(3, np.float32)}, path)
    before = path.read_bytes()
    entries = {"a": Entry("F64", (1,), np.zeros(1)), "z": Entry("U8", (1,), boom)}
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_entries(entries, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_missing_directory_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        save_entries({}, tmp_path / "nope" / "x.safetensors")


def test_new_file_respects_umask(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        save_entries({}, tmp_path / "p.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "p.safetensors").stat().st_mode) == 0o644


def test_deterministic_bytes_for_many_metadata_keys() -> None:
    meta = {f"k{i}": str(i) for i in range(20)}
    shuffled = dict(reversed(list(meta.items())))
    entries = {"x": Entry("U8", (1,), b"\x00")}
    assert _blob(entries, meta) == _blob(entries, shuffled)


def test_symlink_is_written_through_and_mode_kept(tmp_path) -> None:
    target = tmp_path / "blobs" / "abc123"
    target.parent.mkdir()
    ours_np.save_file({"a": np.zeros(2, np.float32)}, str(target))
    os.chmod(target, 0o640)
    link = tmp_path / "model.safetensors"
    link.symlink_to(target)
    ours_np.save_file({"a": np.arange(3, dtype=np.float32)}, str(link))
    assert link.is_symlink(), "the link must stay a link (as safetensors writes through it)"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    np.testing.assert_array_equal(ours_np.load_file(str(target))["a"], np.arange(3, dtype=np.float32))
    assert [p.name for p in target.parent.iterdir()] == ["abc123"], "no temp file left behind"
