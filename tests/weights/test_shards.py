"""Sharded checkpoints: the transformers layout, transparent loading, index validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from torchship.weights import SafetensorError
from torchship.weights import numpy as ours_np
from torchship.weights import torch as ours_pt
from torchship.weights.shards import parse_size, plan_shards
from torchship.weights.writer import Entry


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {f"layer.{i}.weight": torch.randn(16, 16) for i in range(5)} | {"bias": torch.randn(16), "big": torch.randn(64, 64)}


def test_sharded_layout_and_roundtrip(tmp_path) -> None:
    state = _state()
    names = ours_pt.save_sharded(state, tmp_path, max_shard_size=2500, metadata={"format": "pt"})
    n = len(names)
    assert n > 2 and names == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(state)
    assert set(index["weight_map"].values()) == set(names)
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in state.values())
    for name in names:  # each shard respects the limit unless it holds a single bigger tensor
        loaded = ours_pt.load_file(tmp_path / name)
        assert sum(t.nbytes for t in loaded.values()) <= 2500 or len(loaded) == 1
    for source in (tmp_path, tmp_path / "model.safetensors.index.json"):
        back = ours_pt.load_file(source)
        assert back.keys() == state.keys()
        assert all(torch.equal(back[k], v) for k, v in state.items())
    back_np = ours_np.load_file(tmp_path)
    assert all(np.array_equal(back_np[k], v.numpy()) for k, v in state.items())


def test_transformers_reads_our_index(tmp_path) -> None:
    from transformers.utils.hub import get_checkpoint_shard_files

    ours_pt.save_sharded(_state(), tmp_path, max_shard_size=3000)
    files, meta = get_checkpoint_shard_files(str(tmp_path), str(tmp_path / "model.safetensors.index.json"))
    assert sorted(f.rsplit("/", 1)[-1] for f in files) == sorted(p.name for p in tmp_path.glob("model-*.safetensors"))


def test_single_shard_is_plain_model_file(tmp_path) -> None:
    names = ours_np.save_sharded({"x": np.zeros(4, np.float32)}, tmp_path, "1MB")
    assert names == ["model.safetensors"]
    assert not (tmp_path / "model.safetensors.index.json").exists()
    assert ours_np.load_file(tmp_path)["x"].shape == (4,)


def test_plan_shards_and_sizes() -> None:
    entries = {"a": Entry("U8", (6,), b""), "b": Entry("U8", (3,), b""), "c": Entry("U8", (20,), b""), "d": Entry("U8", (1,), b"")}
    assert plan_shards(entries, 10) == [["a", "b"], ["c"], ["d"]]  # in layout order, like transformers
    assert parse_size("5GB") == 5 * 10**9 and parse_size("1.5KiB") == 1536 and parse_size(" 7 ") == 7
    for bad in ("-1", "5XB", 0, "GB"):
        with pytest.raises(SafetensorError, match="shard size"):
            parse_size(bad)


def test_index_problems_are_reported(tmp_path) -> None:
    ours_pt.save_sharded(_state(), tmp_path, max_shard_size=3000)
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())

    def write(mutated: dict) -> None:
        index_path.write_text(json.dumps(mutated))

    write({**index, "weight_map": {**index["weight_map"], "layer.0.weight": "../evil.safetensors"}})
    with pytest.raises(SafetensorError, match="not a file name in the index's directory"):
        ours_pt.load_file(tmp_path)
    write({**index, "weight_map": {**index["weight_map"], "ghost": "model-00099-of-00099.safetensors"}})
    with pytest.raises(SafetensorError, match="does not exist"):
        ours_pt.load_file(tmp_path)
    wm = dict(index["weight_map"])
    crowded = next(k for k, f in wm.items() if list(wm.values()).count(f) > 1)
    wm.pop(crowded)  # its shard still holds it: the index no longer matches
    write({**index, "weight_map": wm})
    with pytest.raises(SafetensorError, match="does not match the index"):
        ours_pt.load_file(tmp_path)
    index_path.write_text("{not json")
    with pytest.raises(SafetensorError, match="cannot read shard index"):
        ours_np.load_file(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SafetensorError, match="neither"):
        ours_np.load_file(tmp_path / "empty")


def test_transformers_from_pretrained_loads_our_shards(tmp_path) -> None:
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    torch.manual_seed(0)
    model = BertModel(config).eval()
    config.save_pretrained(tmp_path)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    names = ours_pt.save_sharded(state, tmp_path, max_shard_size=20_000, metadata={"format": "pt"})
    assert len(names) > 2
    loaded = BertModel.from_pretrained(tmp_path).eval()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k
    ids = torch.tensor([[1, 5, 7, 2]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).last_hidden_state, model(ids).last_hidden_state)


def test_resaving_a_directory_drops_the_earlier_checkpoint(tmp_path) -> None:
    # a stale index from a sharded save used to win over a later single-file save of other data
    old = {f"t{i}": np.full(100, i, np.float32) for i in range(4)}
    assert len(ours_np.save_sharded(old, tmp_path, 500)) == 4
    (tmp_path / "notes.txt").write_text("keep me")
    new = {"x": np.arange(3, dtype=np.int16)}
    assert ours_np.save_sharded(new, tmp_path, "1MB") == ["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "notes.txt"]
    assert ours_np.load_file(tmp_path).keys() == {"x"}
    names = ours_np.save_sharded(old, tmp_path, 900)  # 2 shards: the single file and old shards go
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names, "model.safetensors.index.json", "notes.txt"])
    back = ours_np.load_file(tmp_path)
    assert back.keys() == old.keys() and all(np.array_equal(back[k], v) for k, v in old.items())


def test_a_diffusers_root_names_its_subfolders(tmp_path) -> None:
    for sub in ("unet", "vae"):
        (tmp_path / sub).mkdir()
        ours_pt.save_file({"w": torch.ones(2)}, tmp_path / sub / "diffusion_pytorch_model.safetensors")
    with pytest.raises(SafetensorError, match=r"subfolders that do: unet, vae; pass one"):
        ours_pt.load_file(tmp_path)
    assert torch.equal(ours_pt.load_file(tmp_path / "vae")["w"], torch.ones(2))
