"""Special functions a kernel writer reaches for in losses and activations — ``erfc``,
``erfinv``, ``lgamma``, ``digamma`` — written with portable ``tl`` primitives (libdevice
returns None in Triton's interpreter).

Each reduces its argument to a short interval and evaluates a polynomial fitted (weighted
least squares, refined to near-minimax, against mpmath) for float32, in Horner form:

* ``erfc(x)``: ``1 - erf(x)`` below 0.5; above, ``exp(-x^2) h(x) / x`` with ``h`` a
  polynomial in ``x - 1.25`` up to 2 and in ``1 / x`` beyond, and ``exp(-x^2)`` split as
  ``exp(-xh^2) exp(-(x - xh)(x + xh))`` with ``xh`` ``x`` cut to 4 fraction bits (``xh^2``
  is exact), so the result keeps its relative accuracy down to the underflow near 10.
* ``erfinv(x)``: M. Giles' single-precision polynomials in ``w = -log((1 - |x|)(1 + |x|))``
  (``1 - |x|`` is exact, so the tails near ±1 keep their accuracy); ``±1 -> ±inf``.
* ``lgamma(x)``: ``x >= 8`` Stirling's series in ``(x - 1/2)(log x - 1)`` form (no early
  overflow); below, recurrences to ``[1, 3)`` where ``lgamma = (x - 1)(x - 2) q(x)`` (exact
  zeros at 1 and 2); ``x < 0`` by reflection ``log(pi / |sin(pi x)|) - lgamma(1 - x)`` with
  the sine of ``x - round(x)``; poles and ``±inf`` give ``inf`` like torch.
* ``digamma(x)``: ``x >= 6`` the asymptotic series; below, recurrences to ``[1, 2)`` where
  ``psi = (x - x0) q(x)`` around its root ``x0`` (split in two floats); reflection
  ``psi(1 - x) - pi / tan(pi x)`` for ``x < 0``; ``psi(±0) = ∓inf``, negative integers nan.

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


def _erfc(cg: Any, a: str) -> str:
    # the x >= 0.5 branch, kept finite: erfc(27) is below the float64 subnormals
    x = _bind(cg, f"tl.minimum(tl.maximum({a}, 0.5), 27.0)", "ec_x")
    xh = _bind(cg, f"tl.floor({x} * 16.0) * 0.0625", "ec_xh")
    e = _bind(cg, f"tl.exp(-{xh} * {xh}) * tl.exp(-({x} - {xh}) * ({x} + {xh}))", "ec_e")
    mid = _poly(_bind(cg, f"{x} - 1.25", "ec_m"), _ERFC_MID)
    tail = _poly(_bind(cg, f"1.0 / {x}", "ec_r"), _ERFC_TAIL)
    big = _bind(cg, f"{e} * tl.where({x} < 2.0, {mid}, {tail}) / {x}", "ec_big")
    return f"tl.where({a} < 0.5, 1.0 - tl.math.erf({a}), tl.where({a} > 27.0, 0.0, {big}))"


def _erfinv(cg: Any, a: str) -> str:
    t = _bind(cg, f"tl.abs({a})", "ei_t")
    w = _bind(cg, f"-tl.log((1.0 - {t}) * (1.0 + {t}))", "ei_w")
    central = _poly(_bind(cg, f"{w} - 2.5", "ei_c"), _ERFINV_CENTRAL)
    tail = _poly(_bind(cg, f"tl.sqrt(tl.maximum({w}, 5.0)) - 3.0", "ei_s"), _ERFINV_TAIL)
    p = _bind(cg, f"tl.where({w} < 5.0, {central}, {tail}) * {a}", "ei_p")
    return f"tl.where({t} == 1.0, {a} * float('inf'), tl.where({t} > 1.0, float('nan'), {p}))"


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


def _nan_kept(fn: Any) -> Any:
    """``fn``'s result, nan where the operand is nan (the range-keeping tl.maximum of a
    nan is the other operand on a GPU, which would make the branches finite)."""
    def body(cg: Any, a: str) -> str:
        return f"tl.where({a} != {a}, {a}, {fn(cg, a)})"

    return body


for _name, _fn in [("erfc", _erfc), ("erfinv", _erfinv), ("lgamma", _lgamma),
                   ("digamma", _digamma)]:
    _unary(_name, _nan_kept(_fn), "float", True)
