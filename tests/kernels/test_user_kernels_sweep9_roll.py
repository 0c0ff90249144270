"""``torch.roll`` of blocks in device code, against torch eager: along a whole ``:`` dim of a
power-of-two or padded size (literal, negative and int-argument shifts, two shifts on one dim,
bfloat16), along a constant dim of a 3-D block made by ``view``, before a reduction over the
rolled dim (never chunked); and the refusals (a tile dim, ``dims`` left out on a 2-D block).

Example:
    pytest -q tests/kernels/test_user_kernels_sweep9_roll.py
"""

from __future__ import annotations

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use


@ts.kernel
def rolls(x: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.empty([3, *x.shape], dtype=x.dtype, device=x.device)
    weighted = torch.empty([x.size(0)], dtype=torch.float32, device=x.device)
    for tm in ts.tile(x.size(0), block_size=32):
        v = x[tm, :]
        out[0, tm, :] = torch.roll(v, 3, 1)
        out[1, tm, :] = v.roll(-s, dims=-1)
        r = torch.roll(v, (s, 2), (1, 1))
        out[2, tm, :] = r
        weighted[tm] = (r.float() * v.float()).sum(dim=1)  # the rolled dim reduced whole
    return out, weighted


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("n", "dtype"), [(16, torch.float32), (20, torch.float32),
                                          (100, torch.bfloat16)])
def test_roll_along_a_whole_dim(mode: str, request: pytest.FixtureRequest, n: int,
                                dtype: torch.dtype, poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(40, n).to(dtype)
    got, weighted = rolls(x, 5)
    want = torch.stack([torch.roll(x, 3, 1), torch.roll(x, -5, 1), torch.roll(x, 7, 1)])
    assert torch.equal(got, want)
    close(weighted, (torch.roll(x, 7, 1).double() * x.double()).sum(1).float(), atol=1e-4)


@ts.kernel
def head_roll(x: torch.Tensor) -> torch.Tensor:
    """[rows, 64] as [rows, 4, 16]: heads rotate by one, positions in each head by -2."""
    out = torch.empty_like(x)
    for tm in ts.tile(x.size(0), block_size=32):
        v = x[tm, :].view(tm, 4, 16)
        out[tm, :] = torch.roll(v, shifts=(1, -2), dims=(1, 2)).reshape(tm, 64)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_roll_along_constant_dims(mode: str, request: pytest.FixtureRequest,
                                  poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(50, 64)
    want = torch.roll(x.view(50, 4, 16), shifts=(1, -2), dims=(1, 2)).reshape(50, 64)
    assert torch.equal(head_roll(x), want)


@ts.kernel
def bad_roll(x: torch.Tensor, which: str) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm in ts.tile(x.size(0), block_size=32):
        v = x[tm, :]
        out[tm, :] = torch.roll(v, 1, 0) if which == "tile" else torch.roll(v, 1)
    return out


@pytest.mark.parametrize(("which", "says"), [
    ("tile", "along the tile 'tm': the block holds only part of that dim"),
    ("flat", "without dims rolls the flattened block"),
])
def test_rolls_triton_cannot_express_are_refused(which: str, says: str,
                                                 compiled_mode: None) -> None:
    with pytest.raises(ts.KernelError) as info:
        bad_roll(torch.randn(32, 16), which)
    text = str(info.value)
    assert says in text and "test_user_kernels_sweep9_roll.py" in text, text
