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
