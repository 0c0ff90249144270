"""Slices whose start is computed on the device and whose width is known at launch, against
torch eager: a head's columns of a fused projection at a grid index (``qkv[tm, h * d:(h + 1) *
d]``, loads and stores), a window at a start read from a tensor (``x[i, s:s + w]``), pairs of a
row at twice a tile's start (``a[tm, 2 * tk.begin:2 * tk.begin + 64]``, a new ``tk.begin``
value each time, same quantity); a window running past the tensor's end reads zeros and writes
nothing there (torch would give a shorter slice); and the refusal of a device bound whose
width is not known at launch.

Example:
    pytest -q tests/kernels/test_user_kernels_sweep9_moving.py
"""

from __future__ import annotations

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_user_kernels_rows import MODES, use


@ts.kernel
def head_products(qkv: torch.Tensor, d: int) -> torch.Tensor:
    """q * k per head of a fused [n, 3 * heads * d] row, written head by head."""
    n, heads = qkv.size(0), qkv.size(1) // (3 * d)
    out = torch.empty([n, heads * d], dtype=qkv.dtype, device=qkv.device)
    for h in ts.grid(heads):
        for tm in ts.tile(n, block_size=32):
            q = qkv[tm, h * d:(h + 1) * d]
            k = qkv[tm, (heads + h) * d:(heads + h + 1) * d]
            out[tm, h * d:(h + 1) * d] = q * k
    return out


@pytest.mark.parametrize("mode", MODES)
def test_head_slices_at_a_grid_index(mode: str, request: pytest.FixtureRequest,
                                     poison_empty: None) -> None:
    use(mode, request)
    for heads, d in [(4, 16), (3, 24)]:  # one kernel for both
        qkv = torch.randn(40, 3 * heads * d, dtype=torch.float64)
        q = qkv.view(40, 3, heads, d)
        assert torch.equal(head_products(qkv, d), (q[:, 0] * q[:, 1]).reshape(40, heads * d))


@ts.kernel
def windows(x: torch.Tensor, starts: torch.Tensor, w: int) -> torch.Tensor:
    out = torch.zeros([x.size(0), w], dtype=x.dtype, device=x.device)
    for i in ts.grid(x.size(0)):
        s = starts[i]
        out[i, :] = x[i, s:s + w]
    return out


@ts.kernel
def pair_sums(a: torch.Tensor, out: torch.Tensor) -> None:
    """out[:, j] = a[:, 2 * j] + a[:, 2 * j + 1]."""
    for tm in ts.tile(a.size(0), block_size=32):
        for tk in ts.tile(a.size(1) // 2, block_size=32):
            v = a[tm, 2 * tk.begin:2 * tk.begin + 64]
            out[tm, tk.begin:tk.begin + 32] = v.view(tm, 32, 2).sum(dim=2)


@pytest.mark.parametrize("mode", MODES)
def test_windows_at_device_starts(mode: str, request: pytest.FixtureRequest,
                                  poison_empty: None) -> None:
    use(mode, request)
    x, starts = torch.randn(5, 100), torch.tensor([0, 3, 50, 68, 80])
    want = torch.stack([x[i, starts[i]:starts[i] + 20] for i in range(5)])
    assert torch.equal(windows(x, starts, 20), want)
    a, out = torch.randn(40, 128, dtype=torch.float64), torch.empty(40, 64, dtype=torch.float64)
    pair_sums(a, out)
    assert torch.equal(out, a.view(40, 64, 2).sum(2))


def test_window_past_the_end_stays_inside_the_tensor(compiled_mode: None) -> None:
    """Row 1's window [90, 110) of a 100-wide view of a 120-wide buffer: columns 100..109
    (inside the buffer, outside the view) are not read; pairs past the end of a 50-wide view
    of the output are not written."""
    buf = torch.randn(2, 120)
    x = buf[:, :100]
    got = windows(x, torch.tensor([0, 90]), 20)
    assert torch.equal(got[0], x[0, :20])
    assert torch.equal(got[1, :10], x[1, 90:]) and not got[1, 10:].any()
    a_buf, out_buf = torch.randn(40, 160), torch.full((40, 80), 7.0)
    a = a_buf[:, :100]  # 50 pairs: the second tile's pairs 50..63 fall past the end
    pair_sums(a, out_buf[:, :50])
    assert torch.equal(out_buf[:, :50], a.reshape(40, 50, 2).sum(2))
    assert (out_buf[:, 50:] == 7.0).all()


@ts.kernel
def bad_window(x: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    out = torch.zeros([x.size(0), 16], dtype=x.dtype, device=x.device)
    for i in ts.grid(x.size(0)):
        out[i, :] = x[i, starts[i]:2 * starts[i]]
    return out


def test_device_bounds_need_a_launch_time_width(compiled_mode: None) -> None:
    with pytest.raises(ts.KernelError) as info:
        bad_window(torch.randn(4, 64), torch.tensor([1, 2, 3, 4]))
    text = str(info.value)
    assert "a device start needs a launch-time width" in text, text
    assert "test_user_kernels_sweep9_moving.py" in text
