"""``view``/``reshape`` of blocks and ``view(dtype)`` bitcasts in device code, against torch
eager: splitting a row into heads (``v.view(tm, 4, 16)``, ``-1`` for the tile or for a fixed
dim, ``torch.reshape`` with a tuple), merging fixed dims back, per-group fp8 quantisation
with the groups made by ``view``; float bits read as ints and back (exponent fields, ``abs``
by masking the sign, float16 through int16); and the refusals (merging a tile, a non-power-of-two part, a
bitcast to another width) naming the line.

Example:
    pytest -q tests/kernels/test_user_kernels_sweep9_views.py
"""

from __future__ import annotations

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use


@ts.kernel
def heads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[rows, 64] -> [rows, 4, 16] three ways; per-head sums merged back to [rows, 64]."""
    out = torch.empty([x.size(0), 4, 16], dtype=x.dtype, device=x.device)
    back = torch.empty_like(x)
    for tm in ts.tile(x.size(0), block_size=32):
        v = x[tm, :]
        a = v.view(tm, 4, 16)
        b = v.reshape(-1, 16, 4).transpose(1, 2)
        c = torch.reshape(v, (tm, 2, 2, 16)).flatten(1).view(-1, 4, 16)
        out[tm, :, :] = a + b * 2 + c * 3
        centred = a - a.mean(dim=2, keepdim=True)
        back[tm, :] = centred.reshape(tm, 64)
    return out, back


@pytest.mark.parametrize("mode", MODES)
def test_view_and_reshape_of_blocks(mode: str, request: pytest.FixtureRequest,
                                    poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(40, 64, dtype=torch.float64)
    a = x.view(40, 4, 16)
    got, back = heads(x)
    close(got, a + x.view(40, 16, 4).transpose(1, 2) * 2 + a * 3)
    close(back, (a - a.mean(2, keepdim=True)).reshape(40, 64))


@ts.kernel
def float_bits(x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                          torch.Tensor]:
    exps = torch.empty(x.shape, dtype=torch.int32, device=x.device)
    absx = torch.empty_like(x)
    negh = torch.empty_like(h)
    for tm in ts.tile(x.size(0), block_size=32):
        v = x[tm, :]
        exps[tm, :] = (v.view(torch.int32) >> 23) & 0xFF
        absx[tm, :] = (v.view(torch.int32) & 0x7FFFFFFF).view(torch.float32)
        negh[tm, :] = (h[tm, :].view(torch.int16) ^ -32768).view(torch.float16)
    return exps, absx, negh


@pytest.mark.parametrize("mode", MODES)
def test_view_as_another_dtype_of_the_same_width(mode: str, request: pytest.FixtureRequest,
                                                 poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(40, 20) * 1e3
    h = torch.randn(40, 20, dtype=torch.float16)
    exps, absx, negh = float_bits(x, h)
    assert torch.equal(exps, (x.view(torch.int32) >> 23) & 0xFF)
    assert torch.equal(absx, x.abs())
    assert torch.equal(negh, -h)


@ts.kernel
def bad_views(x: torch.Tensor, which: str) -> torch.Tensor:
    out = torch.zeros([x.size(0) * 16], dtype=x.dtype, device=x.device)
    for tm in ts.tile(x.size(0), block_size=32):
        v = x[tm, :]
        if which == "tile":
            out[tm] = v.reshape(-1).sum()
        elif which == "odd":
            out[tm] = v.view(tm, 3, -1).sum(dim=(1, 2))
        else:
            out[tm] = v.view(torch.float64).sum(dim=1)
    return out


@pytest.mark.parametrize(("which", "says"), [
    ("tile", "merges or moves a tile (the block's tiles: tm)"),
    ("odd", "cannot become [3, 5]"),
    ("width", "only as a dtype of the same width"),
])
def test_views_triton_cannot_express_are_refused(which: str, says: str,
                                                 compiled_mode: None) -> None:
    with pytest.raises(ts.KernelError) as info:
        bad_views(torch.randn(32, 16), which)
    text = str(info.value)
    assert says in text and "test_user_kernels_sweep9_views.py" in text, text


@ts.kernel
def group_quant(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group fp8 quantisation (Helion's fp8_group_quant) with the groups made in device
    code: each row viewed as [groups, group], scaled by its group's absmax."""
    n, hidden = x.shape
    q = torch.empty([n, hidden], dtype=torch.float8_e4m3fn, device=x.device)
    scales = torch.empty([n, hidden // group], dtype=torch.float32, device=x.device)
    for tm in ts.tile(n, block_size=32):
        g = x[tm, :].float().view(tm, -1, group)
        scale = g.abs().amax(dim=-1).clamp(min=1e-10) / 448.0
        q[tm, :] = torch.clamp(g / scale[:, :, None], -448.0, 448.0).reshape(tm, hidden).to(
            q.dtype)
        scales[tm, :] = scale
    return q, scales


@pytest.mark.parametrize("mode", MODES)
def test_group_quantisation_with_a_view(mode: str, request: pytest.FixtureRequest,
                                        poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(40, 512)
    g = x.reshape(40, 4, 128)  # float32 like the kernel: fp8 rounding sees the same values
    scale = g.abs().amax(-1).clamp(min=1e-10) / 448.0
    want = torch.clamp(g / scale[..., None], -448.0, 448.0).reshape(40, 512)
    q, scales = group_quant(x, 128)
    assert torch.equal(scales, scale)
    assert torch.equal(q, want.to(torch.float8_e4m3fn))
