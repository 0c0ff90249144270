"""Special functions in device code — ``erfc``, ``erfinv``, ``lgamma``, ``digamma`` (and the
``torch.special``/``math``/method spellings) — written without libdevice: accuracy against
torch float64 over wide ranges and at the edge values (±0, ±1, poles, ±inf, nan, underflow),
kernels that use them (an inverse-CDF normal sampler, a Poisson negative log-likelihood, a
Beta log-density with its digamma gradient), folding on python numbers, and reference mode.

Example:
    pytest -q tests/kernels/test_user_kernels_sweep7_math.py
"""

from __future__ import annotations

import math

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use

FUNCS = (torch.erfc, torch.erfinv, torch.lgamma, torch.digamma)


@ts.kernel
def special(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty([8, x.size(0)], dtype=x.dtype, device=x.device)
    for t in ts.tile(x.size(0), block_size=1024):
        v = x[t]
        out[0, t] = torch.erfc(v)
        out[1, t] = torch.special.erfinv(v)
        out[2, t] = v.lgamma()
        out[3, t] = torch.digamma(v)
        out[4, t] = torch.special.erfc(v) + math.erfc(0.5)
        out[5, t] = v.erfinv() * math.lgamma(4.5)
        out[6, t] = torch.special.gammaln(v)
        out[7, t] = torch.special.psi(v)
    return out


def _inputs() -> torch.Tensor:
    edges = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 1.4616321, 1.4616322, 10.0, 10.5, 27.0,
             -3.0, -2.5, 1e-30, -1e-30, 3e38, -3e38, 8388609.0, -8388609.0, -8388608.5,
             0.99999994, -0.99999994, 1.0000001, float("inf"), float("-inf"), float("nan")]
    return torch.cat([
        torch.tensor(edges), torch.linspace(-20, 30, 6001), torch.linspace(-1, 1, 4001),
        torch.logspace(-30, 38, 600), -torch.logspace(-30, 7, 400),
        1 - torch.logspace(-7.2, -1, 300), torch.rand(500) * 12 - 6,
    ]).float()


def _agree(got: torch.Tensor, want64: torch.Tensor, tol: float) -> None:
    """nan/inf where torch's float32 result has them; elsewhere error <= tol * max(1, |want|)
    (relative, and absolute near the zeros of lgamma and digamma)."""
    want32 = want64.float().double()
    got = got.double()
    assert torch.equal(got.isnan(), want32.isnan())
    inf = want32.isinf()
    assert torch.equal(got[inf], want32[inf]) and not got[~inf & ~got.isnan()].isinf().any()
    fin = want32.isfinite()
    err = (got[fin] - want64[fin]).abs() / want64[fin].abs().clamp(min=1.0)
    assert err.max() <= tol, (err.max(), got[fin][err.argmax()], want64[fin][err.argmax()])


@pytest.mark.parametrize("mode", MODES)
def test_special_functions_match_float64(mode: str, request: pytest.FixtureRequest,
                                         poison_empty: None) -> None:
    use(mode, request)
    x = _inputs()
    got = special(x)
    xd = x.double()
    for row, fn in enumerate(FUNCS):
        _agree(got[row], fn(xd), 1.5e-6)
    _agree(got[4], torch.erfc(xd) + math.erfc(0.5), 1.5e-6)
    _agree(got[5], torch.erfinv(xd) * math.lgamma(4.5), 3e-6)
    assert torch.equal(got[6:8].nan_to_num(), got[2:4].nan_to_num())  # same functions


def test_relative_accuracy_away_from_zeros(compiled_mode: None) -> None:
    """Tails keep their relative accuracy: erfc down to its float32 underflow, erfinv up to
    the last float below 1, lgamma and digamma where their values are not near 0."""
    x = torch.cat([torch.linspace(0.5, 10.0, 3000), torch.linspace(0.9, 0.99999994, 3000),
                   torch.logspace(-20, 30, 3000)]).float()
    got = special(x).double()
    xd = x.double()
    for row, fn, keep in [(0, torch.erfc, x < 9.0), (1, torch.erfinv, x < 1.0),
                          (2, torch.lgamma, (x < 0.9) | (x > 2.2)),
                          (3, torch.digamma, (x < 1.3) | (x > 1.7))]:
        want = fn(xd)[keep]
        rel = ((got[row][keep] - want).abs() / want.abs()).max()
        assert rel <= 1e-6, (fn.__name__, rel)


@ts.kernel
def normal_icdf(u: torch.Tensor, mu: float, sigma: float) -> torch.Tensor:
    out = torch.empty_like(u)
    for t in ts.tile(u.size(0)):
        out[t] = mu + sigma * math.sqrt(2.0) * torch.erfinv(2.0 * u[t] - 1.0)
    return out


