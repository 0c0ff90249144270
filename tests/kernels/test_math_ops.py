"""Element-wise math functions (the ones written without libdevice, so accuracy matters) and
scalar arguments cast into half-precision work, compiled to Triton and run in the interpreter,
against torch in float64."""

from __future__ import annotations

import math

import pytest
import torch

import torchship as ts
from tests.kernels.test_compiler import close, seed

N_MATH = 11


@ts.kernel
def math_zoo(x: torch.Tensor, s: float) -> torch.Tensor:
    out = torch.empty([N_MATH, x.size(0), x.size(1)], dtype=torch.float32, device=x.device)
    for tm, tn in ts.tile(x.size()):
        v = x[tm, tn]
        out[0, tm, tn] = torch.log1p(v.abs())
        out[1, tm, tn] = torch.log1p(v * 1e-6)  # tiny arguments: log(1 + x) would lose them
        out[2, tm, tn] = torch.expm1(v) + torch.expm1(v * 1e-6) * 1e6
        out[3, tm, tn] = torch.log10(v.abs() + 0.5) + torch.tan(v * 0.5)
        out[4, tm, tn] = torch.trunc(v * 3.0) + torch.sign(v) + v.sign() * 2
        out[5, tm, tn] = torch.reciprocal(v.abs() + 0.25) + (v.abs() + 1.0).reciprocal()
        out[6, tm, tn] = torch.floor(v * 2.0) + torch.ceil(v * 2.0) + torch.sin(v) + v.cos()
        out[7, tm, tn] = v.expm1()
        out[8, tm, tn] = v * math.log1p(s) + math.expm1(s)  # host math folds on the scalar
        out[9, tm, tn] = torch.sign(v.int()).float()
        out[10, tm, tn] = torch.where(v > 0, v, v * s)
    return out


def math_zoo_ref(x: torch.Tensor, s: float) -> torch.Tensor:
    return torch.stack([
        torch.log1p(x.abs()), torch.log1p(x * 1e-6), torch.expm1(x) + torch.expm1(x * 1e-6) * 1e6,
        torch.log10(x.abs() + 0.5) + torch.tan(x * 0.5),
        torch.trunc(x * 3) + torch.sign(x) + x.sign() * 2,
        torch.reciprocal(x.abs() + 0.25) + 1 / (x.abs() + 1),
        torch.floor(x * 2) + torch.ceil(x * 2) + torch.sin(x) + torch.cos(x), torch.expm1(x),
        x * math.log1p(s) + math.expm1(s), torch.sign(x.int()).double(),
        torch.where(x > 0, x, x * s),
    ])


@pytest.mark.parametrize("mode", ["compiled_mode", "ref_mode"])
def test_math_functions_match_torch(mode: str, request: pytest.FixtureRequest,
                                    poison_empty: None) -> None:
    request.getfixturevalue(mode)
    seed()
    x = torch.randn(37, 70) * 3
    got = math_zoo(x, 0.3)
    want = math_zoo_ref(x.double(), 0.3)
    # relative error of the tiny-argument rows is what the accurate forms are for
    close(got[1], want[1], atol=0, rtol=1e-5)
    close(got, want, atol=2e-5, rtol=2e-5)


@ts.kernel
def leaky(x: torch.Tensor, slope: float) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size()):
        v = x[t]
        out[t] = torch.where(v > 0, v, v * slope)
    return out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_float_scalar_argument_meets_half_tensors(dtype: torch.dtype, compiled_mode: None,
                                                 poison_empty: None) -> None:
    """A Python float argument is cast to the tensor's dtype (in the interpreter a scalar
    argument is a plain number, with no ``.to``)."""
    seed()
    x = torch.randn(50, 70).to(dtype)
    want = torch.where(x > 0, x, x * 0.2)
    close(leaky(x, 0.2), want, atol=1e-2 if dtype != torch.float32 else 1e-6, rtol=1e-2)


@ts.kernel
def floor_ops(x: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.empty([4, x.size(0), x.size(1)], dtype=x.dtype, device=x.device)
    for tm, tn in ts.tile(x.size()):
        a, b = x[tm, tn], y[tm, tn]
        out[0, tm, tn] = a // b
        out[1, tm, tn] = a % b
        out[2, tm, tn] = a // n + a % n
        out[3, tm, tn] = tn.index[None, :] // 3 - (tm.index[:, None] % 4)
    return out


def _floor_ref(x: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
    cols = torch.arange(x.size(1))[None, :].expand_as(x)
    rows = torch.arange(x.size(0))[:, None].expand_as(x)
    return torch.stack([torch.floor_divide(x, y), torch.remainder(x, y),
                        torch.floor_divide(x, n) + torch.remainder(x, n),
                        (cols // 3 - rows % 4).to(x.dtype)])


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.float32])
def test_floor_division_and_modulo_follow_torch(dtype: torch.dtype, compiled_mode: None,
                                                 poison_empty: None) -> None:
    """``//`` and ``%`` round toward -inf with the divisor's sign, for negatives too."""
    seed()
    if dtype.is_floating_point:
        x, y = torch.randn(33, 50) * 20, torch.randn(33, 50) * 3 + 0.1
    else:
        x = torch.randint(-50, 50, (33, 50), dtype=dtype)
        y = torch.randint(1, 7, (33, 50), dtype=dtype) * (1 - 2 * torch.randint(0, 2, (33, 50), dtype=dtype))
    got = floor_ops(x, y, -3)
    want = _floor_ref(x, y, -3)
    if dtype.is_floating_point:
        close(got, want.to(dtype), atol=1e-4, rtol=1e-5)
    else:
        assert got.dtype == dtype and torch.equal(got, want.to(dtype))


@ts.kernel
def column_sums(x: torch.Tensor) -> torch.Tensor:
    out = torch.zeros([x.size(1)], dtype=torch.float32, device=x.device)
    for tm in ts.tile(x.size(0)):
        ts.atomic_add(out, [slice(None)], x[tm, :].sum(dim=0))  # `:` written where a list needs it
    return out


def test_atomic_add_with_a_whole_dimension(compiled_mode: None) -> None:
    seed()
    x = torch.randn(70, 45)
    close(column_sums(x), x.double().sum(0), atol=1e-4)
