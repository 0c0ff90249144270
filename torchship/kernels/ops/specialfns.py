"""Special functions a kernel writer reaches for in losses, activations and samplers —
``erfc``, ``erfinv``, ``lgamma``, ``digamma``, ``ndtr``, ``ndtri``, ``log_ndtr``, the
modified Bessel functions ``i0``/``i0e``/``i1``/``i1e`` and ``polygamma`` — written with portable ``tl`` primitives (libdevice
returns None in Triton's interpreter).

Each reduces its argument to a short interval and evaluates a polynomial fitted (weighted
least squares, refined to near-minimax, against mpmath) for float32, in Horner form:

* ``erfc(x)``: ``1 - erf(x)`` below 0.5; above, ``exp(-x^2) h(x) / x`` with ``h`` a
  polynomial in ``x - 1.25`` up to 2 and in ``1 / x`` beyond, and ``exp(-x^2)`` split as
  ``exp(-xh^2) exp(-(x - xh)(x + xh))`` with ``xh`` ``x`` cut to 4 fraction bits (``xh^2``
  is exact), so the result keeps its relative accuracy down to the underflow near 10.
* ``erfinv(x)``: M. Giles' single-precision polynomials in ``w = -log((1 - |x|)(1 + |x|))``
  (``1 - |x|`` is exact, so the tails near ±1 keep their accuracy); ``±1 -> ±inf``.
  ``ndtri(p)`` (the normal quantile) takes ``w`` from ``min(p, 1 - p)`` and a third
  polynomial for ``w`` up to 110, so probabilities down to 1e-45 keep their accuracy.
* ``ndtr(x)``: below -1 ``exp(-x^2 / 2) h(x / sqrt 2) / (sqrt 2 x)`` with ``x^2`` split.
* ``log_ndtr(x)``: ``log(h(z) / 2z) - z^2`` below -5 with erfc's scaled polynomial ``h``
  (finite to -1e18), ``log(erfc(z) / 2)`` up to 0, ``log1p(-erfc(-z) / 2)`` above.
* ``lgamma(x)``: ``x >= 8`` Stirling's series in ``(x - 1/2)(log x - 1)`` form (no early
  overflow); below, recurrences to ``[1, 3)`` where ``lgamma = (x - 1)(x - 2) q(x)`` (exact
  zeros at 1 and 2); ``x < 0`` by reflection ``log(pi / |sin(pi x)|) - lgamma(1 - x)`` with
  the sine of ``x - round(x)``; poles and ``±inf`` give ``inf`` like torch.
* ``digamma(x)``: ``x >= 6`` the asymptotic series; below, recurrences to ``[1, 2)`` where
  ``psi = (x - x0) q(x)`` around its root ``x0`` (split in two floats); reflection
  ``psi(1 - x) - pi / tan(pi x)`` for ``x < 0``; ``psi(±0) = ∓inf``, negative integers nan.

* ``i0/i0e/i1/i1e(x)``: Chebyshev series (Clenshaw) of ``i0e`` and ``i1e(x)/x`` on
  ``[0, 8]`` and of ``sqrt(x) i0e``, ``sqrt(x) i1e`` beyond, in ``16/x - 1``; ``i0``/``i1``
  multiply by ``exp(|x|/2)`` twice (finite up to their float32 overflow near 89).
* ``polygamma(n, x)``, ``1 <= n <= 6``: recurrences to ``x >= 10``, the asymptotic series
  there, reflection with ``d^n/dx^n cot`` as a polynomial in ``cot`` for ``x < 0``.

Measured in the interpreter against torch float64 (tests/kernels/test_user_kernels_sweep7_math.py):
≤ 1e-6 relative (absolute near the zeros of lgamma and digamma). On a GPU ``tl.exp``/``tl.log``
are the hardware approximations, so large exponents lose a few more ulps.

Example:
    >>> import torch
    >>> from torchship.kernels.ir import ConstDim, Value
    >>> from torchship.kernels.ops import OPS
    >>> OPS["lgamma"].infer([Value((ConstDim(4),), torch.int32)], {})[1]
    torch.float32
"""

