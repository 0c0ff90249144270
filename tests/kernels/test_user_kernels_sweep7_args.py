"""Argument forms a new user passes to their own kernels: transposed, strided, expanded
(stride-0) and channels-last views, 0-size and 1-element dims, float64/int16/uint8/bool
tensors, python scalars and 0-d tensors, keyword arguments with defaults, tuple and ``None``
returns, one kernel called with new strides and new dtypes in one process; torch's bool
arithmetic (``True + True`` is True) and its three-tier type promotion for 0-d blocks;
compiled (Triton interpreter) and reference mode against torch eager.

Example:
    pytest -q tests/kernels/test_user_kernels_sweep7_args.py
"""

from __future__ import annotations

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use


@ts.kernel
def axpy(x: torch.Tensor, y: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    for tm, tn in ts.tile(x.size()):
        out[tm, tn] = x[tm, tn] + alpha * y[tm, tn]
    return out


@ts.kernel
def row_sums(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty([x.size(0)], dtype=x.dtype, device=x.device)
    for tm in ts.tile(x.size(0)):
        out[tm] = x[tm, :].sum(dim=1)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_views_and_degenerate_shapes(mode: str, request: pytest.FixtureRequest,
                                     poison_empty: None) -> None:
    """One kernel, one process: each stride pattern must get a specialisation of its own."""
    use(mode, request)
    base = torch.randn(37, 140)
    y = torch.randn(37, 70)
    cases = [
        (base[:, :70], y, {}),                            # row stride 140
        (torch.randn(70, 37).t(), y, {"alpha": 2.0}),     # transposed
        (base[:, ::2], y, {"alpha": 0.5}),                # step-2 columns
        (torch.randn(1, 70).expand(37, 70), torch.randn(37, 1).expand(37, 70), {}),  # stride 0
        (torch.randn(0, 70), torch.randn(0, 70), {}),
        (torch.randn(5, 0), torch.randn(5, 0), {}),
        (torch.randn(1, 1), torch.randn(1, 1), {"alpha": -3.0}),
        (torch.randn(1, 33), torch.randn(1, 33), {}),
    ]
    for x, yy, kw in cases:
        close(axpy(x, yy, **kw), x.double() + kw.get("alpha", 1.0) * yy.double())
    sq = torch.randn(40, 40).double()
    for x in (sq, sq.t(), sq[:, ::2], sq[::2], torch.randn(40, 1).double().expand(40, 40),
              torch.randn(0, 5).double(), torch.randn(3, 0).double()):
        close(row_sums(x), x.sum(1), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_dtypes_in_one_process(mode: str, request: pytest.FixtureRequest,
                               poison_empty: None) -> None:
    use(mode, request)
    for dtype in (torch.float64, torch.int16, torch.uint8, torch.int32, torch.int64):
        x = (torch.randn(17, 33) * 10).to(dtype)
        y = (torch.randn(17, 33) * 10).to(dtype)
        alpha = 2.0 if dtype.is_floating_point else 2
        got = axpy(x, y, alpha)
        assert got.dtype == dtype
        assert torch.equal(got, x + alpha * y)  # integers wrap like torch's
    xi = torch.randint(-100, 100, (40, 40), dtype=torch.int16)
    assert torch.equal(row_sums(xi), xi.sum(1).to(torch.int16))
    a, b = torch.rand(17, 33) > 0.5, torch.rand(17, 33) > 0.5
    assert torch.equal(axpy(a, b, True), a + True * b)  # logical or / and, not wrapping int1


@ts.kernel
def bool_ops(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m, n = a.shape
    logic = torch.empty([4, m, n], dtype=torch.bool, device=a.device)
    count = torch.empty([m], dtype=torch.int64, device=a.device)
    for tm in ts.tile(m):
        u, v = a[tm, :], b[tm, :]
        logic[0, tm, :] = u + v
        logic[1, tm, :] = u * v
        logic[2, tm, :] = torch.maximum(u, v)
        logic[3, tm, :] = torch.minimum(u, v) + False
        count[tm] = (u + v).sum(dim=1)
    return logic, count


@pytest.mark.parametrize("mode", MODES)
def test_bool_arithmetic_is_logical(mode: str, request: pytest.FixtureRequest,
                                    poison_empty: None) -> None:
    use(mode, request)
    a, b = torch.rand(37, 50) > 0.5, torch.rand(37, 50) > 0.5
    logic, count = bool_ops(a, b)
    assert torch.equal(logic, torch.stack([a + b, a * b, torch.maximum(a, b), a & b]))
    assert torch.equal(count, (a | b).sum(1))


@ts.kernel
def bool_sub(a: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(a)
    for t in ts.tile(a.size(0)):
        out[t] = a[t] - a[t]
    return out


def test_bool_subtraction_is_refused_like_torch(compiled_mode: None) -> None:
    with pytest.raises(ts.KernelTypeError, match="`-` of two bools") as info:
        bool_sub(torch.ones(4, dtype=torch.bool))
    assert "a ^ b" in str(info.value) and "out[t] = a[t] - a[t]" in str(info.value)


@ts.kernel
def scaled(x: torch.Tensor, s: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        out[t] = x[t] * s + torch.exp(shift) - shift
    return out


@pytest.mark.parametrize("mode", MODES)
def test_zero_dim_tensor_arguments_promote_like_torch(mode: str, request: pytest.FixtureRequest,
                                                      poison_empty: None) -> None:
    """A 0-d tensor is read as one element; it is weaker than blocks with dims (float16
    block x float64 0-d stays float16) but lifts an int block to its own float64."""
    use(mode, request)
    s = torch.tensor(0.3, dtype=torch.float64)
    shift = torch.tensor(-0.5)
    for x in (torch.randn(50), torch.randn(50).half(), torch.arange(50, dtype=torch.int32)):
        want = x * s + torch.exp(shift) - shift
        got = scaled(x, s, shift)
        assert got.dtype == x.dtype
        if x.dtype == torch.int32:  # float64 work then truncation into the int output
            assert torch.equal(got, want.to(torch.int32))
        else:
            close(got, want, atol=1e-3 if x.dtype == torch.float16 else 1e-6)


@ts.kernel
def scale_(x: torch.Tensor, s: float) -> None:
    for t in ts.tile(x.size(0)):
        x[t] = x[t] * s


@ts.kernel
def shifted(x: torch.Tensor, *, shift: int = 1, clamp: bool = False) -> tuple[
        torch.Tensor, torch.Tensor]:
    a = torch.empty_like(x)
    b = torch.empty(x.shape, dtype=torch.bool, device=x.device)
    for t in ts.tile(x.size(0)):
        v = x[t] + shift
        if clamp:
            v = v.clamp(min=0)
        a[t] = v
        b[t] = v > 0
    return a, b


@pytest.mark.parametrize("mode", MODES)
def test_in_place_none_return_and_keyword_defaults(mode: str, request: pytest.FixtureRequest,
                                                   poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(100)
    want = x * 3
    assert scale_(x, 3.0) is None
    close(x, want)
    strided = torch.randn(200)[::2]
    want = strided * 2
    scale_(strided, 2.0)
    close(strided, want)
    for dtype in (torch.float32, torch.int16, torch.uint8):
        x = (torch.randn(77) * 10).to(dtype)
        a, b = shifted(x, shift=3, clamp=True)
        w = (x + 3).clamp(min=0)
        assert torch.equal(a, w) and torch.equal(b, w > 0)
        a, b = shifted(x)
        assert torch.equal(a, x + 1) and torch.equal(b, x + 1 > 0)


@ts.kernel
def nhwc_norm(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-5) -> tuple[
        torch.Tensor, torch.Tensor]:
    """Per-pixel normalisation over channels, and per-channel means, of a channels-last
    NCHW tensor read through its [N*H*W, C] view."""
    n, c, h, wd = x.shape
    out = torch.empty_like(x)
    rows = x.permute(0, 2, 3, 1).reshape(n * h * wd, c)
    out_rows = out.permute(0, 2, 3, 1).reshape(n * h * wd, c)
    for tr in ts.tile(n * h * wd):
        v = rows[tr, :].float()
        mu = v.mean(dim=1, keepdim=True)
        var = ((v - mu) ** 2).mean(dim=1, keepdim=True)
        out_rows[tr, :] = ((v - mu) * torch.rsqrt(var + eps) * w[None, :]).to(x.dtype)
    means = torch.empty([c], dtype=torch.float32, device=x.device)
    for tc in ts.tile(c):
        acc = ts.zeros([tc], dtype=torch.float32)
        for tr in ts.tile(n * h * wd):
            acc = acc + rows[tr, tc].float().sum(dim=0)
        means[tc] = acc / (n * h * wd)
    return out, means


@pytest.mark.parametrize("mode", MODES)
def test_channels_last_inputs(mode: str, request: pytest.FixtureRequest,
                              poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(2, 40, 6, 7).to(memory_format=torch.channels_last)
    w = torch.randn(40)
    out, means = nhwc_norm(x, w)
    xd = x.double()
    mu, var = xd.mean(1, keepdim=True), xd.var(1, unbiased=False, keepdim=True)
    close(out, (xd - mu) / torch.sqrt(var + 1e-5) * w.double()[None, :, None, None],
          atol=1e-5, rtol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)
    close(means, xd.mean((0, 2, 3)))


@ts.kernel
def first_elements(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``v[0]`` on a size-1 block drops its last dim: a 0-d value stored at a scalar index."""
    firsts = torch.empty([x.size(0)], dtype=x.dtype, device=x.device)
    flags = torch.empty([m.size(0)], dtype=torch.bool, device=x.device)
    for i in ts.grid(x.size(0)):
        row = x[i, :]
        best = row.amax(dim=0, keepdim=True)
        firsts[i] = best[0]
        flags[i] = (m[i, :].sum(dim=0, keepdim=True) > 2)[0]
    return firsts, flags


@pytest.mark.parametrize("mode", MODES)
def test_dropping_the_last_dim_of_a_block(mode: str, request: pytest.FixtureRequest,
                                          poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(9, 30).to(torch.float16)
    m = torch.randint(0, 2, (9, 5), dtype=torch.int8)
    firsts, flags = first_elements(x, m)
    assert torch.equal(firsts, x.amax(1)) and torch.equal(flags, m.sum(1) > 2)


@ts.kernel
def masked_scale(x: torch.Tensor, s: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``.item()`` as a PyTorch user writes it: a 0-d value that promotes like a number."""
    out = torch.empty_like(x)
    for i in ts.grid(x.size(0)):
        n = lengths[i].item()
        for t in ts.tile(x.size(1)):
            out[i, t] = torch.where(t.index < n, x[i, t] * s.item(), 0)
    return out


@ts.kernel
def item_of_a_row(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        out[t] = x[t].item()
    return out


@pytest.mark.parametrize("mode", MODES)
def test_item_is_a_weak_number(mode: str, request: pytest.FixtureRequest,
                               poison_empty: None) -> None:
    use(mode, request)
    lengths = torch.tensor([50, 3, 0, 20])
    s = torch.tensor(2.5, dtype=torch.float64)
    for x in (torch.randn(4, 50), torch.randn(4, 50).half()):
        want = torch.where(torch.arange(50)[None] < lengths[:, None], x * s.item(), 0)
        got = masked_scale(x, s, lengths)
        assert got.dtype == x.dtype and torch.equal(got, want)


def test_item_of_a_block_is_refused(compiled_mode: None) -> None:
    with pytest.raises(ts.KernelTypeError, match="only a 0-d value is one number") as info:
        item_of_a_row(torch.randn(8))
    assert "lengths[i].item()" in str(info.value)


@ts.kernel
def plus_one(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        out[t] = x[t] + 1
    return out


def test_complex_and_float8_arithmetic_are_refused_with_the_way_around(
        compiled_mode: None) -> None:
    with pytest.raises(ts.KernelTypeError, match="complex tensors are not supported") as info:
        plus_one(torch.randn(5, dtype=torch.complex64))
    assert "torch.view_as_real(x)" in str(info.value)
    with pytest.raises(ts.KernelTypeError, match="arithmetic on torch.float8_e4m3fn") as info:
        plus_one(torch.randn(5).to(torch.float8_e4m3fn))
    assert "x[t].float()" in str(info.value) and "out[t] = x[t] + 1" in str(info.value)
