"""Slices with bounds on tensor loads and stores in device code, against torch eager: a fused
QKV projection split with ``qkv[tm, 0:d]``, ``qkv[tm, d:2 * d]``, ``qkv[tm, 2 * d:]``; halves of
a row written with ``out[tm, :h] = ...``; a window ``x[tm, off:off + w]`` at int arguments
(every reduction chunk and indexing mode); Helion's concatenate example as two slice stores per
row; Python's slice rules (negative bounds, bounds past
the end clamp, empty windows); steps (GPT-J RoPE's pairs loaded and stored with ``0::2``,
``1::step``; a stepped window at a device start); and the refusals (a negative step, device
bounds whose width is not known at launch).

Example:
    pytest -q tests/kernels/test_user_kernels_sweep9_slices.py
"""

from __future__ import annotations

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use


@ts.kernel
def qkv_scores(qkv: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: q·k over the head dim, and v scaled by it (q, k, v cut from one projection)."""
    n = qkv.size(0)
    score = torch.empty([n], dtype=torch.float32, device=qkv.device)
    out = torch.empty([n, d], dtype=qkv.dtype, device=qkv.device)
    for tm in ts.tile(n, block_size=32):
        q = qkv[tm, 0:d].float()
        k = qkv[tm, d:2 * d].float()
        v = qkv[tm, 2 * d:]
        s = (q * k).sum(dim=1)
        score[tm] = s
        out[tm, :] = (v * s[:, None]).to(qkv.dtype)
    return score, out


@pytest.mark.parametrize("mode", MODES)
def test_fused_qkv_split_with_slices(mode: str, request: pytest.FixtureRequest,
                                     poison_empty: None) -> None:
    use(mode, request)
    for n, d in [(70, 24), (33, 64)]:  # one kernel for both head sizes (d is an argument)
        qkv = torch.randn(n, 3 * d, dtype=torch.float64)
        q, k, v = qkv.split(d, dim=1)
        s = (q * k).sum(1)
        got_s, got_o = qkv_scores(qkv, d)
        close(got_s, s.float(), atol=1e-5)
        close(got_o, v * s[:, None], atol=1e-5)


@ts.kernel
def swap_halves(x: torch.Tensor) -> torch.Tensor:
    """out = cat(x2 * 2, x1 + 1) by writing each half of the row; then the last three columns
    take x[:, 1:4] (negative start)."""
    out = torch.empty_like(x)
    h = x.size(1) // 2
    for tm in ts.tile(x.size(0), block_size=32):
        out[tm, :h] = x[tm, h:] * 2
        out[tm, h:] = x[tm, :h] + 1
    for tm in ts.tile(x.size(0), block_size=32):
        out[tm, -3:] = x[tm, 1:4]
    return out


@pytest.mark.parametrize("mode", MODES)
def test_write_halves_of_a_row(mode: str, request: pytest.FixtureRequest,
                               poison_empty: None) -> None:
    use(mode, request)
    for shape in [(50, 40), (33, 10)]:
        x = torch.randn(*shape)
        h = shape[1] // 2
        want = torch.cat((x[:, h:] * 2, x[:, :h] + 1), dim=1)
        want[:, -3:] = x[:, 1:4]
        close(swap_halves(x), want)


@ts.kernel
def window_sum(x: torch.Tensor, off: int, w: int) -> torch.Tensor:
    out = torch.empty([x.size(0)], dtype=torch.float32, device=x.device)
    for tm in ts.tile(x.size(0), block_size=32):
        out[tm] = x[tm, off:off + w].float().sum(dim=1)
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("off", "w"), [(17, 200), (250, 200), (-30, 20), (10, 0), (400, 5)])
def test_window_follows_pythons_slice_rules(mode: str, request: pytest.FixtureRequest,
                                            off: int, w: int) -> None:
    use(mode, request)
    x = torch.randn(40, 300, dtype=torch.float64)
    close(window_sum(x, off, w), x[:, off:off + w].sum(1).float(), atol=1e-4)


def test_window_in_every_chunk_and_indexing_mode(compiled_mode: None) -> None:
    x = torch.randn(40, 300, dtype=torch.float64)
    args = (x.float(), 17, 200)
    bound = window_sum.bind(args)
    space = bound.config_space
    want = x[:, 17:217].sum(1).float()
    chunks = space.params["reduction_loops[0]"]
    assert len(chunks) > 2
    for chunk in chunks:
        for indexing in space.params["indexing"]:
            cfg = space.default().replace(reduction_loops=[chunk], indexing=indexing)
            close(bound.compile(cfg)(*args), want, atol=1e-4)
    code = window_sum.to_triton_code(space.default(), args=args)
    assert "x_o1 * x_stride1" in code  # the window starts at its offset argument


@ts.kernel
def rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     step: int) -> torch.Tensor:
    """GPT-J RoPE with the pairs loaded and stored by stepped slices (x[tm, 0::2], ...)."""
    out = torch.empty_like(x)
    for tm in ts.tile(x.size(0), block_size=32):
        even, odd = x[tm, 0::2], x[tm, 1::step]
        c, s = cos[tm, :], sin[tm, :]
        out[tm, 0::2] = even * c - odd * s
        out[tm, 1::step] = even * s + odd * c
    return out


@pytest.mark.parametrize("mode", MODES)
def test_stepped_slices(mode: str, request: pytest.FixtureRequest, poison_empty: None) -> None:
    use(mode, request)
    for d in (64, 40):
        x, cos, sin = torch.randn(50, d), torch.randn(50, d // 2), torch.randn(50, d // 2)
        even, odd = x[:, 0::2], x[:, 1::2]
        want = torch.stack((even * cos - odd * sin, even * sin + odd * cos), -1).flatten(1)
        close(rope_interleaved(x, cos, sin, 2), want)


@ts.kernel
def strided_window(x: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    out = torch.zeros([x.size(0), 16], dtype=x.dtype, device=x.device)
    for i in ts.grid(x.size(0)):
        s = starts[i]
        out[i, :] = x[i, s:s + 32:2]
    return out


@pytest.mark.parametrize("mode", MODES)
def test_stepped_window_at_a_device_start(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    x, starts = torch.randn(4, 100), torch.tensor([0, 7, 40, 68])
    want = torch.stack([x[i, starts[i]:starts[i] + 32:2] for i in range(4)])
    assert torch.equal(strided_window(x, starts), want)


@ts.kernel
def bad_slices(x: torch.Tensor, which: str) -> torch.Tensor:
    out = torch.zeros_like(x)
    for tm in ts.tile(x.size(0), block_size=32):
        if which == "step":
            out[tm, 0:8] = x[tm, 8:0:-1]
        else:
            out[tm, 0:8] = x[tm, tm.begin:tm.end]
    return out


@pytest.mark.parametrize(("which", "says"), [
    ("step", "the slice `8:0:-1` of tensor 'x' has a step below 1"),
    ("device", "a device start needs a launch-time width"),
])
def test_slices_triton_cannot_express_are_refused(which: str, says: str,
                                                  compiled_mode: None) -> None:
    with pytest.raises(ts.KernelError) as info:
        bad_slices(torch.randn(32, 16), which)
    text = str(info.value)
    assert says in text and "test_user_kernels_sweep9_slices.py" in text, text


@ts.kernel
def concat_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """torch.cat((x, y), 1) (Helion's concatenate example) as two slice stores per row."""
    out = torch.empty([x.size(0), x.size(1) + y.size(1)], dtype=x.dtype, device=x.device)
    for tm in ts.tile(x.size(0), block_size=32):
        out[tm, :x.size(1)] = x[tm, :]
        out[tm, x.size(1):] = y[tm, :]
    return out


@pytest.mark.parametrize("mode", MODES)
def test_concatenate_by_slice_stores(mode: str, request: pytest.FixtureRequest,
                                     poison_empty: None) -> None:
    use(mode, request)
    for wx, wy in [(40, 60), (64, 7)]:  # one kernel for both
        x, y = torch.randn(50, wx), torch.randn(50, wy)
        assert torch.equal(concat_rows(x, y), torch.cat((x, y), 1))
