"""Files from the wild, side by side with safetensors 0.8: what each accepts and refuses.

Hand-built blobs probe the strictness rules (header padding, tensors listed out of offset
order, gaps, overlaps, trailing bytes, metadata shapes, the 100 MB header limit). Where the
peer accepts a file we must return the same tensors and metadata; where it refuses, we refuse
with a SafetensorError naming the file and the rule. The one deliberate difference (duplicate
keys, docs/format.md) is asserted as such. Sharded checkpoints are laid out as transformers
writes them and compared with loading each shard through the peer.
"""

from __future__ import annotations

import json
import struct

import pytest
import torch

from tests.weights._util import raw_blob, tensor
from torchship.weights import SafetensorError
from torchship.weights import torch as ours
from torchship.weights.format import MAX_HEADER_SIZE

peer = pytest.importorskip("safetensors.torch", reason="safetensors is the oracle (pip install '.[dev]')")
from safetensors import SafetensorError as PeerError  # noqa: E402
from safetensors import safe_open as peer_open  # noqa: E402

D8 = bytes(range(8))
A = tensor("U8", [4], 0, 4)
B = tensor("U8", [4], 4, 8)
RAW = json.dumps({"a": A, "b": B}).encode()
EMPTY = "F32", [0]

CASES = {
    # accepted by both
    "normal": raw_blob({"a": A, "b": B}, D8),
    "listed-out-of-offset-order": raw_blob({"b": B, "a": A}, D8),
    "names-swapped-on-offsets": raw_blob({"a": B, "b": A}, D8),
    "padded-with-trailing-spaces": raw_blob(RAW + b" " * 5, D8),
    "padded-with-leading-spaces": raw_blob(b"   " + RAW, D8),
    "padded-with-newline-and-tab": raw_blob(RAW + b"\n\t", D8),
    "header-not-8-aligned": raw_blob(RAW, D8),
    "metadata-null": raw_blob({"__metadata__": None, "a": A, "b": B}, D8),
    "metadata-empty": raw_blob({"__metadata__": {}, "a": A, "b": B}, D8),
    "extra-entry-field": raw_blob({"a": dict(A, extra=1), "b": B}, D8),
    "empty-header": raw_blob({}, b""),
    "zero-size-tensor-between": raw_blob({"a": A, "e": tensor(*EMPTY, 4, 4), "b": B}, D8),
    "zero-size-tensor-at-end": raw_blob({"a": A, "b": B, "e": tensor(*EMPTY, 8, 8)}, D8),
    "zero-size-tensor-at-start": raw_blob({"e": tensor(*EMPTY, 0, 0), "a": A, "b": B}, D8),
    "misaligned-f32": raw_blob({"a": tensor("U8", [1], 0, 1), "f": tensor("F32", [1], 1, 5)}, D8[:5]),
    # refused by both
    "gap-between": raw_blob({"a": A, "b": tensor("U8", [2], 6, 8)}, D8),
    "gap-at-start": raw_blob({"b": B}, D8),
    "overlap": raw_blob({"a": A, "b": tensor("U8", [4], 2, 6)}, D8[:6]),
    "same-offsets": raw_blob({"a": A, "b": A}, D8[:4]),
    "zero-size-far-away": raw_blob({"a": A, "b": B, "e": tensor(*EMPTY, 100, 100)}, D8),
    "trailing-bytes": raw_blob({"a": A}, D8),
    "truncated-data": raw_blob({"a": A, "b": B}, D8[:6]),
    "padded-with-nul": raw_blob(RAW + b"\x00\x00", D8),
    "utf8-bom": raw_blob(b"\xef\xbb\xbf" + RAW, D8),
    "metadata-nested": raw_blob({"__metadata__": {"x": {"y": "z"}}, "a": A, "b": B}, D8),
    "metadata-int-value": raw_blob({"__metadata__": {"x": 1}, "a": A, "b": B}, D8),
    "metadata-list": raw_blob({"__metadata__": ["x"], "a": A, "b": B}, D8),
    "lowercase-dtype": raw_blob({"a": dict(A, dtype="u8"), "b": B}, D8),
    "float-shape": raw_blob(RAW.replace(b"[4]", b"[4.0]", 1), D8),
    "float-offset": raw_blob(RAW.replace(b"[0, 4]", b"[0.0, 4]", 1), D8),
    "negative-dim": raw_blob({"a": dict(A, shape=[-4]), "b": B}, D8),
    "wrong-byte-count": raw_blob({"a": tensor("F32", [2], 0, 4), "b": B}, D8),
    "zero-length-header": raw_blob(b"", b""),
    "header-is-a-list": raw_blob(b"[]", b""),
    "header-length-past-end": struct.pack("<Q", 100) + b"{}",
    "header-length-over-limit": struct.pack("<Q", MAX_HEADER_SIZE + 1) + b"{}",
    "shorter-than-8-bytes": b"\x02\x00\x00",
    "negative-zero-dim": raw_blob(b'{"z":{"dtype":"U8","shape":[-0],"data_offsets":[0,0]},'
                                  b'"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}', D8),
    "exponent-dim": raw_blob(RAW.replace(b"[4]", b"[4e0]", 1), D8),
    "dim-past-u64": raw_blob(RAW.replace(b"[4]", b"[18446744073709551616]", 1), D8),
    "numel-overflow": raw_blob({"a": tensor("U8", [2**32, 2**32], 0, 8)}, D8),
    "three-offsets": raw_blob({"a": dict(A, data_offsets=[0, 4, 4]), "b": B}, D8),
    "null-dtype": raw_blob({"a": dict(A, dtype=None), "b": B}, D8),
    "missing-shape": raw_blob({"a": {"dtype": "U8", "data_offsets": [0, 4]}, "b": B}, D8),
    "lone-surrogate-name": raw_blob(b'{"\\ud800":' + json.dumps(A).encode() + b',"b":' + json.dumps(B).encode() + b"}", D8),
    "nan-metadata": raw_blob(b'{"__metadata__":{"k":NaN},"a":' + json.dumps(A).encode() + b',"b":'
                             + json.dumps(B).encode() + b"}", D8),
    "trailing-comma": raw_blob(RAW[:-1] + b",}", D8),
    "f4-odd-count": raw_blob({"a": tensor("F4", [3], 0, 2)}, D8[:2]),
}
DIFFERENT_ON_PURPOSE = {
    # the peer keeps the last duplicate silently; we refuse (a parser differential)
    "duplicate-key": raw_blob(b'{"a":' + json.dumps(A).encode() + b',"a":' + json.dumps(A).encode()
                              + b',"b":' + json.dumps(B).encode() + b"}", D8),
}


