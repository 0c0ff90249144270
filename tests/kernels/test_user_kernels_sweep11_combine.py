"""Combine functions in Helion's flattened form, ``def combine(left_values, left_indices,
right_values, right_indices)`` for a tuple of two blocks, in both modes against torch eager:
a running argmax by ``ts.associative_scan`` and a segmented prefix sum over sorted ids along
a whole dim. Helion's segment reduction scans within each tile of the launch grid; that
scan is refused naming the atomic form (tested to match in the ports file).

Example:
    pytest -q tests/kernels/test_user_kernels_sweep11_combine.py
"""

from __future__ import annotations

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use


def argmax_combine(left_value: torch.Tensor, left_index: torch.Tensor,
                   right_value: torch.Tensor, right_index: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    take_right = right_value > left_value
    return (torch.where(take_right, right_value, left_value),
            torch.where(take_right, right_index, left_index))


def segment_combine(left_values: torch.Tensor, left_ids: torch.Tensor,
                    right_values: torch.Tensor, right_ids: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.where(left_ids == right_ids, left_values + right_values, right_values), right_ids


@ts.kernel
def running_argmax_and_segments(x: torch.Tensor, ids: torch.Tensor
                                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the index of the running maximum, and the prefix sum restarting where the
    row's sorted segment id changes."""
    m, n = x.size()
    arg = torch.empty([m, n], dtype=torch.int32, device=x.device)
    seg = torch.empty_like(x)
    for tm in ts.tile(m, block_size=32):
        v = x[tm, :]
        pos = torch.cumsum(torch.ones_like(v, dtype=torch.int32), 1) - 1
        _, arg[tm, :] = ts.associative_scan(argmax_combine, (v, pos), dim=1)
        seg[tm, :], _ = ts.associative_scan(segment_combine, (v, ids[tm, :].to(torch.float32)),
                                            dim=1)
    return arg, seg


@pytest.mark.parametrize("mode", MODES)
def test_flattened_combine_functions(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    x = torch.randn(40, 48)
    ids = torch.sort(torch.randint(0, 6, (40, 48)), dim=1)[0]
    arg, seg = running_argmax_and_segments(x, ids)
    run = torch.stack([x[:, :j + 1].argmax(1) for j in range(48)], 1)
    assert torch.equal(arg.long(), run)
    want = torch.zeros(40, 48, dtype=torch.float64)
    for j in range(48):
        same = ids[:, j] == ids[:, j - 1] if j else torch.zeros(40, dtype=torch.bool)
        want[:, j] = x[:, j].double() + torch.where(same, want[:, j - 1], 0.0) if j else \
            x[:, 0].double()
    close(seg, want, atol=1e-4)


@ts.kernel
def segment_scan_per_tile(indices: torch.Tensor, x: torch.Tensor, segments: int) -> torch.Tensor:
    """Helion's segment reduction: a scan within each tile of the grid (refused here)."""
    n, f = x.size()
    out = torch.zeros([segments, f], dtype=x.dtype, device=x.device)
    for te, tf in ts.tile([n, f], block_size=[32, 32]):
        vals = x[te, tf]
        idxs = indices[te]
        nxt = ts.load(indices, [te.index + 1], extra_mask=te.index < n - 1)
        pair = (vals, idxs.float().unsqueeze(1).expand_as(vals))
        summed, _ = ts.associative_scan(segment_combine, pair, dim=0)
        last = (idxs != nxt) | (te.index % te.block_size == te.block_size - 1)
        ts.atomic_add(out, [idxs, tf], torch.where(last.unsqueeze(1), summed, 0.0))
    return out


def test_per_tile_scan_refused_naming_atomics(compiled_mode: None) -> None:
    ids = torch.sort(torch.randint(0, 9, (150,)))[0]
    with pytest.raises(ts.KernelSyntaxError, match="launch grid") as err:
        segment_scan_per_tile(ids, torch.randn(150, 40), 9)
    assert "ts.atomic_add(out, [ids[te], tf], x[te, tf])" in str(err.value)

