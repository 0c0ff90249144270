"""torch ops a Helion user calls on blocks, compositions in device code: F activations,
logsumexp, vector norms, any/all, clamp_min/clamp_max, a Python number to a block's power;
both modes against torch eager in float64, and the refusal of random numbers.

Example:
    pytest -q tests/kernels/test_user_kernels_ops.py
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use

N_ACT = 13


@ts.kernel
def activations(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty([N_ACT, x.size(0), x.size(1)], dtype=x.dtype, device=x.device)
    for tm, tn in ts.tile(x.size()):
        v = x[tm, tn]
        out[0, tm, tn] = F.leaky_relu(v, 0.1)
        out[1, tm, tn] = F.softplus(v) + F.softplus(v, beta=2.0, threshold=3.0)
        out[2, tm, tn] = F.mish(v)
        out[3, tm, tn] = F.logsigmoid(v * 10)
        out[4, tm, tn] = F.elu(v) + F.celu(v, alpha=0.5)
        out[5, tm, tn] = F.selu(v)
        out[6, tm, tn] = F.hardtanh(v, -0.5, 0.75) + F.relu6(v * 4)
        out[7, tm, tn] = F.hardsigmoid(v * 4)
        out[8, tm, tn] = F.hardswish(v * 4)
        out[9, tm, tn] = F.softsign(v)
        out[10, tm, tn] = torch.clamp_min(v, 0.1) + v.clamp_max(0.5)
        out[11, tm, tn] = 2 ** v + v.pow(3)
        out[12, tm, tn] = torch.where(v > 0, 0.5 ** v, 3.0 ** v)
    return out


def activations_ref(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([
        F.leaky_relu(x, 0.1), F.softplus(x) + F.softplus(x, beta=2.0, threshold=3.0), F.mish(x),
        F.logsigmoid(x * 10), F.elu(x) + F.celu(x, alpha=0.5), F.selu(x),
        F.hardtanh(x, -0.5, 0.75) + F.relu6(x * 4), F.hardsigmoid(x * 4), F.hardswish(x * 4),
        F.softsign(x), torch.clamp_min(x, 0.1) + x.clamp_max(0.5), 2**x + x.pow(3),
        torch.where(x > 0, 0.5**x, 3.0**x),
    ])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_activations_match_torch(mode: str, dtype: torch.dtype, request: pytest.FixtureRequest,
                                 poison_empty: None) -> None:
    use(mode, request)
    x = (torch.randn(37, 70) * 2).to(dtype)
    tol = 2e-5 if dtype == torch.float32 else 2e-2
    close(activations(x), activations_ref(x.double()), atol=tol, rtol=tol)


@ts.kernel
def row_reductions(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m = x.size(0)
    out = torch.empty([6, m], dtype=torch.float32, device=x.device)
    flags = torch.empty([3, m], dtype=torch.bool, device=x.device)
    for tm in ts.tile(m):
        v = x[tm, :]
        out[0, tm] = torch.logsumexp(v, dim=1)
        out[1, tm] = v.logsumexp(dim=-1, keepdim=True)[:, 0]
        out[2, tm] = torch.linalg.vector_norm(v, dim=1)
        out[3, tm] = v.norm(p=1, dim=1) + torch.norm(v, p=3, dim=1)
        out[4, tm] = torch.linalg.vector_norm(v, ord=math.inf, dim=1)
        out[5, tm] = (v * v).sum(dim=1)
        flags[0, tm] = (v > 2).any(dim=1)
        flags[1, tm] = torch.all(v > -2, dim=1)
        flags[2, tm] = torch.any(v.to(torch.int32), dim=1)
    return out, flags


@pytest.mark.parametrize("mode", MODES)
def test_logsumexp_norms_any_all(mode: str, request: pytest.FixtureRequest,
                                 poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(37, 70) * 2
    x[3] = float("-inf")  # logsumexp of an all -inf row is -inf (not nan)
    got, flags = row_reductions(x)
    xd = x.double()
    close(got[:2], torch.logsumexp(xd, 1).expand(2, 37))
    ok = torch.arange(37) != 3  # norms of the -inf row are inf: only logsumexp is checked there
    xo = xd[ok]
    close(got[2:, ok], torch.stack([torch.linalg.vector_norm(xo, dim=1),
                                    xo.norm(p=1, dim=1) + xo.norm(p=3, dim=1),
                                    xo.abs().amax(1), (xo * xo).sum(1)]), atol=1e-4)
    assert torch.equal(flags, torch.stack([(x > 2).any(1), (x > -2).all(1),
                                           x.to(torch.int32).bool().any(1)]))


@ts.kernel
def int_clamps(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        out[t] = torch.clamp_min(x[t], -3) + x[t].clamp_max(4)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_integer_clamp_min_max(mode: str, request: pytest.FixtureRequest,
                               poison_empty: None) -> None:
    use(mode, request)
    x = torch.randint(-10, 10, (300,), dtype=torch.int32)
    got = int_clamps(x)
    assert got.dtype == torch.int32
    assert torch.equal(got, x.clamp_min(-3) + x.clamp_max(4))


def test_random_numbers_in_device_code_are_refused(compiled_mode: None) -> None:
    @ts.kernel
    def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
        out = torch.empty_like(x)
        for t in ts.tile(x.size(0)):
            out[t] = torch.where(torch.rand_like(x[t]) > p, x[t] / (1 - p), 0.0)
        return out

    with pytest.raises(ts.KernelSyntaxError, match="random numbers") as info:
        dropout(torch.randn(10), 0.5)
    assert "host code" in str(info.value)


@ts.kernel
def matmul_with_epilogue(a: torch.Tensor, b: torch.Tensor, epilogue: object) -> torch.Tensor:
    out = torch.empty([a.size(0), b.size(1)], dtype=a.dtype, device=a.device)
    for tm, tn in ts.tile(out.size()):
        acc = ts.zeros([tm, tn], dtype=torch.float32)
        for tk in ts.tile(a.size(1)):
            acc = torch.addmm(acc, a[tm, tk], b[tk, tn])
        out[tm, tn] = epilogue(acc)  # type: ignore[operator]
    return out


def test_callable_arguments_are_refused_with_the_helper_alternative(compiled_mode: None) -> None:
    with pytest.raises(ts.KernelTypeError, match="is a callable") as info:
        matmul_with_epilogue(torch.randn(4, 4), torch.randn(4, 4), torch.relu)
    assert "module-level `def` helper" in str(info.value)


@ts.kernel
def positive_mask(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty(x.shape, dtype=torch.bool, device=x.device)
    for tm, tn in ts.tile(x.size()):
        out[tm, tn] = x[tm, tn] > 0
    return out


def test_bool_blocks_never_use_tensor_descriptors(compiled_mode: None,
                                                 poison_empty: None) -> None:
    """A bool tensor's elements (int1) have no byte size for a descriptor: pointer code. (Block
    pointers hold int8 for it: stores cast to int8, loads compare with 0; on an H100 the int1
    value was refused: 'Block element type(int8) and value element type(int1) mismatch'.)"""
    x = torch.randn(37, 64)
    cfg = ts.Config(block_sizes=[16, 16], indexing="tensor_descriptor")
    assert torch.equal(positive_mask.bind((x,)).compile(cfg)(x), x > 0)
    code = positive_mask.to_triton_code(cfg, args=(x,))
    assert "x_desc.load" in code and "out: tensor_descriptor does not apply" in code
