"""torch adapter: save_model/load_model with tied tensors against safetensors, shared refusal."""

from __future__ import annotations

import pytest
import safetensors.torch as peer
import torch
from torch import nn

from torchship.weights import SafetensorError, safe_open
from torchship.weights import torch as ours


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(10, 4)
        self.mid = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight


def test_save_model_matches_safetensors_bytes_and_metadata(tmp_path) -> None:
    model = Tied()
    a, b = tmp_path / "ours.safetensors", tmp_path / "peer.safetensors"
    ours.save_model(model, a, metadata={"format": "pt"})
    peer.save_model(model, str(b), metadata={"format": "pt"})
    with safe_open(a, "pt") as f, safe_open(b, "pt") as g:
        assert f.keys() == g.keys() == ["embed.weight", "mid.bias", "mid.weight"]
        assert f.metadata() == g.metadata() == {"format": "pt", "head.weight": "embed.weight"}
        for k in f.keys():  # noqa: SIM118 - safe_open, not a dict
            assert torch.equal(f.get_tensor(k), g.get_tensor(k))


@pytest.mark.parametrize("saver", ["ours", "peer"])
def test_load_model_reports_keys_like_safetensors(tmp_path, saver: str) -> None:
    path = tmp_path / "m.safetensors"
    (ours.save_model if saver == "ours" else peer.save_model)(Tied(), str(path))
    fresh = Tied()
    for p in fresh.parameters():
        p.data.zero_()
    assert ours.load_model(fresh, path) == ([], [])
    assert torch.equal(fresh.head.weight, Tied().embed.weight)
    assert fresh.head.weight.data_ptr() == fresh.embed.weight.data_ptr()  # still tied

    class Other(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.extra = nn.Linear(4, 2)

    other = Other()
    mine = ours.load_model(other, path, strict=False)
    theirs = peer.load_model(Other(), str(path), strict=False)
    assert sorted(mine[0]) == sorted(theirs[0]) and sorted(mine[1]) == sorted(theirs[1])
    with pytest.raises(RuntimeError, match="missing keys"):
        ours.load_model(Other(), path)


def test_save_file_refuses_shared_tensors_like_safetensors(tmp_path) -> None:
    w = torch.zeros(4, 4)
    shared = {"a": w, "b": w[0]}
    with pytest.raises(RuntimeError, match="share memory"):
        ours.save_file(shared, tmp_path / "x.safetensors")
    with pytest.raises(RuntimeError):
        peer.save_file(shared, str(tmp_path / "y.safetensors"))
    # disjoint views of one storage are not shared
    disjoint = {"lo": w[:2], "hi": w[2:]}
    assert ours.find_shared_tensors(disjoint) == [{"hi"}, {"lo"}]
    assert ours.load(ours.save(disjoint))["hi"].shape == (2, 4)
    assert not (tmp_path / "x.safetensors").exists()


def test_non_contiguous_and_conj_tensors_saved_by_value() -> None:
    base = torch.arange(12.0).reshape(3, 4)
    c = torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64)
    cases = {"t": base.t(), "step": torch.arange(10)[::3], "conj": c.conj(), "grad": torch.ones(2, requires_grad=True)}
    loaded = ours.load(ours.save(cases))
    for k, v in cases.items():
        assert torch.equal(loaded[k], v.detach().resolve_conj()), k


def test_bad_inputs() -> None:
    with pytest.raises(SafetensorError, match="expected a torch.Tensor"):
        ours.save({"x": [1, 2]})
    with pytest.raises(SafetensorError, match="to_dense"):
        ours.save({"x": torch.eye(2).to_sparse()})
    with pytest.raises(SafetensorError, match="meta tensor"):
        ours.save({"x": torch.empty(2, device="meta")})
    with pytest.raises(SafetensorError, match="invalid device"):
        ours.load(ours.save({"x": torch.ones(1)}), device="nonsense")


def test_load_file_device_and_get_tensor(tmp_path) -> None:
    path = tmp_path / "d.safetensors"
    ours.save_file({"x": torch.arange(6).reshape(2, 3)}, path)
    assert ours.load_file(path, device="cpu")["x"].device.type == "cpu"
    with safe_open(path, framework="pt", device="cpu") as f:
        assert f.get_tensor("x").sum().item() == 15


def test_adapter_modules_export_the_same_names_as_safetensors() -> None:
    # code written for safetensors.torch / safetensors.numpy uses e.g. ``st.safe_open``
    import safetensors.numpy as peer_np

    from torchship.weights import numpy as ours_np

    for theirs, mine in ((peer, ours), (peer_np, ours_np)):
        public = {"safe_open", "save", "save_file", "load", "load_file", "save_model", "load_model"}
        expected = {n for n in public if hasattr(theirs, n)}
        assert expected <= set(dir(mine)), expected - set(dir(mine))
    assert ours.safe_open is safe_open and ours_np.safe_open is safe_open


def test_cuda_without_cuda_is_a_clear_error_up_front(tmp_path, monkeypatch) -> None:
    # used to fail only at get_tensor(), with torch's own AssertionError
    path = tmp_path / "w.safetensors"
    ours.save_file({"w": torch.ones(2)}, path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for call in (lambda: safe_open(path, "pt", device="cuda"), lambda: ours.load_file(path, device=0),
                 lambda: ours.load(path.read_bytes(), device="cuda:0")):
        with pytest.raises(SafetensorError, match="CUDA is not available"):
            call()
    with pytest.raises(SafetensorError, match=r"w\.safetensors: device 'cuda'"):
        safe_open(path, "pt", device="cuda")
    assert torch.equal(ours.load_file(path, device="cpu")["w"], torch.ones(2))
