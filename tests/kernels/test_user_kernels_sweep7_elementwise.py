"""torch's smaller element-wise functions in device code, as a PyTorch user writes them:
predicates (isnan/isinf/isfinite/signbit, logical_*, torch.gt...), torch.div with
rounding_mode (was silently ignored), fmod/remainder, lerp/addcmul/addcdiv in an Adam step,
xlogy/xlog1py/entr/logit/ndtr, nan_to_num, hypot, copysign, frac, sinc, heaviside,
float_power, shrink/threshold activations, clone/contiguous/detach; NaN propagation of
maximum/minimum/clamp/relu like torch; compiled (Triton interpreter) and reference mode
against torch eager.

Example:
    pytest -q tests/kernels/test_user_kernels_sweep7_elementwise.py
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use


def _edges(n: int) -> torch.Tensor:
    special = torch.tensor([float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1.0, -1.0, 0.5])
    return torch.cat([special, torch.randn(n - len(special)) * 3])


def float_exprs(v: torch.Tensor, w: torch.Tensor) -> list[torch.Tensor]:
    """The same expressions in device code (a helper, inlined) and in torch eager."""
    return [
        torch.isnan(v).float(), v.isinf().float(), torch.isfinite(v).float(),
        torch.signbit(v).float(), torch.isposinf(v).float() - torch.isneginf(v).float(),
        torch.logical_and(v > 0, w > 0).float() + torch.logical_or(v, w).float()
        + torch.logical_not(v).float() + torch.logical_xor(v > 0, w > 0).float(),
        torch.gt(v, w).float() + v.le(w).float() + torch.not_equal(v, w).float(),
        torch.nan_to_num(v), torch.nan_to_num(v, nan=-1.0, posinf=9.0, neginf=-9.0),
        torch.xlogy(v.abs(), w.abs()), torch.special.xlog1py(v, w.abs()),
        torch.special.entr(v), torch.logit(torch.sigmoid(w)), torch.logit(v, eps=1e-3),
        torch.special.ndtr(v), torch.hypot(v, w), torch.copysign(w, v), torch.copysign(v, -2.0),
        torch.frac(v), torch.sinc(v), torch.heaviside(v, w), torch.rad2deg(v) + v.deg2rad(),
        F.softshrink(v, 0.5), F.hardshrink(v, 0.5), F.tanhshrink(w), F.threshold(v, 0.1, 20.0),
        torch.maximum(v, w), torch.minimum(v, -w), v.clamp(-1.0, 2.0), torch.relu(v),
        v.clone() + w.contiguous() - v.detach(), torch.negative(v), torch.sgn(v),
    ]


N_FLOAT = 33


@ts.kernel
def float_zoo(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = torch.empty([N_FLOAT, x.size(0)], dtype=torch.float32, device=x.device)
    for t in ts.tile(x.size(0)):
        vals = float_exprs(x[t], y[t])
        for k in ts.static_range(N_FLOAT):
            out[k, t] = vals[k]
    return out


@pytest.mark.parametrize("mode", MODES)
def test_float_functions_match_torch(mode: str, request: pytest.FixtureRequest,
                                     poison_empty: None) -> None:
    use(mode, request)
    x, y = _edges(200), torch.randn(200)
    got = float_zoo(x, y)
    want = float_exprs(x, y)  # float32 eager: nan_to_num's defaults are the dtype's range
    assert len(want) == N_FLOAT
    for k, w in enumerate(want):
        torch.testing.assert_close(got[k].double(), w.double(), atol=2e-6, rtol=2e-6,
                                   equal_nan=True, msg=lambda m, k=k: f"row {k}: {m}")


@ts.kernel
def divisions(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = torch.empty([6, a.size(0)], dtype=a.dtype, device=a.device)
    for t in ts.tile(a.size(0)):
        u, v = a[t], b[t]
        out[0, t] = torch.div(u, v, rounding_mode="floor")
        out[1, t] = u.div(v, rounding_mode="trunc")
        out[2, t] = torch.fmod(u, v)
        out[3, t] = torch.remainder(u, v)
        out[4, t] = torch.floor_divide(u, v)
        out[5, t] = u.fmod(3) + torch.divide(u, 7, rounding_mode="trunc")
    return out


@pytest.mark.parametrize("mode", MODES)
def test_division_rounding_modes(mode: str, request: pytest.FixtureRequest,
                                 poison_empty: None) -> None:
    use(mode, request)
    for dtype in (torch.int32, torch.int16, torch.float32):
        a = (torch.randn(300) * 50).to(dtype)
        b = (torch.randn(300) * 8).to(dtype)
        b = torch.where(b == 0, torch.ones_like(b), b)
        want = torch.stack([torch.div(a, b, rounding_mode="floor"),
                            a.div(b, rounding_mode="trunc"), torch.fmod(a, b),
                            torch.remainder(a, b), torch.floor_divide(a, b),
                            a.fmod(3) + torch.divide(a, 7, rounding_mode="trunc")])
        got = divisions(a, b)
        if dtype.is_floating_point:
            close(got, want, atol=1e-4, rtol=1e-5)
        else:
            assert torch.equal(got, want), dtype


@ts.kernel
def adam_step(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, lr: float,
              beta1: float, beta2: float, eps: float, step: int) -> None:
    """One fused Adam step, in place, written with torch's optimizer arithmetic."""
    bias1 = 1 - beta1 ** step
    bias2 = 1 - beta2 ** step
    for t in ts.tile(p.size(0)):
        grad = g[t]
        m_new = torch.lerp(m[t], grad, 1 - beta1)
        v_new = torch.addcmul(v[t] * beta2, grad, grad, value=1 - beta2)
        denom = (v_new / bias2).sqrt() + eps
        p[t] = torch.addcdiv(p[t], m_new, denom, value=-lr / bias1)
        m[t] = m_new
        v[t] = v_new