from __future__ import annotations

import math
from typing import Any

from torchship.kernels.ops.mathfns import _bind, _poly
from torchship.kernels.ops.pointwise import _unary

_PI = 3.141592653589793
_LOG_PI = 1.1447298858494002
_HALF_LOG_2PI = 0.9189385332046727

# erfc(x) x exp(x^2) on [0.5, 2) in x - 1.25, and on [2, inf) in t = 1/x
_ERFC_MID = (-1.207409693e-04, 3.260480168e-04, -7.126205029e-04, 1.863342868e-03,
             -4.647880634e-03, 1.06674978e-02, -2.270279616e-02, 4.402189649e-02,
             -7.532748985e-02, 1.067955952e-01, 4.597786464e-01)
_ERFC_TAIL = (-1.72061318e-01, 6.825972446e-01, -1.065311416e00, 7.580669938e-01,
              -6.260547894e-02, -2.751209631e-01, -4.254864869e-04, 5.642004702e-01)
# M. Giles, "Approximating the erfinv function" (GPU Computing Gems, 2011), single precision
_ERFINV_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06,
                   2.1858087e-04, -1.25372503e-03, -4.17768164e-03, 2.46640727e-01,
                   1.50140941e00)
_ERFINV_TAIL = (-2.00214257e-04, 1.00950558e-04, 1.34934322e-03, -3.67342844e-03,
                5.73950773e-03, -7.6224613e-03, 9.43887047e-03, 1.00167406e00, 2.83297682e00)
# erfinv(x) / x for w in [16, 110] (probabilities down to the float32 subnormals, beyond
# Giles' float32 range), in sqrt(w) - 7.25
_ERFINV_FAR = (1.383742561e-08, -7.001374571e-08, 1.270266022e-07, -9.482233943e-07,
               4.857651346e-06, 1.063900029e-05, -5.069218177e-04, 1.008341412e00,
               7.121136935e00)
# lgamma(x) / ((x - 1)(x - 2)) on [1, 3] in x - 2
_LGAMMA_Q = (-9.680908264e-06, 1.931404843e-05, -7.2721314e-06, 2.023392063e-05,
             -9.174580849e-05, 1.958163797e-04, -4.01976399e-04, 9.10497789e-04,
             -2.108943154e-03, 4.999482453e-03, -1.238411497e-02, 3.296494671e-02,
             -1.003173038e-01, 4.227843357e-01)
# digamma(x) / (x - x0) on [1, 2] in x - 1.5; x0 = the positive root, as hi + lo
_PSI_Q = (-1.621955871e-02, 2.392408885e-02, -2.587340598e-02, 3.936197816e-02,
          -6.203979525e-02, 9.511737307e-02, -1.483999814e-01, 2.405383961e-01,
          -4.236274766e-01, 9.510558967e-01)
_PSI_X0_HI = 1.4616321325302124
_PSI_X0_LO = 1.2438149938918909e-08


# Chebyshev series (fitted to torch float64): i0e(x) and i1e(x) / x on [0, 8] in x/4 - 1,
# sqrt(x) i0e(x) and sqrt(x) i1e(x) on [8, inf) in 16/x - 1
_I0_NEAR = (3.383976372047e-01, -3.046826723432e-01, 1.716209015222e-01, -9.490109704805e-02,
            4.930528423967e-02, -2.373741480590e-02, 1.054646039460e-02, -4.324309995051e-03,
            1.639475616941e-03, -5.763755745387e-04, 1.885028850959e-04, -5.754195010082e-05,
            1.644844807078e-05, -4.416738358475e-06, 1.117387539178e-06, -2.670793853803e-07,
            6.046995024215e-08, -1.300025009614e-08, 2.659823745802e-09)
