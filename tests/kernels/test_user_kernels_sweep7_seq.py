"""Sequence, state and image kernels a new user writes: a Mamba-style selective scan
(``ts.associative_scan`` over (decay, value) pairs per chunk, carried across chunks), an RNN
recurrence along a scalar loop, Mamba's causal depthwise conv1d with a left halo, a 3x3
depthwise conv by index math and by nine shifted host views (``ts.static_range``), a conv as
a sum of shifted matmuls over NHWC, and a bilinear 2x upsample; compiled (Triton
interpreter) and reference mode against torch eager in float64.

Example:
    pytest -q tests/kernels/test_user_kernels_sweep7_seq.py
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use

Pair = tuple[torch.Tensor, torch.Tensor]


def recurrence(a: Pair, b: Pair) -> Pair:
    """h = decay * h + value, composed: (d1, v1) then (d2, v2) is (d1 d2, v1 d2 + v2)."""
    d1, v1 = a
    d2, v2 = b
    return d1 * d2, v1 * d2 + v2


@ts.kernel
def selective_scan(x: torch.Tensor, delta: torch.Tensor, a: torch.Tensor, b_in: torch.Tensor,
                   c_out: torch.Tensor) -> torch.Tensor:
    """h_t = exp(delta_t A) h_{t-1} + delta_t x_t B_t, y_t = <C_t, h_t>; x [B, L, D],
    A [D, N], B/C [B, L, N]: a scan inside each 32-step chunk, the state carried across."""
    bsz, length, d = x.shape
    n = a.size(1)
    y = torch.empty_like(x)
    for ib, td in ts.tile([bsz, d], block_size=[1, 16]):
        h = ts.zeros([td, n], dtype=torch.float32)
        for tl in ts.tile(length, block_size=32):
            dt = delta[ib.begin, tl, td]
            decay = torch.exp(dt[:, :, None] * a[td, :][None, :, :])
            value = (dt * x[ib.begin, tl, td])[:, :, None] * b_in[ib.begin, tl, :][:, None, :]
            run_decay, run_value = ts.associative_scan(recurrence, (decay, value), dim=0,
                                                       other=(1.0, 0.0))
            states = run_value + run_decay * h[None, :, :]
            y[ib.begin, tl, td] = (states * c_out[ib.begin, tl, :][:, None, :]).sum(dim=2)
            total_decay, total_value = ts.reduce(recurrence, (decay, value), dim=0,
                                                 other=(1.0, 0.0))
            h = total_decay * h + total_value
    return y


@ts.kernel
def rnn(x: torch.Tensor, w: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    bsz, length, d = x.shape
    out = torch.empty_like(x)
    for ib, td in ts.tile([bsz, d], block_size=[1, 32]):
        h = h0[ib.begin, td].float()
        wd = w[td].float()
        for t in range(length):
            h = torch.tanh(wd * h + x[ib.begin, t, td].float())
            out[ib.begin, t, td] = h.to(out.dtype)
    return out


@ts.kernel
def causal_conv1d(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """silu(depthwise conv over time, kernel K, K - 1 zeros of left padding); x [B, L, D]."""
    bsz, length, d = x.shape
    k = w.size(1)
    out = torch.empty_like(x)
    for ib, tl, td in ts.tile([bsz, length, d], block_size=[1, 32, 32]):
        acc = ts.zeros([tl, td], dtype=torch.float32) + bias[td][None, :].float()
        for j in range(k):
            src = tl.index - (k - 1) + j
            v = x[ib.begin, torch.clamp(src, min=0), td].float()
            acc = acc + torch.where(src[:, None] >= 0, v, 0.0) * w[td, j][None, :].float()
        out[ib.begin, tl, td] = F.silu(acc).to(out.dtype)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_selective_scan_rnn_and_short_conv(mode: str, request: pytest.FixtureRequest,
                                           poison_empty: None) -> None:
    use(mode, request)
    bsz, length, d, n = 1, 40, 20, 4
    x, delta = torch.randn(bsz, length, d), torch.rand(bsz, length, d) * 0.5
    a, b_in, c_out = -torch.rand(d, n) * 2, torch.randn(bsz, length, n), torch.randn(bsz, length, n)
    h = torch.zeros(bsz, d, n, dtype=torch.float64)
    ys = []
    xd, dd, ad, bd, cd = (t.double() for t in (x, delta, a, b_in, c_out))
    for t in range(length):
        h = torch.exp(dd[:, t, :, None] * ad) * h + (dd[:, t] * xd[:, t])[:, :, None] * bd[:, t, None, :]
        ys.append((h * cd[:, t, None, :]).sum(-1))
    close(selective_scan(x, delta, a, b_in, c_out), torch.stack(ys, 1), atol=1e-4, rtol=1e-4)

    x, w, h0 = torch.randn(2, 9, 40), torch.randn(40), torch.randn(2, 40)
    h, hs = h0.double(), []
    for t in range(9):
        h = torch.tanh(w.double() * h + x[:, t].double())
        hs.append(h)
    close(rnn(x, w, h0), torch.stack(hs, 1))

    x, w, bias = torch.randn(2, 50, 40), torch.randn(40, 4), torch.randn(40)
    want = F.conv1d(x.double().transpose(1, 2), w.double()[:, None, :], bias.double(),
                    padding=3, groups=40)[..., :50]
    close(causal_conv1d(x, w, bias), F.silu(want).transpose(1, 2))


@ts.kernel
def depthwise3x3(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [N, C, H, W], w [C, 3, 3], zero padding 1: neighbours by index math."""
    n, c, h, wd = x.shape
    out = torch.empty_like(x)
    for inc, th, tw in ts.tile([n * c, h, wd], block_size=[1, 16, 16]):
        ni, ci = inc.begin // c, inc.begin % c
        acc = ts.zeros([th, tw], dtype=torch.float32)
        for dy in range(3):
            for dx in range(3):
                ys, xs = th.index + dy - 1, tw.index + dx - 1
                inside = ((ys >= 0) & (ys < h))[:, None] & ((xs >= 0) & (xs < wd))[None, :]
                v = x[ni, ci, torch.clamp(ys, 0, h - 1)[:, None], torch.clamp(xs, 0, wd - 1)[None, :]]
                acc = acc + torch.where(inside, v, 0.0) * w[ci, dy, dx]
        out[ni, ci, th, tw] = acc
    return out


