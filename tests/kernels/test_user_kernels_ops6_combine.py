"""User combine functions: ``ts.reduce(fn, x, dim)`` and ``ts.associative_scan(fn, x, dim)``
with plain ``def``s of two values or two tuples (an argmax with its index, a first-order
linear recurrence, a reverse product, a running max), compiled (Triton interpreter) and
reference mode against torch eager in float64; and the refusals.

Example:
    pytest -q tests/kernels/test_user_kernels_ops6_combine.py
"""

from __future__ import annotations

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use


def mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # traced like any helper
    return a * b


def bit_or(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a | b


def running_max(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.maximum(a, b)


Pair = tuple[torch.Tensor, torch.Tensor]


def argmax_pair(a: Pair, b: Pair) -> Pair:
    va, ia = a
    vb, ib = b
    take_b = (vb > va) | ((vb == va) & (ib < ia))
    return torch.where(take_b, vb, va), torch.where(take_b, ib, ia)


def linear_recurrence(a: Pair, b: Pair) -> Pair:
    """(decay, value) pairs: h_t = decay_t * h_{t-1} + value_t composes associatively."""
    d1, v1 = a
    d2, v2 = b
    return d1 * d2, v1 * d2 + v2


@ts.kernel
def combines(x: torch.Tensor, pos: torch.Tensor, bits: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    m, n = x.size()
    prod = torch.empty([m], dtype=x.dtype, device=x.device)
    best = torch.empty([m], dtype=torch.int32, device=x.device)
    ors = torch.empty([m, 1], dtype=torch.int32, device=x.device)
    h = torch.empty_like(x)
    suffix = torch.empty_like(x)
    cummax = torch.empty_like(x)
    for tm in ts.tile(m, block_size=32):
        v = x[tm, :]
        prod[tm] = ts.reduce(mul, v, 1, other=1.0)
        _, idx = ts.reduce(argmax_pair, (v, pos[tm, :]), dim=1, other=(float("-inf"), 0))
        best[tm] = idx
        ors[tm, :] = ts.reduce(bit_or, bits[tm, :], 1, keep_dims=True)
        h[tm, :] = ts.associative_scan(linear_recurrence, (torch.sigmoid(v), v), 1)[1]
        suffix[tm, :] = ts.associative_scan(mul, v, 1, reverse=True, other=1.0)
        cummax[tm, :] = ts.associative_scan(running_max, v, dim=-1)
    return prod, best, ors, h, suffix, cummax


@pytest.mark.parametrize("mode", MODES)
def test_user_reductions_and_scans_match_torch(mode: str, request: pytest.FixtureRequest,
                                               poison_empty: None) -> None:
    use(mode, request)
    m, n = 40, 23  # 23 pads to 32: padded lanes hold `other`
    x = 1.0 + 0.1 * torch.randn(m, n)
    x[3, 5] = x[3, 9] = 2.0  # a tie: the first index wins
    pos = torch.arange(n, dtype=torch.int32).expand(m, n).contiguous()
    bits = (1 << torch.randint(0, 20, (m, n))).to(torch.int32)
    prod, best, ors, h, suffix, cummax = combines(x, pos, bits)
    xd = x.double()
    close(prod, xd.prod(1), atol=0, rtol=2e-6)
    assert torch.equal(best, x.argmax(1).int())
    want_or = torch.zeros(m, dtype=torch.int32)
    for j in range(n):
        want_or |= bits[:, j]
    assert torch.equal(ors[:, 0], want_or)
    decay, state, hs = torch.sigmoid(xd), torch.zeros(m, dtype=torch.float64), []
    for t in range(n):
        state = decay[:, t] * state + xd[:, t]
        hs.append(state)
    close(h, torch.stack(hs, 1), atol=0, rtol=2e-6)
    close(suffix, xd.flip(1).cumprod(1).flip(1), atol=0, rtol=2e-6)
    assert torch.equal(cummax, torch.cummax(x, 1).values)


def outer_use(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a + b + SCALE


SCALE = 2.0


def two_results(a: torch.Tensor, b: torch.Tensor) -> Pair:
    return a, b


@pytest.mark.parametrize(("body", "message"), [
    ("ts.reduce(torch.add, x[tm, :], 1)", "plain module-level `def`"),
    ("ts.reduce(two_results, x[tm, :], 1)", "returns 2 value"),
    ("ts.reduce(mul, x[tm, :], 1, other=(1.0, 2.0))", "one number per input"),
    ("ts.associative_scan(mul, x[tm, :], 0)", "would restart in every program"),
])
def test_combine_refusals_say_what_to_write(body: str, message: str,
                                            compiled_mode: None) -> None:
    namespace = {"torch": torch, "ts": ts, "mul": mul, "two_results": two_results}
    src = (
        "def bad(x: torch.Tensor) -> torch.Tensor:\n"
        "    out = torch.empty([x.size(0)], dtype=x.dtype, device=x.device)\n"
        "    for tm in ts.tile(x.size(0)):\n"
        f"        out[tm] = {body}\n"
        "    return out\n"
    )
    import linecache

    filename = f"<combine refusal {message}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    exec(compile(src, filename, "exec"), namespace)  # a kernel from text
    kernel = ts.kernel(namespace["bad"])
    with pytest.raises(ts.KernelError, match=message):
        kernel(torch.randn(8, 16))


def test_combine_function_constants_from_its_module_are_folded(compiled_mode: None,
                                                               poison_empty: None) -> None:
    """A module-level float used by the combine function is a constant, not a block."""

    @ts.kernel
    def shifted(x: torch.Tensor) -> torch.Tensor:
        out = torch.empty([x.size(0)], dtype=x.dtype, device=x.device)
        for tm in ts.tile(x.size(0), block_size=32):
            out[tm] = ts.reduce(outer_use, x[tm, :], 1)
        return out

    x = torch.randn(33, 16)
    want = x[:, 0].double()
    for j in range(1, 16):
        want = want + x[:, j].double() + SCALE
    close(shifted(x), want, atol=1e-4, rtol=1e-5)