_I1_NEAR = (1.262935932218e-01, -1.764165183578e-01, 1.026436586898e-01, -5.294598120809e-02,
            2.472644903063e-02, -1.056408489463e-02, 4.156422944313e-03, -1.513572450631e-03,
            5.122859561686e-04, -1.617608158260e-04, 4.781565107545e-05, -1.327316365607e-05,
            3.470251308126e-06, -8.568720264575e-07, 2.003294753289e-07, -4.445059131779e-08,
            9.381537325596e-09, -1.887249695507e-09, 3.625590012133e-10)
_I0_FAR = (4.022452055071e-01, 3.369116478256e-03, 6.889758346917e-05, 2.891370520833e-06,
           2.048918589521e-07, 2.266668990902e-08, 3.396232033479e-09)
_I1_FAR = (3.892881175091e-01, -9.761097491361e-03, -1.105889387626e-04, -3.882564808877e-06,
           -2.512236237941e-07, -2.631468846952e-08, -3.835380388684e-09)
#: the largest ``n`` of ``polygamma(n, x)`` compiled (``n = 0`` is digamma)
POLYGAMMA_MAX = 6


def _erfc(cg: Any, a: str) -> str:
    # the x >= 0.5 branch, kept finite: erfc(27) is below the float64 subnormals
    x = _bind(cg, f"tl.minimum(tl.maximum({a}, 0.5), 27.0)", "ec_x")
    xh = _bind(cg, f"tl.floor({x} * 16.0) * 0.0625", "ec_xh")
    e = _bind(cg, f"tl.exp(-{xh} * {xh}) * tl.exp(-({x} - {xh}) * ({x} + {xh}))", "ec_e")
    big = _bind(cg, f"{e} * {_erfc_scaled(cg, x)} / {x}", "ec_big")
    return f"tl.where({a} < 0.5, 1.0 - tl.math.erf({a}), tl.where({a} > 27.0, 0.0, {big}))"


def _erfc_scaled(cg: Any, x: str) -> str:
    """``x exp(x^2) erfc(x)`` for ``x >= 0.5`` (tends to 1/sqrt(pi))."""
    mid = _poly(_bind(cg, f"{x} - 1.25", "ec_m"), _ERFC_MID)
    tail = _poly(_bind(cg, f"1.0 / {x}", "ec_r"), _ERFC_TAIL)
    return _bind(cg, f"tl.where({x} < 2.0, {mid}, {tail})", "ec_h")


def _ndtr(cg: Any, a: str) -> str:
    """The normal CDF ``erfc(-x / sqrt 2) / 2``; below -1 as ``exp(-x^2 / 2) h(z) / 2z`` with
    ``x^2`` split like erfc's (rounding ``x / sqrt 2`` first would cost ``2 z^2`` ulps)."""
    xt = _bind(cg, f"tl.minimum(tl.maximum(-{a}, 1.0), 40.0)", "nd_x")
    xh = _bind(cg, f"tl.floor({xt} * 16.0) * 0.0625", "nd_xh")
    e = _bind(cg, f"tl.exp(-0.5 * {xh} * {xh}) * tl.exp(-0.5 * ({xt} - {xh}) * ({xt} + {xh}))",
              "nd_e")
    zt = _bind(cg, f"{xt} * 0.7071067811865476", "nd_z")
    left = f"{e} * {_erfc_scaled(cg, zt)} / (2.0 * {zt})"
    rest = _bind(cg, f"0.5 * ({_erfc(cg, f'({a} * -0.7071067811865476)')})", "nd_rest")
    return f"tl.where({a} < -1.0, tl.where({a} < -40.0, 0.0, {left}), {rest})"


