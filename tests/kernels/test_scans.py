"""``torch.cumsum`` / ``torch.cumprod`` in device code: along a whole row or column, in float,
half and integer dtypes, compiled (interpreter) and in ref mode, against torch in float64; a
scan along a tiled dimension is refused; the scanned dimension is never a looped reduction."""

from __future__ import annotations

import pytest
import torch

import torchship as ts
from tests.kernels.test_compiler import close, seed
from torchship.kernels import KernelSyntaxError


@ts.kernel
def row_scans(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty([2, x.size(0), x.size(1)], dtype=torch.float32, device=x.device)
    for tm in ts.tile(x.size(0)):
        row = x[tm, :].float()
        out[0, tm, :] = torch.cumsum(row, dim=1)
        out[1, tm, :] = (row * 0.1 + 1.0).cumprod(-1)
    return out


@ts.kernel
def col_cumsum(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for tn in ts.tile(x.size(1)):
        out[:, tn] = x[:, tn].cumsum(0)
    return out


@ts.kernel
def int_cumsum(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty(x.size(), dtype=torch.int64, device=x.device)
    for tm in ts.tile(x.size(0)):
        out[tm, :] = x[tm, :].cumsum(1)
    return out


@ts.kernel
def tiled_scan(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm, tn in ts.tile(x.size()):
        out[tm, tn] = x[tm, tn].cumsum(1)
    return out


@pytest.mark.parametrize("mode", ["compiled_mode", "ref_mode"])
def test_cumsum_cumprod_match_torch(mode: str, request: pytest.FixtureRequest,
                                    poison_empty: None) -> None:
    request.getfixturevalue(mode)
    seed()
    x = torch.randn(37, 90)
    xd = x.double()
    want = torch.stack([xd.cumsum(1), (xd * 0.1 + 1).cumprod(1)])
    close(row_scans(x), want, atol=1e-4, rtol=1e-5)
    close(col_cumsum(x), xd.cumsum(0), atol=1e-4, rtol=1e-5)
    xi = torch.randint(-50, 50, (33, 77), dtype=torch.int32)
    got = int_cumsum(xi)
    assert got.dtype == torch.int64 and torch.equal(got, xi.long().cumsum(1))


def test_half_cumsum_accumulates_in_float32(compiled_mode: None, poison_empty: None) -> None:
    seed()
    x = torch.randn(20, 300).half()
    got = col_cumsum(x)
    assert got.dtype == torch.float16
    close(got, x.double().cumsum(0), atol=2e-2, rtol=2e-3)


def test_scanned_dim_is_never_chunked_and_tiled_scans_are_refused(compiled_mode: None) -> None:
    x = torch.randn(40, 300)
    assert row_scans.bind((x,)).config_space.params["reduction_loops[0]"] == [None]
    with pytest.raises(KernelSyntaxError, match="tiled dimension"):
        tiled_scan(x)