@ts.kernel
def poisson_nll(rate: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Full Poisson negative log-likelihood per row: sum(rate - k log rate + lgamma(k + 1))."""
    out = torch.empty([rate.size(0)], dtype=torch.float32, device=rate.device)
    for tm in ts.tile(rate.size(0)):
        r, kk = rate[tm, :], k[tm, :].float()
        out[tm] = (r - kk * torch.log(r) + torch.lgamma(kk + 1.0)).sum(dim=1)
    return out


@ts.kernel
def beta_logpdf_and_grad(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor]:
    """log Beta(x; a, b) and its derivative in a (digamma(a + b) - digamma(a) + log x)."""
    logp = torch.empty_like(x)
    grad_a = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        xv, av, bv = x[t], a[t], b[t]
        log_beta = torch.lgamma(av) + torch.lgamma(bv) - torch.lgamma(av + bv)
        logp[t] = (av - 1) * torch.log(xv) + (bv - 1) * torch.log1p(-xv) - log_beta
        grad_a[t] = torch.digamma(av + bv) - torch.digamma(av) + torch.log(xv)
    return logp, grad_a


@pytest.mark.parametrize("mode", MODES)
def test_kernels_using_special_functions(mode: str, request: pytest.FixtureRequest,
                                         poison_empty: None) -> None:
    use(mode, request)
    u = torch.rand(300).clamp(1e-6, 1 - 1e-6)
    want = 0.5 + 2.0 * math.sqrt(2.0) * torch.erfinv(2.0 * u.double() - 1.0)
    close(normal_icdf(u, 0.5, 2.0), want, atol=1e-5, rtol=1e-5)

    rate = torch.rand(37, 50) * 5 + 0.1
    k = torch.poisson(rate).to(torch.int32)
    want = torch.nn.functional.poisson_nll_loss(rate.double().log(), k.double(), full=False,
                                                reduction="none")
    want = (want + torch.lgamma(k.double() + 1)).sum(1)
    close(poisson_nll(rate, k), want, atol=1e-4, rtol=1e-5)

    x, a, b = torch.rand(200) * 0.98 + 0.01, torch.rand(200) * 5 + 0.05, torch.rand(200) * 5 + 0.05
    xd, ad, bd = x.double().requires_grad_(False), a.double().requires_grad_(), b.double()
    dist_logp = torch.distributions.Beta(ad, bd).log_prob(xd)
    (grad,) = torch.autograd.grad(dist_logp.sum(), ad)
    logp, grad_a = beta_logpdf_and_grad(x, a, b)
    close(logp, dist_logp.detach(), atol=2e-5, rtol=1e-5)
    close(grad_a, grad, atol=2e-5, rtol=1e-5)


@ts.kernel
def normal_functions(p: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    quantile = torch.empty_like(p)
    cdf = torch.empty([2, x.size(0)], dtype=x.dtype, device=x.device)
    for t in ts.tile(p.size(0), block_size=1024):
        quantile[t] = torch.special.ndtri(p[t])
    for t in ts.tile(x.size(0), block_size=1024):
        cdf[0, t] = torch.special.log_ndtr(x[t])
        cdf[1, t] = torch.special.ndtr(x[t])
    return quantile, cdf


@pytest.mark.parametrize("mode", MODES)
def test_normal_quantile_and_log_cdf_tails(mode: str, request: pytest.FixtureRequest,
                                           poison_empty: None) -> None:
    """ndtri keeps its accuracy down to subnormal probabilities (2p - 1 would round to -1),
    log_ndtr far into the left tail (log(ndtr) would be log 0), ndtr below -8.3 (where
    torch's own float32 and float64 ndtr return 0)."""
    use(mode, request)
    p = torch.cat([torch.tensor([0.0, 1.0, 0.5, -0.1, 1.1, float("nan"), 1e-45, 1e-30,
                                 0.99999994]),
                   torch.rand(1000), torch.logspace(-38, -1, 500)]).float()
    x = torch.cat([torch.tensor([float("-inf"), float("inf"), float("nan"), 0.0, -5.0, -5.0001,
                                 -40.0, -1e10, 8.0, 20.0]),
                   torch.linspace(-60, 10, 1000)]).float()
    quantile, cdf = normal_functions(p, x)
    xd = x.double()
    _agree(quantile, torch.special.ndtri(p.double()), 1e-6)
    _agree(cdf[0], torch.special.log_ndtr(xd), 1e-6)
    tails = torch.special.log_ndtr(xd) < -3.0
    rel = ((cdf[0].double() - torch.special.log_ndtr(xd)).abs() /
           torch.special.log_ndtr(xd).abs())[tails & xd.isfinite()]
    assert rel.max() <= 1e-6
    if mode == "compiled_mode":  # exp(-x^2 / 2) with x^2 split: no 2 z^2 ulp loss
        ndtr64 = 0.5 * torch.erfc(-xd / math.sqrt(2.0))
        finite = (ndtr64 > 1e-37) & xd.isfinite()
        rel = ((cdf[1].double() - ndtr64).abs() / ndtr64)[finite]
        assert rel.max() <= 1e-6