@ts.kernel
def depthwise3x3_views(x_padded: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The same on a padded input through its nine shifted views, picked by an unrolled
    loop (a python int indexes the host list)."""
    n, c, hp, wp = x_padded.shape
    h, wd = hp - 2, wp - 2
    out = torch.empty([n, c, h, wd], dtype=x_padded.dtype, device=x_padded.device)
    views = [x_padded[:, :, dy:dy + h, dx:dx + wd] for dy in range(3) for dx in range(3)]
    for inc, th, tw in ts.tile([n * c, h, wd], block_size=[1, 16, 16]):
        ni, ci = inc.begin // c, inc.begin % c
        acc = ts.zeros([th, tw], dtype=torch.float32)
        for k in ts.static_range(len(views)):
            acc = acc + views[k][ni, ci, th, tw] * w[ci, k // 3, k % 3]
        out[ni, ci, th, tw] = acc
    return out


@ts.kernel
def conv3x3_nhwc(x_padded: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [N, H+2, W+2, Cin] (padded), w [3, 3, Cin, Cout]: nine shifted matmuls per row
    block, no im2col buffer."""
    n, hp, wp, cin = x_padded.shape
    h, wd = hp - 2, wp - 2
    out = torch.empty([n, h, wd, w.size(3)], dtype=torch.float32, device=x_padded.device)
    for ni, ty, tx, to in ts.tile([n, h, wd, w.size(3)], block_size=[1, 1, 16, 16]):
        acc = ts.zeros([tx, to], dtype=torch.float32)
        for dy in range(3):
            for dx in range(3):
                for tc in ts.tile(cin, block_size=16):
                    a = x_padded[ni.begin, ty.begin + dy, tx.index + dx, tc]
                    acc = ts.dot(a, w[dy, dx, tc, to], acc=acc)
        out[ni.begin, ty.begin, tx, to] = acc
    return out


@ts.kernel
def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear, align_corners=False: [NC, H, W] -> [NC, 2H, 2W]."""
    nc, h, wd = x.shape
    out = torch.empty([nc, 2 * h, 2 * wd], dtype=x.dtype, device=x.device)
    for ib, ty, tx in ts.tile([nc, 2 * h, 2 * wd], block_size=[1, 16, 32]):
        sy = torch.clamp((ty.index.float() + 0.5) * 0.5 - 0.5, min=0.0)
        sx = torch.clamp((tx.index.float() + 0.5) * 0.5 - 0.5, min=0.0)
        y0, x0 = sy.to(torch.int32), sx.to(torch.int32)
        y1, x1 = torch.clamp(y0 + 1, max=h - 1), torch.clamp(x0 + 1, max=wd - 1)
        fy, fx = (sy - y0.float())[:, None], (sx - x0.float())[None, :]
        b = ib.begin
        top = x[b, y0[:, None], x0[None, :]] * (1 - fx) + x[b, y0[:, None], x1[None, :]] * fx
        bottom = x[b, y1[:, None], x0[None, :]] * (1 - fx) + x[b, y1[:, None], x1[None, :]] * fx
        out[b, ty, tx] = (top * (1 - fy) + bottom * fy).to(x.dtype)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_image_kernels(mode: str, request: pytest.FixtureRequest, poison_empty: None) -> None:
    use(mode, request)
    x, w = torch.randn(1, 2, 20, 37), torch.randn(2, 3, 3)
    want = F.conv2d(x.double(), w.double()[:, None], padding=1, groups=2)
    close(depthwise3x3(x, w), want)
    close(depthwise3x3_views(F.pad(x, (1, 1, 1, 1)), w), want)

    x, w = torch.randn(1, 5, 20, 24), torch.randn(3, 3, 24, 20)
    want = F.conv2d(x.double().permute(0, 3, 1, 2), w.double().permute(3, 2, 0, 1), padding=1)
    close(conv3x3_nhwc(F.pad(x, (0, 0, 1, 1, 1, 1)), w), want.permute(0, 2, 3, 1),
          atol=1e-4, rtol=1e-4)

    x = torch.randn(3, 13, 21)
    want = F.interpolate(x.double()[None], scale_factor=2, mode="bilinear", align_corners=False)
    close(upsample2x(x), want[0])


@ts.kernel
def views_by_loop_index(x: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(x)
    views = [x, x * 2]
    for t in ts.tile(x.size(0)):
        for k in range(2):
            out[t] = out[t] + views[k][t]
    return out


def test_a_device_index_into_a_host_list_points_to_static_range(compiled_mode: None) -> None:
    with pytest.raises(ts.KernelSyntaxError, match="only python ints pick an entry") as info:
        views_by_loop_index(torch.randn(8))
    assert "ts.static_range(n)" in str(info.value)


@ts.kernel
def taps(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    k = w.size(0)
    for t in ts.tile(x.size(0)):
        acc = ts.zeros([t], dtype=torch.float32)
        for j in ts.static_range(k):
            acc = acc + x[t] * w[j] ** (j + 1)  # j is a python int: a constant exponent
        out[t] = acc
    return out


@ts.kernel
def taps_device_bound(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        acc = ts.zeros([t], dtype=torch.float32)
        for j in ts.static_range(w.size(0)):
            acc = acc + x[t] * w[j]
        out[t] = acc
    return out


@pytest.mark.parametrize("mode", MODES)
def test_static_range_is_specialised_on_its_bound(mode: str, request: pytest.FixtureRequest,
                                                  poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(70)
    for n in (3, 5):
        w = torch.randn(n)
        want = x.double() * sum(w.double()[j] ** (j + 1) for j in range(n))
        close(taps(x, w), want)


def test_static_range_bound_read_on_the_device_is_refused(compiled_mode: None) -> None:
    with pytest.raises(ts.KernelTypeError, match="compile-time int") as info:
        taps_device_bound(torch.randn(8), torch.randn(3))
    assert "k = w.size(1)" in str(info.value)


@ts.kernel
def bucketize(x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """torch.bucketize by a binary search unrolled 12 times (edges up to 4096 long)."""
    n = edges.size(0)
    out = torch.empty(x.shape, dtype=torch.int64, device=x.device)
    for t in ts.tile(x.size(0)):
        v = x[t]
        lo = ts.zeros([t], dtype=torch.int64)
        hi = ts.full([t], n, dtype=torch.int64)
        for _ in ts.static_range(12):
            mid = (lo + hi) // 2
            right = (edges[torch.clamp(mid, max=n - 1)] < v) & (lo < hi)
            lo = torch.where(right, mid + 1, lo)
            hi = torch.where(right | (lo >= hi), hi, mid)
        out[t] = lo
    return out


@pytest.mark.parametrize("mode", MODES)
def test_binary_search_with_an_unrolled_loop(mode: str, request: pytest.FixtureRequest,
                                             poison_empty: None) -> None:
    use(mode, request)
    edges = torch.sort(torch.randn(100)).values
    x = torch.cat([torch.randn(300) * 2, edges[:5], torch.tensor([-1e9, 1e9])])
    assert torch.equal(bucketize(x, edges), torch.bucketize(x, edges))