def _log_ndtr(cg: Any, a: str) -> str:
    """log of the normal CDF: ``log(h(z) / (2 z)) - z^2`` with ``z = -x / sqrt(2)`` below -5
    (no underflow: log_ndtr(-40) = -804.6), ``log(erfc(z) / 2)`` up to 0, and
    ``log1p(-erfc(-z) / 2)`` above (Goldberg's log1p, accurate as the CDF nears 1)."""
    z = _bind(cg, f"{a} * -0.7071067811865476", "ln_z")
    zt = _bind(cg, f"tl.minimum(tl.maximum({z}, 3.5), 1e18)", "ln_zt")
    far = f"tl.log({_erfc_scaled(cg, zt)} / (2.0 * {zt})) - {zt} * {zt}"
    left = _bind(cg, f"tl.log(0.5 * ({_erfc(cg, z)}))", "ln_left")
    u = _bind(cg, f"-0.5 * ({_erfc(cg, f'(-{z})')})", "ln_u")
    right = f"tl.where(1.0 + {u} == 1.0, {u}, tl.log(1.0 + {u}) * {u} / (1.0 + {u} - 1.0))"
    return (f"tl.where({a} == float('-inf'), {a}, tl.where({a} < -5.0, {far}, "
            f"tl.where({a} < 0.0, {left}, {right})))")


def _erfinv_scaled(cg: Any, w: str) -> str:
    """``erfinv(x) / x`` as a function of ``w = -log((1 - x)(1 + x))`` (Giles)."""
    central = _poly(_bind(cg, f"{w} - 2.5", "ei_c"), _ERFINV_CENTRAL)
    s = _bind(cg, f"tl.sqrt(tl.maximum({w}, 5.0))", "ei_s")
    tail = _poly(_bind(cg, f"{s} - 3.0", "ei_t3"), _ERFINV_TAIL)
    far = _poly(_bind(cg, f"{s} - 7.25", "ei_t7"), _ERFINV_FAR)
    return _bind(cg, f"tl.where({w} < 5.0, {central}, tl.where({w} < 16.0, {tail}, {far}))",
                 "ei_q")


def _erfinv(cg: Any, a: str) -> str:
    t = _bind(cg, f"tl.abs({a})", "ei_t")
    w = _bind(cg, f"-tl.log((1.0 - {t}) * (1.0 + {t}))", "ei_w")
    p = _bind(cg, f"{_erfinv_scaled(cg, w)} * {a}", "ei_p")
    return f"tl.where({t} == 1.0, {a} * float('inf'), tl.where({t} > 1.0, float('nan'), {p}))"


def _ndtri(cg: Any, a: str) -> str:
    """The normal quantile ``sqrt(2) erfinv(2p - 1)``, with ``w`` from ``m = min(p, 1 - p)``
    (``(1 - |x|)(1 + |x|) = 4 m (1 - m)``), so tiny tail probabilities keep their accuracy
    where ``2p - 1`` would round to -1: ndtri(1e-30) = -11.46."""
    m = _bind(cg, f"tl.minimum({a}, 1.0 - {a})", "nq_m")
    w = _bind(cg, f"-tl.log(4.0 * {m} * (1.0 - {m}))", "nq_w")
    r = _bind(cg, f"1.4142135623730951 * {_erfinv_scaled(cg, w)} * (2.0 * {a} - 1.0)", "nq")
    return (f"tl.where({a} == 0.0, float('-inf'), tl.where({a} == 1.0, float('inf'), "
            f"tl.where(({a} < 0.0) | ({a} > 1.0), float('nan'), {r})))")


