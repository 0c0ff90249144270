"""Ops a new user writes in their own kernels: ``prod`` over a block dim, inverse
trigonometric and hyperbolic math and ``tanh`` (no libdevice), ``atan2`` and ``pow`` with a
block exponent, compiled (Triton interpreter) and reference mode against torch eager in
float64; ``ts.rand``/``ts.randn`` and dropout by their statistics, determinism and agreement
between the modes.

Example:
    pytest -q tests/kernels/test_user_kernels_ops6.py
"""

from __future__ import annotations

import math

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_compiler import close, seed
from tests.kernels.test_user_kernels_rows import MODES, use


@ts.kernel
def row_products(x: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.empty([3, x.size(0)], dtype=x.dtype, device=x.device)
    iout = torch.empty([n.size(0)], dtype=torch.int64, device=x.device)
    for tm in ts.tile(x.size(0)):
        v = x[tm, :]
        out[0, tm] = v.prod(dim=1)
        out[1, tm] = torch.prod(v, 1, keepdim=True)[:, 0]
        out[2, tm] = (v * 2.0).prod(-1) * 0.5
    for tn in ts.tile(n.size(0)):
        iout[tn] = n[tn, :].prod(1)
    return out, iout


@pytest.mark.parametrize("mode", MODES)
def test_prod_over_a_row(mode: str, request: pytest.FixtureRequest, poison_empty: None) -> None:
    use(mode, request)
    x = 1.0 + 0.05 * torch.randn(45, 70)
    x[4, 7] = 0.0  # a zero row product
    x[5, 3] = -1.0  # a sign flip
    n = torch.randint(-3, 4, (33, 9), dtype=torch.int32)  # wraps like torch's int64
    got, igot = row_products(x, n)
    xd = x.double()
    want = torch.stack([xd.prod(1), xd.prod(1), (xd * 2).prod(1) * 0.5])
    close(got, want, atol=1e-6, rtol=2e-5)
    assert torch.equal(igot, n.prod(1))


def test_prod_in_a_looped_reduction(compiled_mode: None, poison_empty: None) -> None:
    """A row too wide for one block is multiplied chunk by chunk (padding lanes are 1)."""
    seed()
    x = 1.0 + 0.02 * torch.randn(40, 150)
    n = torch.ones(32, 4, dtype=torch.int32)
    bound = row_products.bind((x, n))
    space = bound.config_space
    chunks = [c for c in space.params["reduction_loops[0]"] if c]
    config = space.default().replace(reduction_loops=[chunks[0]] + [None] * (
        len(space.default().reduction_loops) - 1))
    got, _ = bound.compile(config)(x, n)
    close(got[0], x.double().prod(1), atol=1e-6, rtol=2e-5)


N_MATH = 9


@ts.kernel
def inverse_math(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty([N_MATH, x.size(0)], dtype=x.dtype, device=x.device)
    for t in ts.tile(x.size(0), block_size=64):
        v = x[t]
        out[0, t] = torch.atan(v)
        out[1, t] = torch.asin(v)
        out[2, t] = v.arccos()
        out[3, t] = torch.sinh(v)
        out[4, t] = v.cosh()
        out[5, t] = torch.arcsinh(v)
        out[6, t] = torch.acosh(v)
        out[7, t] = torch.atanh(v)
        out[8, t] = torch.tanh(v)  # relative accuracy near 0 too (1 - 2/(e^2x + 1) cancels)
    return out


def _edge_values() -> torch.Tensor:
    """Both signs of zeros, tiny, branch boundaries of the range reductions, huge, inf, nan."""
    mags = [0.0, 1e-30, 1e-8, 1e-4, 0.1, 0.41, 0.4142136, 0.42, 0.5, 0.5000001, 0.7, 0.99,
            0.9999999, 1.0, 1.0000001, 1.5, 2.0, 2.4142137, 3.0, 10.0, 79.0, 81.0, 88.0,
            1e3, 1499.0, 1501.0, 1e6, 1e20, 3e38, math.inf, math.nan]
    return torch.tensor(mags + [-m for m in mags])


def _agree(got: torch.Tensor, want: torch.Tensor, rtol: float) -> None:
    """float32 ``got`` equals float64 ``want`` rounded to float32 within ``rtol`` relative
    (nan where torch has nan, the same infinities)."""
    want = want.float()
    assert torch.equal(got.isnan(), want.isnan())
    fin = want.isfinite()
    assert torch.equal(got[~fin & ~want.isnan()], want[~fin & ~want.isnan()])
    err = (got[fin].double() - want[fin].double()).abs()
    assert (err <= rtol * want[fin].double().abs() + 1e-37).all(), err.max()


@pytest.mark.parametrize("mode", MODES)
def test_inverse_and_hyperbolic_math(mode: str, request: pytest.FixtureRequest,
                                     poison_empty: None) -> None:
    use(mode, request)
    x = torch.cat([_edge_values(), torch.randn(300) * 3, torch.rand(200) * 2 - 1,
                   torch.rand(100) * 176 - 88])  # torch's float32 sinh overflows past 88.7
    got = inverse_math(x)
    xd = x.double()
    want = torch.stack([xd.atan(), xd.asin(), xd.acos(), xd.sinh(), xd.cosh(), xd.asinh(),
                        xd.acosh(), xd.atanh(), xd.tanh()])
    for row in range(N_MATH):
        _agree(got[row], want[row], rtol=1e-6)
    if mode == "compiled_mode":  # torch's float32 sinh/cosh overflow early; these do not
        big = inverse_math(torch.tensor([89.0, -89.0]))
        _agree(big[3:5], torch.tensor([89.0, -89.0]).double().sinh().expand(2, 2) *
               torch.tensor([[1.0, 1.0], [1.0, -1.0]]).double(), rtol=1e-6)


@ts.kernel
def two_operand_math(y: torch.Tensor, x: torch.Tensor, s: float) -> torch.Tensor:
    out = torch.empty([5, y.size(0)], dtype=torch.float32, device=y.device)
    for t in ts.tile(y.size(0), block_size=64):
        a, b = y[t], x[t]
        out[0, t] = torch.atan2(a, b)
        out[1, t] = a.arctan2(b)
        out[2, t] = torch.pow(a, b)
        out[3, t] = a ** s + a ** 10
        out[4, t] = torch.atan2(a, b.abs() + s) * (math.atan2(1.0, s) + math.atanh(0.5))
    return out


@pytest.mark.parametrize("mode", MODES)
def test_atan2_and_pow_with_a_block_exponent(mode: str, request: pytest.FixtureRequest,
                                             poison_empty: None) -> None:
    use(mode, request)
    e = _edge_values()
    # every pair of edge values, plus random ones; integer exponents meet negative bases
    y = torch.cat([e.repeat_interleave(len(e)), torch.randn(500) * 3])
    x = torch.cat([e.repeat(len(e)), torch.randint(-6, 7, (250,)).float(),
                   torch.randn(250) * 2])
    got = two_operand_math(y, x, 2.5)
    yd, xd = y.double(), x.double()
    _agree(got[0], torch.atan2(yd, xd), rtol=1e-6)
    _agree(got[1], torch.atan2(yd, xd), rtol=1e-6)
    # exp(b * log|a|) in float32: the error grows with |b * log a| (2e-6 at results ~1e-13)
    small = (xd * yd.abs().log()).abs() < 30
    _agree(got[2][small], torch.pow(yd, xd)[small], rtol=3e-6)
    _agree(got[3], yd ** 2.5 + yd ** 10, rtol=3e-6)
    _agree(got[4], torch.atan2(yd, xd.abs() + 2.5) * (
        math.atan2(1, 2.5) + math.atanh(0.5)), rtol=1e-6)


def test_pow_special_cases_like_torch(compiled_mode: None) -> None:
    """0 ** 0, nan ** 0, 1 ** nan, (-1) ** inf are 1; negative bases with integer exponents
    are real, with non-integer ones nan; -inf ** 0.5 is inf."""
    y = torch.tensor([0.0, math.nan, 1.0, -1.0, -2.0, -2.0, -2.0, -math.inf, -0.0, 0.0])
    x = torch.tensor([0.0, 0.0, math.nan, math.inf, 3.0, 2.0, 0.5, 0.5, -1.0, -1.0])
    y, x = y.repeat(4), x.repeat(4)
    got = two_operand_math(y, x, 2.5)[2]
    _agree(got, torch.pow(y.double(), x.double()), rtol=1e-6)


@ts.kernel
def uniform(x: torch.Tensor, seed: int) -> torch.Tensor:
    out = torch.empty([x.size(0), x.size(1)], dtype=torch.float32, device=x.device)
    for tm in ts.tile(x.size(0)):
        out[tm, :] = ts.rand([tm, x.size(1)], seed)
    return out


@ts.kernel
def dropout(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm, tn in ts.tile(x.size(), block_size=[32, 64]):
        keep = ts.rand([tm, tn], seed) >= p
        out[tm, tn] = torch.where(keep, x[tm, tn] / (1 - p), 0.0)
    return out


def test_philox_known_answer() -> None:
    """Random123's Philox4x32-10 test vector: counter 0, key 0 -> first word 0x6627e8d5."""
    from torchship.kernels.ops.random import philox_uniform

    want = torch.tensor(0x6627E8D5, dtype=torch.float32) * torch.tensor(4.6566127342e-10)
    assert torch.equal(philox_uniform(0, torch.tensor([0])), want.reshape(1))


def test_rand_is_uniform_deterministic_and_block_size_free(compiled_mode: None,
                                                           poison_empty: None) -> None:
    x = torch.empty(100, 256)  # a ragged last row tile
    u = uniform(x, 2024)
    assert ((u >= 0) & (u < 1)).all()
    n = u.numel()
    assert abs(u.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(u.var().item() - 1 / 12) < 2e-3
    counts = torch.histc(u, bins=16, min=0.0, max=1.0)
    assert (counts - n / 16).abs().max() < 5 * math.sqrt(n / 16)
    assert torch.equal(uniform(x, 2024), u)  # the same seed draws the same numbers
    assert (uniform(x, 2025) != u).float().mean() > 0.999  # another seed, other numbers
    assert u.unique().numel() > 0.99 * n  # every position has its own counter
    bound = uniform.bind((x, 2024))
    space = bound.config_space
    for bs in (16, 32):  # positions, not blocks, pick the numbers
        assert torch.equal(bound.compile(space.default().replace(block_sizes=[bs]))(x, 2024), u)


def test_rand_reference_mode_draws_the_compiled_numbers(request: pytest.FixtureRequest,
                                                        poison_empty: None) -> None:
    x = torch.empty(70, 90)
    use("compiled_mode", request)
    compiled = uniform(x, 7), dropout(x.fill_(1.0), 0.25, 7)
    use("ref_mode", request)
    assert torch.equal(uniform(x, 7), compiled[0])
    assert torch.equal(dropout(x, 0.25, 7), compiled[1])


@pytest.mark.parametrize("mode", MODES)
def test_dropout_keeps_one_minus_p_and_rescales(mode: str, request: pytest.FixtureRequest,
                                                poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(200, 150)
    for p in (0.1, 0.5):
        got = dropout(x, p, 99)
        kept = got != 0
        rate = kept.float().mean().item()
        assert abs(rate - (1 - p)) < 5 * math.sqrt(p * (1 - p) / x.numel())
        close(got[kept], x.double()[kept] / (1 - p), atol=0, rtol=1e-6)
        assert torch.equal(got, dropout(x, p, 99))
        assert not torch.equal(kept, dropout(x, p, 100) != 0)


@ts.kernel
def normal_noise(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm, tn in ts.tile(x.size(), block_size=[32, 64]):
        out[tm, tn] = x[tm, tn] + sigma * ts.randn([tm, tn], seed)
    return out


def test_randn_is_standard_normal_in_both_modes(request: pytest.FixtureRequest,
                                                poison_empty: None) -> None:
    x = torch.zeros(150, 200)
    use("compiled_mode", request)
    z = normal_noise(x, 1.0, 11)
    n = z.numel()
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.std().item() - 1.0) < 0.02
    assert abs((z.abs() < 1).float().mean().item() - math.erf(1 / math.sqrt(2))) < 0.01
    assert torch.equal(normal_noise(x, 1.0, 11), z)
    assert (normal_noise(x, 1.0, 12) != z).float().mean() > 0.999
    use("ref_mode", request)  # the same Box-Muller of the same Philox words (last-bit log/cos)
    close(normal_noise(x + 1.0, 2.0, 11), 1.0 + 2.0 * z.double(), atol=1e-5, rtol=1e-5)


def test_torch_rand_like_points_to_ts_rand(compiled_mode: None) -> None:
    @ts.kernel
    def noisy(x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for t in ts.tile(x.size(0)):
            out[t] = x[t] + torch.rand_like(x[t])
        return out

    with pytest.raises(ts.KernelSyntaxError, match="random numbers") as info:
        noisy(torch.randn(10))
    assert "ts.rand([tm, tn], seed)" in str(info.value)
