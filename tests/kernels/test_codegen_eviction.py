"""The re-read eviction modes: ``stream`` marks a tensor's last read ``evict_first``,
``reuse`` also its earlier reads ``evict_last``; they are searched only for kernels that read
a tensor twice."""

from __future__ import annotations

import torch

import torchship as ts
from torchship.kernels import Config
from torchship.kernels.config import ConfigSpace
from torchship.kernels.specs import BlockParamSpec, LaunchSpec


@ts.kernel
def row_sums(x: torch.Tensor) -> torch.Tensor:
    """Row sums over column tiles: x is read once."""
    m, n = x.size()
    out = torch.empty([m], dtype=torch.float32, device=x.device)
    for tm in ts.tile(m):
        s = ts.zeros([tm], dtype=torch.float32)
        for tn in ts.tile(n):
            s = s + x[tm, tn].sum(dim=1)
        out[tm] = s
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


def test_stream_and_reuse_mark_first_and_last_reads() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(35, 100, generator=g) + 0.5
    bound = two_pass_scale.bind((x,))
    ref = (x.double() / x.double().sum(1, keepdim=True)).float()
    hints = {}
    for mode in ("", "stream", "reuse"):
        cfg = _cfg(bound, block_sizes=[16, 32, 32], num_warps=4, num_stages=1,
                   load_eviction=mode)
        src = two_pass_scale.to_triton_code(cfg, args=(x,))
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
    assert not row_sums.bind((torch.randn(4, 8),)).config_space.launches[0].rereads