def _lgamma_nonneg(cg: Any, y: str) -> str:
    """lgamma of ``y >= 0`` (or nan / inf)."""
    # below 8: lgamma(y) = lgamma(u) + log(num) - log(den) with u in [1, 3)
    up = _bind(cg, f"{y} < 1.0", "lg_up")
    u = _bind(cg, f"tl.where({up}, {y} + 1.0, {y})", "lg_u")
    num = _bind(cg, f"0.0 * {u} + 1.0", "lg_num")
    for _ in range(5):  # [3, 8) down to [1, 3)
        down = _bind(cg, f"{u} >= 3.0", "lg_down")
        u = _bind(cg, f"tl.where({down}, {u} - 1.0, {u})", "lg_u")
        num = _bind(cg, f"tl.where({down}, {num} * {u}, {num})", "lg_num")
    q = _poly(_bind(cg, f"{u} - 2.0", "lg_v"), _LGAMMA_Q)
    small = _bind(cg, f"({u} - 1.0) * ({u} - 2.0) * {q} + tl.log({num}) - "
                      f"tl.where({up}, tl.log({y}), 0.0)", "lg_small")
    z = _bind(cg, f"tl.maximum({y}, 8.0)", "lg_z")
    r2 = _bind(cg, f"1.0 / ({z} * {z})", "lg_r2")
    series = _poly(r2, (-1 / 1680, 1 / 1260, -1 / 360, 1 / 12))
    stirling = f"({z} - 0.5) * (tl.log({z}) - 1.0) + {_HALF_LOG_2PI - 0.5} + {series} / {z}"
    return f"tl.where({y} < 8.0, {small}, {stirling})"


def _near_int_offset(cg: Any, a: str) -> str:
    """``a`` minus an integer next to it, exactly (|result| <= 1/2 up to an ulp), so
    ``sin(pi a)`` and ``tan(pi a)`` of it keep their relative accuracy next to integers;
    from 2^23 on every float is an integer (and ``a + 0.5`` would round to even)."""
    return _bind(cg, f"tl.where(tl.abs({a}) >= 8388608.0, 0.0, {a} - tl.floor({a} + 0.5))",
                 "near")


def _lgamma(cg: Any, a: str) -> str:
    neg = _bind(cg, f"{a} < 0", "lg_neg")
    y = _bind(cg, f"tl.where({neg}, 1.0 - {a}, {a})", "lg_y")
    pos = _bind(cg, _lgamma_nonneg(cg, y), "lg_pos")
    s = _bind(cg, f"tl.abs(tl.sin({_PI} * {_near_int_offset(cg, a)}))", "lg_sin")
    refl = f"tl.where({s} == 0, float('inf'), {_LOG_PI} - tl.log({s}) - {pos})"
    return f"tl.where(tl.abs({a}) == float('inf'), float('inf'), tl.where({neg}, {refl}, {pos}))"


def _digamma_nonneg(cg: Any, y: str) -> str:
    """digamma of ``y >= 0`` (+0 gives -inf through -1/y)."""
    up = _bind(cg, f"{y} < 1.0", "dg_up")
    u = _bind(cg, f"tl.where({up}, {y} + 1.0, {y})", "dg_u")
    acc = _bind(cg, f"tl.where({up}, -1.0 / {y}, 0.0)", "dg_acc")
    for _ in range(4):  # [2, 6) down to [1, 2)
        down = _bind(cg, f"{u} >= 2.0", "dg_down")
        u = _bind(cg, f"tl.where({down}, {u} - 1.0, {u})", "dg_u")
        acc = _bind(cg, f"tl.where({down}, {acc} + 1.0 / {u}, {acc})", "dg_acc")
    q = _poly(_bind(cg, f"{u} - 1.5", "dg_v"), _PSI_Q)
    small = f"(({u} - {_PSI_X0_HI}) - {_PSI_X0_LO}) * {q} + {acc}"
    z = _bind(cg, f"tl.maximum({y}, 6.0)", "dg_z")
    r2 = _bind(cg, f"1.0 / ({z} * {z})", "dg_r2")
    series = _poly(r2, (-1 / 132, 1 / 240, -1 / 252, 1 / 120, -1 / 12))
    asym = f"tl.log({z}) - 0.5 / {z} + {series} * {r2}"
    return f"tl.where({y} < 6.0, {small}, {asym})"


def _digamma(cg: Any, a: str) -> str:
    neg = _bind(cg, f"{a} < 0", "dg_neg")
    y = _bind(cg, f"tl.where({neg}, 1.0 - {a}, {a})", "dg_y")
    pos = _bind(cg, _digamma_nonneg(cg, y), "dg_pos")
    f = _bind(cg, f"{_PI} * {_near_int_offset(cg, a)}", "dg_f")
    refl = f"tl.where({f} == 0, float('nan'), {pos} - {_PI} * tl.cos({f}) / tl.sin({f}))"
    return f"tl.where({a} == 0, -1.0 / {a}, tl.where({neg}, {refl}, {pos}))"


