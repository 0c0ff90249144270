"""``torchship weights inspect|verify`` through the real CLI entry point."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from tests.weights._util import minilm_path
from torchship.cli import main
from torchship.weights import numpy as ours_np
from torchship.weights.reader import PROGRAM_MAGIC


@pytest.fixture()
def good(tmp_path):
    path = tmp_path / "good.safetensors"
    ours_np.save_file({"w": np.ones((2, 3), np.float32), "ids": np.arange(4, dtype=np.int64)}, path, {"format": "np"})
    return path


def test_inspect_table(good, capsys) -> None:
    assert main(["weights", "inspect", str(good)]) == 0
    out = capsys.readouterr().out
    for fragment in ("ids", "I64", "[4]", "w", "F32", "[2, 3]", "24", "format", "2 tensors"):
        assert fragment in out, fragment


def test_inspect_json_matches_header(good, capsys) -> None:
    assert main(["weights", "inspect", "--json", str(good)]) == 0
    data = json.loads(capsys.readouterr().out)
    entry = data[str(good)]
    assert entry["metadata"] == {"format": "np"}
    assert entry["tensors"]["ids"] == {"dtype": "I64", "shape": [4], "data_offsets": [0, 32]}
    assert entry["tensors"]["w"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [32, 56]}


def test_verify_exit_codes(good, tmp_path, capsys) -> None:
    assert main(["weights", "verify", str(good)]) == 0
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good.read_bytes() + b"\0")  # trailing byte
    assert main(["weights", "verify", str(bad)]) == 1
    assert main(["weights", "verify", str(good), str(bad)]) == 1
    assert main(["weights", "verify", str(tmp_path / "missing")]) == 1
    out = capsys.readouterr().out
    assert "trailing bytes" in out and "no such file" in out
    assert main(["weights", "inspect", str(bad)]) == 1


def test_verify_sharded_directory(tmp_path) -> None:
    ours_np.save_sharded({f"t{i}": np.full(100, i, np.float32) for i in range(4)}, tmp_path, 500)
    assert main(["weights", "verify", str(tmp_path)]) == 0
    shard = sorted(tmp_path.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-1])
    assert main(["weights", "verify", str(tmp_path)]) == 1


def test_program_file_inspect_and_verify(tmp_path, capsys) -> None:
    blob = ours_np.save({"layer.weight": np.eye(3, dtype=np.float32)})
    path = tmp_path / "prog.tsp"
    path.write_bytes(PROGRAM_MAGIC + struct.pack("<Q", 32) + b"\x00" * 16 + blob)
    assert main(["weights", "verify", str(path)]) == 0
    assert main(["weights", "inspect", str(path)]) == 0
    assert "layer.weight" in capsys.readouterr().out


def test_verify_real_minilm() -> None:
    assert main(["weights", "verify", str(minilm_path())]) == 0


def test_verify_plain_directory_checks_every_file(tmp_path, capsys) -> None:
    for i in range(3):
        ours_np.save_file({"x": np.full(3, i, np.int8)}, tmp_path / f"f{i}.safetensors")
    assert main(["weights", "verify", str(tmp_path)]) == 0
    assert "3 file(s)" in capsys.readouterr().out
    (tmp_path / "f1.safetensors").write_bytes(b"\x00" * 7)
    assert main(["weights", "verify", str(tmp_path)]) == 1
    assert "f1.safetensors" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["weights", "verify", str(empty)]) == 1


def test_names_that_look_like_rich_markup_are_printed_not_parsed(tmp_path, capsys) -> None:
    # tensor names and metadata come from the file: "[/]" once crashed rich with MarkupError
    path = tmp_path / "markup.safetensors"
    ours_np.save_file({"[/]w": np.ones(2, np.float32), "[bold]b": np.zeros(1, np.int8)}, path, {"[/]k": "[red]v"})
    assert main(["weights", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    for fragment in ("[/]w", "[bold]b", "[/]k", "[red]v"):
        assert fragment in out, fragment
    bad = tmp_path / "bad[b].safetensors"
    header = json.dumps({"[/]x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}).encode()
    bad.write_bytes(struct.pack("<Q", len(header)) + header + bytes(4))
    assert main(["weights", "verify", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "'[/]x'" in out and "bad[b].safetensors" in out
    assert main(["weights", "inspect", str(bad)]) == 1
    assert "'[/]x'" in capsys.readouterr().out


def test_pickle_checkpoint_gets_a_hint_to_convert(tmp_path, capsys) -> None:
    import pickle

    import torch

    zipped = tmp_path / "sd.pt"
    torch.save({"w": torch.ones(2)}, zipped)
    bare = tmp_path / "d.pkl"
    bare.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    for path in (zipped, bare):
        assert main(["weights", "verify", str(path)]) == 1
        assert "torchship weights convert" in capsys.readouterr().out
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"\x01" * 16)
    assert main(["weights", "verify", str(garbage)]) == 1
    assert "convert" not in capsys.readouterr().out


def test_inspect_directory_of_plain_files(tmp_path, capsys) -> None:
    # inspect accepts what verify accepts: a folder of independent .safetensors files
    ours_np.save_file({"a": np.zeros(3, np.int8)}, tmp_path / "adapter.safetensors")
    ours_np.save_file({"b": np.zeros(2, np.float32)}, tmp_path / "model.safetensors")
    assert main(["weights", "inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 tensors, 11 B in 2 file(s)" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["weights", "inspect", str(empty)]) == 1
    assert "no .safetensors file" in capsys.readouterr().out
