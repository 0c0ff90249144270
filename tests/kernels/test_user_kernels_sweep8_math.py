"""Modified Bessel functions (``torch.i0``, ``torch.special.i0/i0e/i1/i1e``) and
``torch.polygamma(n, x)`` (``n`` = 0..6, also ``torch.special.polygamma`` and the method) in
device code, written without libdevice: accuracy against torch float64 over wide ranges and
at the edge values (±0, poles, the Chebyshev split at ±8, overflow of ``i0`` near 89, ±inf,
nan), and kernels that use them (a von Mises log-density, a Gamma Fisher information).

Example:
    pytest -q tests/kernels/test_user_kernels_sweep8_math.py
"""

from __future__ import annotations

import math

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use

ORDERS = (1, 2, 3, 4, 0, 6)
FUNCS = [torch.special.i0, torch.special.i0e, torch.special.i1, torch.special.i1e,
         *[lambda v, n=n: torch.polygamma(n, v) for n in ORDERS]]


@ts.kernel
def special(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty([10, x.size(0)], dtype=x.dtype, device=x.device)
    for t in ts.tile(x.size(0), block_size=1024):
        v = x[t]
        out[0, t] = torch.i0(v)
        out[1, t] = torch.special.i0e(v)
        out[2, t] = torch.special.i1(v)
        out[3, t] = torch.special.i1e(v)
        out[4, t] = torch.polygamma(1, v)
        out[5, t] = torch.special.polygamma(2, v)
        out[6, t] = v.polygamma(3)
        out[7, t] = torch.polygamma(4, v)
        out[8, t] = torch.polygamma(0, v)
        out[9, t] = torch.polygamma(6, v)
    return out


def _inputs() -> torch.Tensor:
    edges = [0.0, -0.0, 1.0, -1.0, -2.0, -2.5, 0.5, 1e-30, -1e-30, 1e30, -1e30, 8.0, -8.0,
             7.9999995, 8.000001, 88.0, 89.0, 90.0, 3e38, -8388609.0, -8388608.5, -7322538.5,
             float("inf"), float("-inf"), float("nan")]
    return torch.cat([torch.tensor(edges), torch.linspace(-30, 30, 6001),
                      torch.logspace(-20, 38, 600), -torch.logspace(-20, 7, 400),
                      torch.rand(500, generator=torch.Generator().manual_seed(8)) * 12 - 6]).float()


def _agree(x: torch.Tensor, got: torch.Tensor, want64: torch.Tensor, tol: float,
           relative: bool = True) -> None:
    """nan/inf where the float64 value rounded to float32 has them; elsewhere error <=
    tol * max(1, |want|), and (``relative``) error <= tol * |want| where it is a normal
    float32."""
    want32 = want64.float().double()
    got = got.double()
    assert torch.equal(got.isnan(), want32.isnan()), x[got.isnan() != want32.isnan()]
    inf = want32.isinf()
    assert torch.equal(got[inf], want32[inf]) and not got[~inf & ~got.isnan()].isinf().any()
    fin = want32.isfinite()
    err = (got[fin] - want64[fin]).abs()
    assert (err / want64[fin].abs().clamp(min=1.0)).max() <= tol
    if not relative:
        return
    normal = want64[fin].abs() > 1e-37
    rel = (err[normal] / want64[fin][normal].abs()).max()
    assert rel <= tol, (rel, x[fin][normal][(err[normal] / want64[fin][normal].abs()).argmax()])


_MPMATH: dict[tuple[int, bytes], torch.Tensor] = {}


def _polygamma_reference(x: torch.Tensor, want: torch.Tensor, n: int) -> tuple[
        torch.Tensor, torch.Tensor]:
    """(reference, where to compare) for polygamma(n >= 1) at negative x: torch's float64
    sums the Hurwitz series through the negative terms and drifts (polygamma(6, -1000.5) is
    -2.3e-12, the value -1.3e-16; 5e-8 off at -10.5), so mpmath from -1e4 to -5; beyond, mpmath is slow and loses
    digits in cot(pi x) too: half-integers use the reflection
    polygamma(n, x) = (-1)^n polygamma(n, 1 - x) - pi d^n/dx^n cot(pi x), other points are
    left out."""
    mpmath = pytest.importorskip("mpmath")
    want = want.clone()
    pole = (x == x.floor()) | ~x.isfinite()
    near = ((x < -5) & (x >= -1e4) & ~pole).nonzero().flatten()
    key = (n, x[near].numpy().tobytes())
    if key not in _MPMATH:
        _MPMATH[key] = torch.tensor([float(mpmath.polygamma(n, v)) for v in x[near].tolist()],
                                    dtype=torch.float64)
    want[near] = _MPMATH[key]
    far = (x < -1e4) & ~pole
    half = far & (x + 0.5 == (x + 0.5).floor())
    # at half-integers cot(pi x) = 0 and d^n/dx^n cot(pi x) = -pi^n n! [h^n] tan(h): -pi, 0,
    # -2 pi^3, 0 ... (tan h = h + h^3/3 + ...)
    cot_n = {1: -1.0, 3: -2.0}.get(n, 0.0) * math.pi ** n
    want[half] = (-1) ** n * torch.polygamma(n, 1 - x[half]) - math.pi * cot_n
    return want, ~far | half


def test_bessel_and_polygamma_match_float64(compiled_mode: None, poison_empty: None) -> None:
    x = _inputs()
    got = special(x)
    xd = x.double()
    for row, fn in enumerate(FUNCS):
        want = fn(xd)
        if row == 4:
            # trigamma's poles: torch's float64 gives finite garbage (6.6e32 at -1, 62.9 at
            # -1e30) where the float32 kernels (ours, torch's reference mode) give huge/inf
            pole = (xd < 0) & (xd == xd.floor()) & xd.isfinite()
            assert (got[row][pole] > 1e14).all()
            want[pole] = got[row][pole].double()
        keep = torch.ones_like(x, dtype=torch.bool)
        if row >= 4 and row != 8:
            want, keep = _polygamma_reference(xd, want, ORDERS[row - 4])
        # digamma (polygamma(0, x), sweep 7's): absolute near its zeros, as its own test
        _agree(x[keep], got[row][keep], want[keep], 1.5e-6, relative=row != 8)


def test_reference_mode_runs_torchs_own_functions(ref_mode: None) -> None:
    """Reference mode is torch eager in float32 (with its own edges: trigamma's poles are
    finite there, i0(89) overflows)."""
    x = _inputs()
    got = special(x)
    for row, fn in enumerate(FUNCS):
        torch.testing.assert_close(got[row], fn(x), equal_nan=True, atol=0, rtol=0)


@ts.kernel
def von_mises_logpdf(x: torch.Tensor, mu: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """log of exp(kappa cos(x - mu)) / (2 pi I0(kappa)), stable for large kappa via i0e."""
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        k = kappa[t]
        out[t] = k * (torch.cos(x[t] - mu[t]) - 1.0) - math.log(2 * math.pi) - \
            torch.log(torch.special.i0e(k))
    return out


@ts.kernel
def gamma_fisher(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """The Fisher information of Gamma(alpha, rate beta): [[psi1(a), -1/b], [-1/b, a/b^2]]."""
    out = torch.empty([alpha.size(0), 4], dtype=alpha.dtype, device=alpha.device)
    for t in ts.tile(alpha.size(0)):
        a, b = alpha[t], beta[t]
        out[t, 0] = torch.polygamma(1, a)
        out[t, 1] = -1.0 / b
        out[t, 2] = -1.0 / b
        out[t, 3] = a / (b * b)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_kernels_using_bessel_and_polygamma(mode: str, request: pytest.FixtureRequest,
                                            poison_empty: None) -> None:
    use(mode, request)
    x, mu = torch.rand(300) * 6 - 3, torch.rand(300) - 0.5
    kappa = torch.logspace(-3, 3, 300)
    xd, md, kd = x.double(), mu.double(), kappa.double()
    want = kd * torch.cos(xd - md) - math.log(2 * math.pi) - torch.log(torch.special.i0(kd))
    small = kd < 500  # i0 overflows float64 above ~713: there the scaled form
    want[~small] = (kd * (torch.cos(xd - md) - 1) - math.log(2 * math.pi)
                    - torch.log(torch.special.i0e(kd)))[~small]
    close(von_mises_logpdf(x, mu, kappa), want, atol=2e-4, rtol=1e-5)
    alpha, beta = torch.rand(200) * 20 + 0.01, torch.rand(200) + 0.5
    ad, bd = alpha.double(), beta.double()
    want = torch.stack([torch.polygamma(1, ad), -1 / bd, -1 / bd, ad / bd**2], 1)
    close(gamma_fisher(alpha, beta), want, atol=1e-6, rtol=1e-6)


@ts.kernel
def polygamma_of(x: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        out[t] = torch.polygamma(n, x[t])
    return out


def test_polygamma_order_must_be_a_small_int(compiled_mode: None) -> None:
    x = torch.rand(8) + 0.5
    for n in (1, 3):  # an int argument is compiled in, one kernel per value
        close(polygamma_of(x, n), torch.polygamma(n, x.double()), atol=1e-6, rtol=1e-6)
    with pytest.raises(ts.KernelError) as info:
        polygamma_of(torch.rand(8), 7)
    text = str(info.value)
    assert "n a python int from 0 to 6" in text and "test_user_kernels_sweep8_math.py" in text