def _cheb(cg: Any, t: str, coeffs: tuple[float, ...]) -> str:
    """Clenshaw's sum of ``coeffs[k] T_k(t)`` (Chebyshev polynomials, ``|t| <= 1``)."""
    t2 = _bind(cg, f"2.0 * {t}", "ch_t2")
    b1, b2 = "0.0", "0.0"
    for c in reversed(coeffs[1:]):
        b1, b2 = _bind(cg, f"{t2} * {b1} - {b2} + {c!r}", "ch_b"), b1
    return f"({t} * {b1} - {b2} + {coeffs[0]!r})"


def _bessel(order: int, scaled: bool) -> Any:
    """``i0``/``i1`` (``scaled``: times ``exp(-|x|)``, ``i0e``/``i1e``) of the modified Bessel
    functions: Chebyshev series for ``|x| <= 8`` (of ``i0e`` and ``i1e(x) / x`` in ``x/4 - 1``)
    and above (of ``sqrt(x) i*e(x)`` in ``16/x - 1``); the unscaled forms multiply by
    ``exp(|x| / 2)`` twice, so ``i0(89)`` is finite; ``i1`` is odd."""
    near, far = (_I0_NEAR, _I0_FAR) if order == 0 else (_I1_NEAR, _I1_FAR)

    def body(cg: Any, a: str) -> str:
        ax = _bind(cg, f"tl.abs({a})", "bs_ax")
        lo = _cheb(cg, _bind(cg, f"tl.minimum({ax}, 8.0) * 0.25 - 1.0", "bs_t"), near)
        big = _bind(cg, f"tl.maximum({ax}, 8.0)", "bs_big")
        hi = _bind(cg, f"{_cheb(cg, _bind(cg, f'16.0 / {big} - 1.0', 'bs_u'), far)} / "
                       f"tl.sqrt({big})", "bs_hi")
        if order == 1:
            lo = f"{ax} * {lo}"
        if not scaled:
            half = _bind(cg, f"tl.exp(0.5 * {ax})", "bs_e")
            lo, hi = f"{lo} * {half} * {half}", f"({hi} * {half}) * {half}"
        out = f"tl.where({ax} <= 8.0, {lo}, {hi})"
        return out if order == 0 else f"tl.where({a} < 0, -({out}), {out})"

    return body


def _cot_derivative(n: int) -> tuple[int, ...]:
    """Coefficients (highest first) of ``P`` with ``d^n/dx^n cot(x) = P(cot x)``, from
    ``P_0 = c`` and ``P_{k+1}(c) = -(1 + c^2) P_k'(c)``."""
    p = [0, 1]  # lowest first
    for _ in range(n):
        d = [k * p[k] for k in range(1, len(p))] or [0]
        p = [-(d[k] if k < len(d) else 0) - (d[k - 2] if 2 <= k < len(d) + 2 else 0)
             for k in range(len(d) + 2)]
    return tuple(reversed(p))