@pytest.mark.parametrize("mode", MODES)
def test_adam_step_matches_torch_optim(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    p0 = torch.randn(500)
    param = torch.nn.Parameter(p0.clone().double())
    opt = torch.optim.Adam([param], lr=1e-2, betas=(0.9, 0.99), eps=1e-8)
    p, m, v = p0.clone(), torch.zeros(500), torch.zeros(500)
    for step in range(1, 4):
        grad = torch.randn(500)
        param.grad = grad.double()
        opt.step()
        assert adam_step(p, grad, m, v, 1e-2, 0.9, 0.99, 1e-8, step) is None
    close(p, param.detach(), atol=1e-6, rtol=1e-6)
    close(m, opt.state[param]["exp_avg"], atol=1e-6, rtol=1e-6)


@ts.kernel
def int_predicates(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty([4, x.size(0)], dtype=torch.bool, device=x.device)
    for t in ts.tile(x.size(0)):
        v = x[t]
        out[0, t] = torch.isnan(v)
        out[1, t] = torch.isfinite(v)
        out[2, t] = v.signbit()
        out[3, t] = torch.logical_not(v)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_integer_predicates(mode: str, request: pytest.FixtureRequest,
                            poison_empty: None) -> None:
    use(mode, request)
    x = torch.randint(-3, 4, (100,), dtype=torch.int16)
    want = torch.stack([torch.isnan(x), torch.isfinite(x), x.signbit(), torch.logical_not(x)])
    assert torch.equal(int_predicates(x), want)


@ts.kernel
def running_extremes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                               torch.Tensor]:
    max_v, min_v = torch.empty_like(x), torch.empty_like(x)
    max_i = torch.empty(x.shape, dtype=torch.int64, device=x.device)
    min_i = torch.empty(x.shape, dtype=torch.int64, device=x.device)
    for tm in ts.tile(x.size(0)):
        row = x[tm, :]
        best = torch.cummax(row, dim=1)
        max_v[tm, :] = best.values
        max_i[tm, :] = best.indices
        min_v[tm, :], min_i[tm, :] = row.cummin(1)
    return max_v, max_i, min_v, min_i


@pytest.mark.parametrize("mode", MODES)
def test_cummax_cummin_ties_and_nan_like_torch(mode: str, request: pytest.FixtureRequest,
                                               poison_empty: None) -> None:
    use(mode, request)
    for dtype in (torch.float32, torch.float16, torch.int16):
        x = (torch.randn(9, 37) * 3).round().to(dtype)  # many ties: the later index wins
        if dtype.is_floating_point:
            x[2, 5] = x[2, 9] = x[3, 0] = float("nan")
        max_v, max_i, min_v, min_i = running_extremes(x)
        want_max, want_min = torch.cummax(x, 1), torch.cummin(x, 1)
        assert torch.equal(max_v.nan_to_num(7), want_max.values.nan_to_num(7))
        assert torch.equal(min_v.nan_to_num(7), want_min.values.nan_to_num(7))
        assert torch.equal(max_i, want_max.indices) and torch.equal(min_i, want_min.indices)
