"""Deferred reductions (a loop-carried ``acc = acc + x.sum(dim)`` folded per element in the
unmasked part of a tile loop) and the re-read eviction modes ``stream`` / ``reuse``."""

from __future__ import annotations

import pytest
import torch

import torchship as ts
from torchship.kernels import Config
from torchship.kernels.config import ConfigSpace
from torchship.kernels.specs import BlockParamSpec, LaunchSpec


@ts.kernel
def row_stats(x: torch.Tensor) -> torch.Tensor:
    """Per row: sum, max, min and product, each folded over column tiles."""
    m, n = x.size()
    out = torch.empty([m, 4], dtype=torch.float32, device=x.device)
    for tm in ts.tile(m):
        s = ts.zeros([tm], dtype=torch.float32)
        hi = ts.full([tm], float("-inf"), dtype=torch.float32)
        lo = ts.full([tm], float("inf"), dtype=torch.float32)
        p = ts.full([tm], 1.0, dtype=torch.float32)
        for tn in ts.tile(n):
            blk = x[tm, tn]
            s = s + blk.sum(dim=1)
            hi = torch.maximum(hi, blk.amax(dim=1))
            lo = torch.minimum(blk.amin(dim=1), lo)
            p = p * blk.prod(dim=1)
        out[tm, 0] = s
        out[tm, 1] = hi
        out[tm, 2] = lo
        out[tm, 3] = p
    return out


@ts.kernel
def running_sums(x: torch.Tensor) -> torch.Tensor:
    """Prefix sums of column-tile sums: the carried value is stored in the loop, so its
    reduction cannot wait."""
    m, n = x.size()
    out = torch.empty([m, n], dtype=torch.float32, device=x.device)
    for tm in ts.tile(m):
        s = ts.zeros([tm], dtype=torch.float32)
        for tn in ts.tile(n):
            s = s + x[tm, tn].sum(dim=1)
            out[tm, tn] = s[:, None] + ts.zeros([tm, tn], dtype=torch.float32)
    return out


@ts.kernel
def two_pass_scale(x: torch.Tensor) -> torch.Tensor:
    """x / rowsum(x): x is read twice."""
    m, n = x.size()
    out = torch.empty_like(x)
    for tm in ts.tile(m):
        s = ts.zeros([tm, 1], dtype=torch.float32)
        for tn in ts.tile(n):
            s = s + x[tm, tn].sum(dim=1, keepdim=True)
        for tn in ts.tile(n):
            out[tm, tn] = x[tm, tn] / s
    return out


def _cfg(bound: object, **knobs: object) -> Config:
    return Config.from_dict(bound.config_space.default().to_dict() | knobs)  # type: ignore[attr-defined]


def _stats_ref(x: torch.Tensor) -> torch.Tensor:
    d = x.double()
    return torch.stack([d.sum(1), d.amax(1), d.amin(1), d.prod(1)], dim=1).float()