def _polygamma(n: int) -> Any:
    """``polygamma(n, x)`` for ``n >= 1``: recurrences up to ``x >= 10`` (the sum of
    ``(x + k)^-(n+1)``, all of one sign), there the asymptotic series
    ``(n-1)!/x^n + n!/(2x^(n+1)) + sum B_2k (2k+n-1)!/((2k)! x^(2k+n))`` (times
    ``(-1)^(n+1)``); ``x < 0`` by the reflection
    ``psi_n(x) = (-1)^n psi_n(1 - x) - pi^(n+1) P_n(cot(pi x))`` with the cotangent of
    ``x - round(x)``. Poles (0, negative integers) are ``(-1)^(n+1) inf``; at ``+inf`` torch
    gives 0 for ``n = 1`` and nan above, at ``-inf`` nan for ``n = 1``: so do we."""
    sign, fact = (-1.0) ** (n + 1), float(math.factorial(n))
    bern = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6)
    series = tuple(b * math.factorial(2 * k + n + 1) / math.factorial(2 * k + 2)
                   for k, b in enumerate(bern))[::-1]
    cot_poly = tuple(float(c) * _PI ** (n + 1) for c in _cot_derivative(n))

    def nonneg(cg: Any, y: str) -> str:
        z, acc = y, "0.0"
        for _ in range(10):
            small = _bind(cg, f"{z} < 10.0", "pg_small")
            acc = _bind(cg, f"{acc} + tl.where({small}, 1.0 / ({_power(z, n + 1)}), 0.0)",
                        "pg_acc")
            z = _bind(cg, f"tl.where({small}, {z} + 1.0, {z})", "pg_z")
        r = _bind(cg, f"1.0 / {z}", "pg_r")
        r2 = _bind(cg, f"{r} * {r}", "pg_r2")
        lead = f"{float(math.factorial(n - 1))} + {fact / 2} * {r} + {r2} * {_poly(r2, series)}"
        return f"{sign} * (({lead}) * {_power(r, n)} + {fact} * {acc})"

    def body(cg: Any, a: str) -> str:
        neg = _bind(cg, f"{a} < 0", "pg_neg")
        pos = _bind(cg, nonneg(cg, f"tl.where({neg}, 1.0 - {a}, {a})"), "pg_pos")
        o = _near_int_offset(cg, a)
        # cot(pi o) as tan(pi (1/2 - |o|)) beyond a quarter (1/2 - |o| is exact): accurate
        # next to the zeros of cot at half-integers
        far = _bind(cg, f"tl.abs({o}) > 0.25", "pg_far")
        g = _bind(cg, f"{_PI} * tl.where({far}, 0.5 - tl.abs({o}), tl.abs({o}))", "pg_g")
        sg, cg_ = _bind(cg, f"tl.sin({g})", "pg_sin"), _bind(cg, f"tl.cos({g})", "pg_cos")
        cot = _bind(cg, f"tl.where({o} < 0, -1.0, 1.0) * tl.where({far}, {sg} / {cg_}, "
                        f"{cg_} / {sg})", "pg_cot")
        f = o
        refl = f"{(-1.0) ** n} * {pos} - {_poly(cot, cot_poly)}"
        pole = f"{sign * math.inf!r}".replace("inf", "float('inf')")
        at_inf = "0.0" if n == 1 else "float('nan')"
        out = f"tl.where({neg}, tl.where({f} == 0, {pole}, {refl}), {pos})"
        if n == 1:
            out = f"tl.where({a} == float('-inf'), float('nan'), {out})"
        return f"tl.where({a} == float('inf'), {at_inf}, tl.where({a} == 0, {pole}, {out}))"

    return body


def _power(x: str, k: int) -> str:
    return " * ".join([x] * k)


def _nan_kept(fn: Any) -> Any:
    """``fn``'s result, nan where the operand is nan (the range-keeping tl.maximum of a
    nan is the other operand on a GPU, which would make the branches finite)."""
    def body(cg: Any, a: str) -> str:
        return f"tl.where({a} != {a}, {a}, {fn(cg, a)})"

    return body


for _name, _fn in [("erfc", _erfc), ("erfinv", _erfinv), ("lgamma", _lgamma),
                   ("digamma", _digamma), ("ndtr", _ndtr), ("ndtri", _ndtri),
                   ("log_ndtr", _log_ndtr), ("i0", _bessel(0, False)), ("i0e", _bessel(0, True)),
                   ("i1", _bessel(1, False)), ("i1e", _bessel(1, True)),
                   *[(f"polygamma{n}", _polygamma(n)) for n in range(1, POLYGAMMA_MAX + 1)]]:
    _unary(_name, _nan_kept(_fn), "float", True)
