"""Plain Python helper functions called from device code are inlined at trace time: defaults,
keywords, closures, module constants, nested helpers, tuple returns, host-constant ``if``;
compiled (interpreter) and in ref mode against torch in float64; unsupported helper shapes are
refused with an error that names the helper."""

from __future__ import annotations

import pytest
import torch

import torchship as ts
from tests.kernels.test_compiler import close, seed
from torchship.kernels import KernelSyntaxError, KernelTypeError

SCALE = 1.702


def _gate(v: torch.Tensor, scale: float = SCALE) -> torch.Tensor:
    return v * torch.sigmoid(scale * v)


def _normalize(row: torch.Tensor, eps: float, *, center: bool = True) -> torch.Tensor:
    if center:
        row = row - row.mean(dim=1, keepdim=True)
    return row * torch.rsqrt((row * row).mean(dim=1, keepdim=True) + eps)


def _online_step(scores, row_max, denom):  # noqa: ANN001, ANN202 - untyped on purpose
    new_max = torch.maximum(row_max, scores.amax(dim=1, keepdim=True))
    p = torch.exp(scores - new_max)
    denom = denom * torch.exp(row_max - new_max) + p.sum(dim=1, keepdim=True)
    return new_max, denom


def make_scaled(factor: float):  # noqa: ANN201
    def scaled(v):  # noqa: ANN001, ANN202 - a closure over `factor`
        return _gate(v) * factor

    return scaled


_times3 = make_scaled(3.0)


@ts.kernel
def uses_helpers(x: torch.Tensor, eps: float, center: bool) -> torch.Tensor:
    out = torch.empty([4, x.size(0), x.size(1)], dtype=x.dtype, device=x.device)
    for tm in ts.tile(x.size(0)):
        row = x[tm, :]
        out[0, tm, :] = _gate(row)
        out[1, tm, :] = _gate(row, scale=0.5) + _times3(row)
        out[2, tm, :] = _normalize(row, eps, center=center)
        row_max = ts.full([tm, 1], float("-inf"), dtype=torch.float32)
        denom = ts.zeros([tm, 1], dtype=torch.float32)
        row_max, denom = _online_step(row, row_max, denom)
        out[3, tm, :] = torch.exp(row - row_max) / denom
    return out


def _reference(x: torch.Tensor, eps: float, center: bool) -> torch.Tensor:
    def gate(v: torch.Tensor, s: float = SCALE) -> torch.Tensor:
        return v * torch.sigmoid(s * v)

    r = x - x.mean(1, keepdim=True) if center else x
    return torch.stack([gate(x), gate(x, 0.5) + 3 * gate(x),
                        r * torch.rsqrt((r * r).mean(1, keepdim=True) + eps), torch.softmax(x, 1)])


@pytest.mark.parametrize("mode", ["compiled_mode", "ref_mode"])
@pytest.mark.parametrize("center", [True, False])
def test_helpers_are_inlined(mode: str, center: bool, request: pytest.FixtureRequest,
                             poison_empty: None) -> None:
    request.getfixturevalue(mode)
    seed()
    x = torch.randn(37, 90)
    close(uses_helpers(x, 1e-5, center), _reference(x.double(), 1e-5, center), atol=2e-5,
          rtol=2e-5)


def _loops(v):  # noqa: ANN001, ANN202
    for _ in range(2):
        v = v * 2
    return v


def _early(v, flag):  # noqa: ANN001, ANN202
    if flag:
        return v
    return -v


def _star(*vs):  # noqa: ANN002, ANN202
    return vs[0]


def _recurse(v):  # noqa: ANN001, ANN202
    return _recurse(v)


def _kernel_calling(helper, *extra):  # noqa: ANN001, ANN002, ANN202
    @ts.kernel
    def k(x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        none, one = len(extra) == 0, len(extra) == 1  # bools: compile-time branches
        a, b = (list(extra) + [None, None])[:2]
        for t in ts.tile(x.size(0)):
            if none:
                out[t] = helper(x[t])
            elif one:
                out[t] = helper(x[t], a)
            else:
                out[t] = helper(x[t], a, b)
        return out

    return k


@pytest.mark.parametrize(("helper", "extra", "error", "match"), [
    (_loops, (), KernelSyntaxError, "helper `_loops` contains a loop"),
    (_early, (True,), KernelSyntaxError, "helper `_early` returns before its last statement"),
    (_star, (), KernelSyntaxError, r"helper `_star` takes \*args"),
    (_recurse, (), KernelSyntaxError, "nest deeper than"),
    (_gate, (1.0, 2.0), KernelTypeError, "call of helper `_gate`"),
])
def test_unsupported_helpers_are_refused(helper, extra, error, match,  # noqa: ANN001
                                         compiled_mode: None) -> None:
    with pytest.raises(error, match=match):
        _kernel_calling(helper, *extra)(torch.randn(40))


def test_inlined_helper_source_is_part_of_the_cache_key(compiled_mode: None) -> None:
    x = torch.randn(20, 30)
    plain = _kernel_calling(lambda_free_double)
    bound = plain.bind((x,))
    assert "lambda_free_double" in " ".join(bound.parsed.inlined)
    assert bound.source_hash != plain.source_hash  # the kernel's own hash plus the helper's


def lambda_free_double(v):  # noqa: ANN001, ANN201
    return v * 2
