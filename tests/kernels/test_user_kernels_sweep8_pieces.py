"""Cutting and joining blocks in device code: ``torch.cat``/``torch.stack`` of tiles, the
slices and ``chunk``/``split``/``unbind`` that give their halves, against torch eager — RoPE's
``rotate_half`` written three ways (slices at a host int, ``chunk``, ``split``), a kernel
specialised anew for a second head size, concatenation of four blocks, stacking along a new
middle or last dim, a 3-D block cut along its middle dim — and the refusals (a tile dim,
unequal parts, a non-power-of-two whole dim, three blocks) naming the kernel's line; GPT-J
interleaved RoPE (unflatten/unbind/stack/flatten), permutes and ``torch.einsum`` of blocks.

Example:
    pytest -q tests/kernels/test_user_kernels_sweep8_pieces.py
"""

from __future__ import annotations

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


@ts.kernel
def rope_three_ways(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    out = torch.empty([3, *x.shape], dtype=x.dtype, device=x.device)
    h = x.size(1) // 2
    for tm in ts.tile(x.size(0), block_size=32):
        v = x[tm, :].float()
        c, s = cos[tm, :], sin[tm, :]
        rot = torch.cat((-v[:, h:], v[..., :h]), dim=-1)
        out[0, tm, :] = (v * c + rot * s).to(x.dtype)
        x1, x2 = v.chunk(2, dim=-1)
        out[1, tm, :] = (v * c + torch.cat([-x2, x1], dim=1) * s).to(x.dtype)
        y1, y2 = torch.split(v, h, dim=-1)
        out[2, tm, :] = (v * c + torch.concat((-y2, y1), -1) * s).to(x.dtype)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_rotate_half_rope_with_cat_of_halves(mode: str, request: pytest.FixtureRequest,
                                             poison_empty: None) -> None:
    use(mode, request)
    for n, d in [(70, 64), (33, 128)]:  # one kernel, specialised anew for the second head size
        x = torch.randn(n, d, dtype=torch.float16)
        cos, sin = torch.randn(n, d), torch.randn(n, d)
        want = x.float() * cos + _rotate_half(x.float()) * sin
        got = rope_three_ways(x, cos, sin)
        for k in range(3):
            close(got[k], want.half(), atol=2e-3, rtol=2e-3)


@ts.kernel
def joins(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m, n = a.shape
    cat4 = torch.empty([m, 4 * n], dtype=torch.float32, device=a.device)
    pairs = torch.empty([m, n, 2], dtype=torch.float32, device=a.device)
    mid = torch.empty([m, 2, n], dtype=torch.float32, device=a.device)
    for tm in ts.tile(m, block_size=32):
        p, q = a[tm, :], b[tm, :]  # float32 and int32: cat promotes like torch
        cat4[tm, :] = torch.cat([p, q, q * 2, p + q], dim=1)
        pairs[tm, :, :] = torch.stack((p, q), dim=-1)
        lo, hi = torch.stack([q, p], dim=1).unbind(1)
        mid[tm, :, :] = torch.stack([hi + lo, hi], 1)
    return cat4, pairs, mid


@pytest.mark.parametrize("mode", MODES)
def test_cat_and_stack_of_blocks(mode: str, request: pytest.FixtureRequest,
                                 poison_empty: None) -> None:
    use(mode, request)
    a, b = torch.randn(40, 32), torch.randint(-9, 9, (40, 32), dtype=torch.int32)
    cat4, pairs, mid = joins(a, b)
    close(cat4, torch.cat([a, b, b * 2, a + b], 1))
    close(pairs, torch.stack([a, b], -1))
    close(mid, torch.stack([a + b, a], 1))


@ts.kernel
def quarters(x: torch.Tensor) -> torch.Tensor:
    """A [rows, 4, 16] block cut along its middle dim and its last dim."""
    out = torch.empty([x.size(0), 16], dtype=x.dtype, device=x.device)
    for tm in ts.tile(x.size(0), block_size=32):
        v = x[tm, :, :]
        first, second = v[:, :2, :].sum(1), v[:, 2:3, :].squeeze(1)
        a, b, c, d = second.split(4, dim=-1)
        out[tm, :] = first * torch.cat((d, c, b, a), dim=-1)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_cuts_of_a_3d_block(mode: str, request: pytest.FixtureRequest,
                            poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(50, 4, 16)
    s = x[:, 2]
    close(quarters(x), x[:, :2].sum(1) * torch.cat([s[:, 12:], s[:, 8:12], s[:, 4:8],
                                                     s[:, :4]], -1))


@ts.kernel
def cut_bad(x: torch.Tensor, which: str) -> torch.Tensor:
    out = torch.empty([x.size(0), 2 * x.size(1)], dtype=x.dtype, device=x.device)
    for tm in ts.tile(x.size(0), block_size=32):
        v = x[tm, :]
        if which == "tile":
            out[tm, :] = torch.cat((v, v), dim=0)
        elif which == "unequal":
            out[tm, :] = torch.cat((v[:, :8], v[:, 8:]), dim=-1)
        elif which == "whole":
            out[tm, :] = torch.cat((v, v), dim=1)
        else:
            out[tm, :] = torch.cat((v, v, v), dim=1)
    return out


@pytest.mark.parametrize(("which", "width", "says"), [
    ("tile", 32, "torch.cat() along the tile 'tm'"),
    ("unequal", 32, "the slice `v[:, 8:]` takes [8, 32)"),
    ("whole", 24, "along the whole dim x.size(1) of size 24"),
    ("three", 32, "torch.cat() of 3 blocks"),
])
def test_cuts_triton_cannot_express_are_refused(which: str, width: int, says: str,
                                                compiled_mode: None) -> None:
    with pytest.raises(ts.KernelError) as info:
        cut_bad(torch.randn(8, width), which)
    text = str(info.value)
    assert says in text and "test_user_kernels_sweep8_pieces.py" in text, text
    assert "equal power-of-two parts" in text


@ts.kernel
def rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """GPT-J style: pairs (x[2i], x[2i+1]) rotate; cos/sin hold one value per pair."""
    out = torch.empty_like(x)
    for tm in ts.tile(x.size(0), block_size=32):
        even, odd = x[tm, :].unflatten(-1, (-1, 2)).unbind(-1)
        c, s = cos[tm, :], sin[tm, :]
        out[tm, :] = torch.stack((even * c - odd * s, even * s + odd * c), dim=-1).flatten(1)
    return out


@ts.kernel
def shuffles(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[rows, 4, 8] blocks: permute, transpose of the first two dims, movedim."""
    a = torch.empty([x.size(0), 8, 4], dtype=x.dtype, device=x.device)
    b = torch.empty([4, x.size(0), 8], dtype=x.dtype, device=x.device)
    for tm in ts.tile(x.size(0), block_size=32):
        v = x[tm, :, :]
        a[tm, :, :] = v.permute(0, 2, 1) + torch.movedim(v, 1, 2)
        b[:, tm, :] = v.transpose(0, 1)
    return a, b


@pytest.mark.parametrize("mode", MODES)
def test_interleaved_rope_and_permutes(mode: str, request: pytest.FixtureRequest,
                                       poison_empty: None) -> None:
    use(mode, request)
    x, cos, sin = torch.randn(40, 64), torch.randn(40, 32), torch.randn(40, 32)
    even, odd = x[:, 0::2], x[:, 1::2]
    want = torch.stack((even * cos - odd * sin, even * sin + odd * cos), -1).flatten(1)
    close(rope_interleaved(x, cos, sin), want)
    y = torch.randn(50, 4, 8)
    a, b = shuffles(y)
    close(a, 2 * y.permute(0, 2, 1))
    close(b, y.transpose(0, 1))


@ts.kernel
def reshaped(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm in ts.tile(x.size(0), block_size=32):
        out[tm, :] = x[tm, :].reshape(-1, 16, 2).sum(-1).repeat(1, 2)
    return out


def test_reshape_of_a_block_splits_its_fixed_dim(compiled_mode: None) -> None:
    """(Refused until sweep 9; test_user_kernels_sweep9_views.py covers reshape/view.)"""
    x = torch.randn(8, 32)
    close(reshaped(x), x.reshape(8, 16, 2).sum(-1).repeat(1, 2))


@ts.kernel
def einsums(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
    m, n = a.size(0), b.size(1)
    mm = torch.empty([m, n], dtype=torch.float32, device=a.device)
    rows = torch.empty([m], dtype=torch.float32, device=a.device)
    nm = torch.empty([n, m], dtype=torch.float32, device=a.device)
    outer = torch.empty([m, 32, 32], dtype=torch.float32, device=a.device)
    bmn = torch.empty([c.size(0), 16, 16], dtype=torch.float32, device=a.device)
    for tm in ts.tile(m, block_size=16):
        x = a[tm, :]
        mm[tm, :] = torch.einsum("mk,kn->mn", x, b[:, :])
        rows[tm] = torch.einsum("ij,ij->i", x, x)
        nm[:, tm] = torch.einsum("mk,kn->nm", x, b[:, :])
        outer[tm, :, :] = torch.einsum("mi,mj->mij", x, x)
    for tb in ts.tile(c.size(0), block_size=1):
        v = c[tb, :, :]
        bmn[tb, :, :] = torch.einsum("bmk,bnk->bmn", v, v)
    return mm, rows, nm, outer, bmn


@pytest.mark.parametrize("mode", MODES)
def test_einsum_on_blocks(mode: str, request: pytest.FixtureRequest, poison_empty: None) -> None:
    use(mode, request)
    a, b, c = torch.randn(40, 32), torch.randn(32, 32), torch.randn(4, 16, 16)
    mm, rows, nm, outer, bmn = einsums(a, b, c)
    close(mm, a @ b, atol=1e-4)
    close(rows, (a * a).sum(1), atol=1e-4)
    close(nm, (a @ b).T, atol=1e-4)
    close(outer, a[:, :, None] * a[:, None, :])
    close(bmn, c @ c.transpose(1, 2), atol=1e-4)


def test_einsum_matrix_product_is_a_dot(compiled_mode: None) -> None:
    args = (torch.randn(40, 32), torch.randn(32, 32), torch.randn(4, 16, 16))
    assert einsums.to_triton_code(args=args).count("tl.dot(") >= 3


@ts.kernel
def einsum_trace(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty([x.size(0)], dtype=x.dtype, device=x.device)
    for tm in ts.tile(x.size(0), block_size=32):
        out[tm] = torch.einsum("mii->m", x[tm, :, :])
    return out


def test_einsum_traces_are_refused(compiled_mode: None) -> None:
    with pytest.raises(ts.KernelError) as info:
        einsum_trace(torch.randn(8, 4, 4))
    text = str(info.value)
    assert "subscripts 'mii'" in text and "sweep8_pieces.py" in text, text
