"""Quantization and positional kernels written the way a Helion user would: per-row int8 and
fp8 quantization (torch.round, casts to float8), a histogram with atomic adds of a constant,
rotary embeddings with offset tiles, a sliding-window reduction whose inner tile range depends
on the outer tile, and top-k by repeated max; both modes, against torch eager.

Example:
    pytest -q tests/kernels/test_user_kernels_quant.py
"""

from __future__ import annotations

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use


@ts.kernel
def rounding(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty([3, x.size(0)], dtype=x.dtype, device=x.device)
    for t in ts.tile(x.size(0)):
        v = x[t]
        out[0, t] = torch.round(v)
        out[1, t] = v.round(decimals=2)
        out[2, t] = torch.round(v * 0.5)
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_round_half_to_even(mode: str, dtype: torch.dtype, request: pytest.FixtureRequest,
                            poison_empty: None) -> None:
    use(mode, request)
    ties = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 2.0**23 + 1, -7.0, 3.75])
    x = torch.cat([ties, torch.randn(300) * 50]).to(dtype)
    want = torch.stack([torch.round(x), x.round(decimals=2), torch.round(x * 0.5)])
    got = rounding(x)
    assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
    tol = 1e-5 if dtype == torch.float32 else 1e-3  # fp16: x * 100 rounds to one ulp
    close(got[1], want[1], atol=tol, rtol=tol)


@ts.kernel
def quant_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m, n = x.size()
    q = torch.empty([m, n], dtype=torch.int8, device=x.device)
    scale = torch.empty([m], dtype=torch.float32, device=x.device)
    for tm in ts.tile(m):
        row = x[tm, :].to(torch.float32)
        s = row.abs().amax(dim=1) / 127.0
        q[tm, :] = torch.round(row / s[:, None]).clamp(-127, 127).to(torch.int8)
        scale[tm] = s
    return q, scale


@ts.kernel
def quant_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m, n = x.size()
    q = torch.empty([m, n], dtype=torch.float8_e4m3fn, device=x.device)
    q5 = torch.empty([m, n], dtype=torch.float8_e5m2, device=x.device)
    scale = torch.empty([m], dtype=torch.float32, device=x.device)
    for tm in ts.tile(m):
        row = x[tm, :].to(torch.float32)
        s = torch.clamp(row.abs().amax(dim=1), min=1e-12) / 448.0
        q[tm, :] = (row / s[:, None]).to(torch.float8_e4m3fn)
        q5[tm, :] = row.to(torch.float8_e5m2)
        scale[tm] = s
    return q, q5, scale


@pytest.mark.parametrize("mode", MODES)
def test_int8_and_fp8_quantization(mode: str, request: pytest.FixtureRequest,
                                   poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(37, 70)
    x[:, :10] *= 1e-4  # fp8 subnormals after scaling
    q, scale = quant_int8(x)
    s = x.abs().amax(1) / 127.0
    close(scale, s)
    assert torch.equal(q, torch.round(x / s[:, None]).clamp(-127, 127).to(torch.int8))
    q8, q5, scale8 = quant_fp8(x)
    s8 = torch.clamp(x.abs().amax(1), min=1e-12) / 448.0
    close(scale8, s8)
    # float32 casts round to nearest even, bit for bit like torch (also subnormals)
    assert torch.equal(q8.float(), (x / s8[:, None]).to(torch.float8_e4m3fn).float())
    assert torch.equal(q5.float(), x.to(torch.float8_e5m2).float())


@ts.kernel
def histogram(x: torch.Tensor, bins: int) -> torch.Tensor:
    hist = torch.zeros([bins], dtype=torch.int32, device=x.device)
    for t in ts.tile(x.size(0)):
        b = torch.clamp((x[t] * bins).to(torch.int32), 0, bins - 1)
        ts.atomic_add(hist, [b], 1)
    return hist


@ts.kernel
def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of ``[s, d]``: the halves are tiles offset by ``d // 2``."""
    s, d = x.size()
    half = d // 2
    out = torch.empty_like(x)
    for tsq, th in ts.tile([s, half]):
        x1 = x[tsq, th]
        x2 = x[tsq, th.index + half]
        c, sn = cos[tsq, th], sin[tsq, th]
        out[tsq, th] = x1 * c - x2 * sn
        out[tsq, th.index + half] = x2 * c + x1 * sn
    return out


@pytest.mark.parametrize("mode", MODES)
def test_histogram_and_rope(mode: str, request: pytest.FixtureRequest,
                            poison_empty: None) -> None:
    use(mode, request)
    u = torch.rand(1000)
    assert torch.equal(histogram(u, 10), torch.histc(u, 10, 0, 1).to(torch.int32))
    x, cos, sin = torch.randn(37, 64), torch.randn(37, 32), torch.randn(37, 32)
    x1, x2 = x[:, :32].double(), x[:, 32:].double()
    c, s = cos.double(), sin.double()
    close(rope(x, cos, sin), torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], 1))


@ts.kernel
def sliding_window_scores(x: torch.Tensor, window: int) -> torch.Tensor:
    """``sum_j x_i . x_j`` over the ``window`` keys up to i: the key tiles start at
    ``max(0, tm.begin - window + 1)`` and end at ``tm.end``."""
    n = x.size(0)
    out = torch.empty([n], dtype=torch.float32, device=x.device)
    for tm in ts.tile(n):
        acc = ts.zeros([tm], dtype=torch.float32)
        for tn in ts.tile(max(0, tm.begin - window + 1), tm.end):
            s = x[tm, :] @ x[tn, :].T
            ok = (tn.index[None, :] <= tm.index[:, None]) & \
                (tn.index[None, :] > tm.index[:, None] - window)
            acc = acc + torch.where(ok, s, 0.0).sum(dim=1)
        out[tm] = acc
    return out


@ts.kernel
def topk_by_max(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    m = x.size(0)
    vals = torch.empty([m, k], dtype=x.dtype, device=x.device)
    idx = torch.empty([m, k], dtype=torch.int64, device=x.device)
    for tm in ts.tile(m):
        row = x[tm, :]
        for j in range(k):
            v, i = torch.max(row, dim=1)
            vals[tm, j] = v
            idx[tm, j] = i
            row = torch.where(row == v[:, None], float("-inf"), row)
    return vals, idx


@pytest.mark.parametrize("mode", MODES)
def test_window_bounds_and_topk(mode: str, request: pytest.FixtureRequest,
                                poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(70, 16)
    xd = x.double()
    i = torch.arange(70)
    ok = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - 5)
    close(sliding_window_scores(x, 5), torch.where(ok, xd @ xd.T, 0.0).sum(1), atol=1e-4)
    y = torch.randn(37, 70)
    vals, idx = topk_by_max(y, 3)
    want = torch.topk(y, 3, dim=1)
    close(vals, want.values, atol=0, rtol=0)
    assert torch.equal(idx, want.indices)