def _peer_read(path):
    with peer_open(str(path), "pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def _our_read(path):
    with ours.safe_open(path, "pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


@pytest.mark.parametrize("name", sorted(CASES))
def test_accepts_and_refuses_what_the_peer_does(tmp_path, name: str) -> None:
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(CASES[name])
    try:
        expected = _peer_read(path)
    except PeerError:
        for read in (lambda: _our_read(path), lambda: ours.load(CASES[name])):
            with pytest.raises(SafetensorError) as info:
                read()
        assert "<bytes>" in str(info.value)
        with pytest.raises(SafetensorError, match=name):
            _our_read(path)
        return
    for meta, tensors in (_our_read(path), (_peer_read(path)[0], ours.load(CASES[name]))):
        assert meta == expected[0]
        assert sorted(tensors) == sorted(expected[1])
        assert all(torch.equal(tensors[k], expected[1][k]) for k in tensors)


@pytest.mark.parametrize("name", sorted(DIFFERENT_ON_PURPOSE))
def test_deliberate_differences(tmp_path, name: str) -> None:
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(DIFFERENT_ON_PURPOSE[name])
    _peer_read(path)
    with pytest.raises(SafetensorError, match="duplicate key 'a'"):
        _our_read(path)


def test_header_at_the_100mb_limit(tmp_path) -> None:
    """A header of exactly MAX_HEADER_SIZE bytes (space padded) is read by both; one byte more
    is refused by both before the JSON is parsed."""
    body = json.dumps({"__metadata__": {"k": "v"}, "a": A, "b": B}).encode()
    header = body + b" " * (MAX_HEADER_SIZE - len(body))
    path = tmp_path / "limit.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + D8)
    meta, tensors = _our_read(path)
    assert (meta, sorted(tensors)) == (_peer_read(path)[0], ["a", "b"])
    over = tmp_path / "over.safetensors"
    over.write_bytes(struct.pack("<Q", len(header) + 1) + header + b" " + D8)
    with pytest.raises(PeerError):
        _peer_read(over)
    with pytest.raises(SafetensorError, match="exceeds the limit of 100000000 bytes"):
        _our_read(over)


# ------------------------------------------------------------------------------ shards

def _hf_checkpoint(directory, extra_index_metadata: dict | None = None) -> dict[str, torch.Tensor]:
    """Shards and index as transformers' save_pretrained writes them, through the peer."""
    torch.manual_seed(0)
    shards = [{"model.embed.weight": torch.randn(6, 4), "model.norm.weight": torch.ones(4)},
              {"model.layers.0.w": torch.randn(4, 4).to(torch.bfloat16), "lm_head.weight": torch.randn(6, 4)}]
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        peer.save_file(shard, str(directory / name), metadata={"format": "pt"})
        for key, t in shard.items():
            weight_map[key] = name
            total += t.nbytes
    index = {"metadata": {"total_size": total, **(extra_index_metadata or {})}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return {k: v for shard in shards for k, v in shard.items()}


@pytest.mark.parametrize("extra", [None, {"total_parameters": 64}], ids=["plain", "extra-metadata"])
def test_hf_sharded_checkpoint_loads_like_the_shards(tmp_path, extra) -> None:
    expected = _hf_checkpoint(tmp_path, extra)
    for target in (tmp_path, tmp_path / "model.safetensors.index.json"):
        got = ours.load_file(target)
        assert sorted(got) == sorted(expected)
        assert all(torch.equal(got[k], expected[k]) and got[k].dtype == expected[k].dtype for k in got)
    merged = {}
    for shard in sorted(tmp_path.glob("model-*.safetensors")):
        merged.update(peer.load_file(str(shard)))
    assert all(torch.equal(merged[k], expected[k]) for k in merged)


def test_hf_index_naming_a_missing_shard(tmp_path) -> None:
    _hf_checkpoint(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors") as info:
        ours.load_file(tmp_path)
    assert isinstance(info.value, SafetensorError)


def test_saving_into_a_missing_directory_names_the_destination(tmp_path) -> None:
    target = tmp_path / "no" / "such" / "w.safetensors"
    with pytest.raises(PeerError):
        peer.save_file({"x": torch.ones(1)}, str(target))
    with pytest.raises(FileNotFoundError) as info:
        ours.save_file({"x": torch.ones(1)}, target)
    assert info.value.filename == str(target)  # not our hidden temp file's name


def test_zero_size_dim_past_int64_is_a_clear_error(tmp_path) -> None:
    """A u64 dim times 0 is a valid header for both; torch cannot build the tensor (the peer
    fails with torch's TypeError), we fail with a SafetensorError naming tensor and file."""
    blob = raw_blob({"e": tensor("U8", [2**64 - 1, 0], 0, 0), "a": tensor("U8", [8], 0, 8)}, D8)
    path = tmp_path / "huge.safetensors"
    path.write_bytes(blob)
    with pytest.raises(TypeError):
        peer.load(blob)
    with pytest.raises(SafetensorError, match="<bytes>: tensor 'e': shape .* cannot be a torch tensor"):
        ours.load(blob)
    for framework in ("pt", "np"):
        with ours.safe_open(path, framework) as f:
            assert f.get_tensor("a").tolist() == list(D8)
            with pytest.raises(SafetensorError, match="huge.safetensors: tensor 'e': shape"):
                f.get_tensor("e")


def test_zero_size_tensors_sharing_an_offset_keep_one_order(tmp_path) -> None:
    """offset_keys() in data order as the peer's, ties broken by name (the peer breaks them in
    hash-map order); load(bytes) and load_file return their dicts in that same order (the
    peer's load order is hash-map order)."""
    blob = raw_blob({"z": tensor(*EMPTY, 0, 0), "y": tensor(*EMPTY, 0, 0), "a": A, "b": B,
                     "m": tensor(*EMPTY, 4, 4)}, D8)
    path = tmp_path / "ties.safetensors"
    path.write_bytes(blob)
    spans = {"y": (0, 0), "z": (0, 0), "a": (0, 4), "m": (4, 4), "b": (4, 8)}
    with peer_open(str(path), "pt") as g:
        theirs = g.offset_keys()
    with ours.safe_open(path, "pt") as f:
        expected = f.offset_keys()
    assert expected == ["y", "z", "a", "m", "b"]
    assert [spans[k] for k in theirs] == [spans[k] for k in expected]
    assert list(ours.load(blob)) == list(ours.load_file(path)) == expected
