"""``torch.gather`` of a block and ``F.embedding`` in device code, as Helion users write
them, in both modes against torch eager: a row-wise gather of a loaded block (sorted
values read back in their original order, and a block of per-row picks), an embedding lookup
fused with a scale, the refusals along a tile and of a tensor argument, and the GPU form of a
block gather compiled for sm_90 with Triton's own ptxas.

Example:
    pytest -q tests/kernels/test_user_kernels_sweep11_gather.py
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_gpu_source import _code, as_h100, compile_for_sm90  # noqa: F401
from tests.kernels.test_user_kernels_rows import MODES, use


@ts.kernel
def rank_scores(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Per row: each element's score ``levels[rank]``, read back through the sort's indices
    (``gather`` at the inverse permutation)."""
    m, n = x.size()
    ranked = torch.empty_like(x)
    for tm in ts.tile(m, block_size=32):
        v = x[tm, :]
        _, order = torch.sort(v, dim=1)
        inverse = torch.sort(order.to(torch.int32), dim=1)[1]  # rank of each element
        scores = levels[None, :] + v * 0.0
        ranked[tm, :] = torch.gather(scores, 1, inverse)
    return ranked


@ts.kernel
def pick_columns(x: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """``x.gather(1, picks)`` row block by row block (``picks`` narrower than ``x``)."""
    m = x.size(0)
    out = torch.empty([m, picks.size(1)], dtype=x.dtype, device=x.device)
    for tm in ts.tile(m, block_size=32):
        v = x[tm, :]
        out[tm, :] = v.gather(1, picks[tm, :])
    return out


@pytest.mark.parametrize("mode", MODES)
def test_block_gather(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    x = torch.randn(70, 40)
    want = x.double().argsort(1).argsort(1).double() / 39
    close(rank_scores(x, torch.arange(40) / 39), want)
    picks = torch.randint(0, 40, (70, 40))
    close(pick_columns(x, picks), torch.gather(x, 1, picks), atol=0, rtol=0)


@ts.kernel
def scaled_embedding(ids: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    """``F.embedding(ids, weight) * scale`` rows (Helion's embedding example, fused)."""
    n = ids.size(0)
    out = torch.empty([n, weight.size(1)], dtype=torch.float32, device=weight.device)
    for tm in ts.tile(n, block_size=32):
        out[tm, :] = F.embedding(ids[tm], weight).to(torch.float32) * scale
    return out


@pytest.mark.parametrize("mode", MODES)
def test_embedding(mode: str, request: pytest.FixtureRequest, poison_empty: None) -> None:
    use(mode, request)
    ids, weight = torch.randint(0, 50, (70,)), torch.randn(50, 48)
    close(scaled_embedding(ids, weight, 0.5), weight.double()[ids] * 0.5, atol=0, rtol=0)


@ts.kernel
def gather_along_tile(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm, tn in ts.tile(x.size(), block_size=[32, 32]):
        out[tm, tn] = torch.gather(x[tm, tn], 1, idx[tm, tn])
    return out


@ts.kernel
def gather_tensor_arg(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm in ts.tile(x.size(0), block_size=32):
        out[tm, :] = torch.gather(x, 1, idx[tm, :])
    return out


def test_gather_refusals(compiled_mode: None) -> None:
    x, idx = torch.randn(40, 40), torch.randint(0, 40, (40, 40))
    with pytest.raises(ts.KernelSyntaxError, match="along the tile 'tn'") as err:
        gather_along_tile(x, idx)
    assert "x[idx, tn]" in str(err.value)
    with pytest.raises(ts.KernelSyntaxError, match="gathers from a tensor argument"):
        gather_tensor_arg(x, idx)


@pytest.fixture
def h100_gather(as_h100: None) -> Iterator[None]:  # noqa: F811
    yield
    rank_scores._bound.clear()
    rank_scores._fast_key = None


def test_gpu_block_gather_compiles(h100_gather: None, tmp_path: Path) -> None:
    src = rank_scores.to_triton_code(args=(torch.randn(64, 40), torch.arange(40) / 39))
    assert _code(src).count("tl.gather(") == 1
    compile_for_sm90(src, tmp_path, {"x": torch.float32, "levels": torch.float32,
                                     "ranked": torch.float32}, {"R_X1": 64, "EXACT_X1": False})