@pytest.mark.parametrize("n", [96, 97])
def test_loop_reductions_fold_per_element_then_reduce_once(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    x = 1.0 + 0.05 * torch.randn(37, n, generator=g)  # products stay near 1
    bound = row_stats.bind((x,))
    cfg = _cfg(bound, block_sizes=[16, 32], num_warps=4, num_stages=1)
    src = row_stats.to_triton_code(cfg, args=(x,))
    full, tail = src.split("# the ragged last block")
    loop = full.split("# full blocks (no masks)")[1]
    # four block-shaped accumulators before the unmasked loop, no reductions inside it ...
    assert loop.count("_lanes = tl.full([BLOCK_TM, BLOCK_TN]") == 4
    lines = loop.split("tl.range", 1)[1].splitlines()[1:]
    body = "\n".join(ln for ln in lines[: next(i for i, ln in enumerate(lines)
                                                if not ln.startswith(" " * 8))])
    assert "tl.sum(" not in body and "tl.max(" not in body and "tl.reduce(" not in body
    # ... one per accumulator after it, and the ragged block reduces as written
    assert "tl.sum(s_lanes, axis=1)" in loop and "tl.max(hi_lanes, axis=1)" in loop
    assert "tl.sum(" in tail and "tl.min(" in tail
    out = bound.compile(cfg)(x)
    assert torch.allclose(out, _stats_ref(x), atol=1e-5, rtol=1e-5)


def test_a_carried_value_used_in_the_loop_reduces_every_iteration() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(33, 70, generator=g)
    bound = running_sums.bind((x,))
    cfg = _cfg(bound, block_sizes=[16, 32], num_warps=4, num_stages=1)
    src = running_sums.to_triton_code(cfg, args=(x,))
    assert "_lanes" not in src
    out = bound.compile(cfg)(x)
    d = x.double()
    ref = torch.cat([d[:, : min(e, 70)].sum(1, keepdim=True).expand(-1, min(32, 70 - b))
                     for b, e in ((0, 32), (32, 64), (64, 96))], dim=1)
    assert torch.allclose(out, ref.float(), atol=1e-5, rtol=1e-5)


def test_large_blocks_keep_per_iteration_reductions() -> None:
    x = torch.randn(16, 2048)
    bound = row_stats.bind((x,))
    # 16 x 1024 values on one warp: 512 per thread, over the accumulator budget
    src = row_stats.to_triton_code(_cfg(bound, block_sizes=[16, 1024], num_warps=1,
                                        num_stages=1), args=(x,))
    assert "_lanes" not in src
    src = row_stats.to_triton_code(_cfg(bound, block_sizes=[1, 1024], num_warps=1,
                                        num_stages=1), args=(x,))
    assert src.count("_lanes = tl.full") == 4


def test_keepdim_reductions_defer_and_stream_reuse_mark_reads() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(35, 100, generator=g) + 0.5
    bound = two_pass_scale.bind((x,))
    ref = (x.double() / x.double().sum(1, keepdim=True)).float()
    hints = {}
    for mode in ("", "stream", "reuse"):
        cfg = _cfg(bound, block_sizes=[16, 32, 32], num_warps=4, num_stages=1,
                   load_eviction=mode)
        src = two_pass_scale.to_triton_code(cfg, args=(x,))
        assert "tl.sum(s_lanes, axis=1, keep_dims=True)" in src
        loads = [ln for ln in src.splitlines() if "tl.load(x" in ln]
        assert len(loads) == 4  # two loops, each peeled into full blocks and a ragged block
        hints[mode] = [ln.split("eviction_policy=")[1][:12] if "eviction_policy" in ln else ""
                       for ln in loads]
        out = bound.compile(cfg)(x)
        assert torch.allclose(out, ref, atol=1e-6, rtol=1e-5)
    assert hints[""] == ["", "", "", ""]
    assert hints["stream"] == ["", "", '"evict_first', '"evict_first']
    assert hints["reuse"] == ['"evict_last"', '"evict_last"', '"evict_first', '"evict_first']


def test_reread_eviction_modes_are_searched_only_for_kernels_that_reread() -> None:
    params = [BlockParamSpec("t", 1, 4096, 10**6, grid=True)]
    once = ConfigSpace(params, [LaunchSpec(1, [0])], device="cuda")
    twice = ConfigSpace(params, [LaunchSpec(1, [0], rereads=True)], device="cuda")
    assert once.params["load_eviction"] == ["", "first", "last"]
    assert twice.params["load_eviction"] == ["", "first", "last", "stream", "reuse"]
    assert twice.default().load_eviction == "stream"
    assert once.default().load_eviction == ""
    # the compiler sets the flag from the IR
    assert two_pass_scale.bind((torch.randn(4, 8),)).config_space.launches[0].rereads
    assert not row_stats.bind((torch.randn(4, 8),)).config_space.launches[0].rereads
