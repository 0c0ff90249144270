"""Language features compiled to Triton and run in Triton's interpreter on CPU tensors, each
checked against torch in float64 on fresh random ragged inputs with poisoned outputs."""

from __future__ import annotations

import math
import random
import re

import pytest
import torch
import torch.nn.functional as F

import torchship as ts
from torchship.kernels import Config, KernelConfigError


def seed() -> int:
    s = random.SystemRandom().getrandbits(31)
    torch.manual_seed(s)
    return s


def close(got: torch.Tensor, want: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    assert got.shape == want.shape, (got.shape, want.shape)
    torch.testing.assert_close(got.double(), want.double(), atol=atol, rtol=rtol)


# ------------------------------------------------------------------------------- kernels


@ts.kernel
def unary_zoo(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty([12, x.size(0), x.size(1)], dtype=torch.float32, device=x.device)
    for tm, tn in ts.tile(x.size()):
        v = x[tm, tn]
        out[0, tm, tn] = torch.exp(v) + torch.log(torch.abs(v) + 1.0)
        out[1, tm, tn] = torch.sqrt(torch.abs(v)) + torch.rsqrt(v * v + 1.0)
        out[2, tm, tn] = torch.sigmoid(v)
        out[3, tm, tn] = torch.tanh(v * 3.0)
        out[4, tm, tn] = torch.erf(v)
        out[5, tm, tn] = F.relu(v) + torch.relu(-v) * 2
        out[6, tm, tn] = F.gelu(v)
        out[7, tm, tn] = F.gelu(v, approximate="tanh")
        out[8, tm, tn] = F.silu(v)
        out[9, tm, tn] = torch.maximum(v, 0.25) - torch.minimum(v, -0.5)
        out[10, tm, tn] = torch.where(v > 0.1, v ** 2, torch.pow(v, 3))
        out[11, tm, tn] = v.clamp(-0.5, 0.5) + (-v).abs()
    return out


def unary_zoo_ref(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([
        torch.exp(x) + torch.log(x.abs() + 1), x.abs().sqrt() + torch.rsqrt(x * x + 1),
        torch.sigmoid(x), torch.tanh(3 * x), torch.erf(x), F.relu(x) + F.relu(-x) * 2,
        F.gelu(x), F.gelu(x, approximate="tanh"), F.silu(x),
        torch.maximum(x, torch.tensor(0.25, dtype=x.dtype)) - torch.minimum(
            x, torch.tensor(-0.5, dtype=x.dtype)),
        torch.where(x > 0.1, x**2, x**3), x.clamp(-0.5, 0.5) + x.abs(),
    ])


@ts.kernel
def reductions(x: torch.Tensor) -> torch.Tensor:
    m = x.size(0)
    out = torch.empty([9, m], dtype=torch.float32, device=x.device)
    for tm in ts.tile(m):
        row = x[tm, :]
        out[0, tm] = row.sum(dim=1)
        out[1, tm] = row.mean(dim=-1)
        out[2, tm] = row.amax(dim=1)
        out[3, tm] = torch.amin(row, dim=1)
        vals, idx = row.max(dim=1)
        out[4, tm] = vals
        out[5, tm] = idx.to(torch.float32)
        out[6, tm] = torch.argmin(row, dim=1).to(torch.float32)
        out[7, tm] = row.min(dim=1, keepdim=True).values[:, 0]
        out[8, tm] = (row * row).sum(dim=1, keepdim=True).sqrt()[:, 0]
    return out


def reductions_ref(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([
        x.sum(1), x.mean(1), x.amax(1), x.amin(1), x.max(1).values, x.argmax(1).double(),
        x.argmin(1).double(), x.min(1).values, (x * x).sum(1).sqrt(),
    ])


@ts.kernel
def tile_ranges(x: torch.Tensor, start: int, scale: float) -> torch.Tensor:
    """ts.tile(begin, end), tile attributes, ts.grid, scalar args, two launches."""
    n = x.size(0)
    out = torch.zeros_like(x)
    for t in ts.tile(start, n):
        pos = t.index.to(torch.float32)
        out[t] = x[t] * scale + pos * 0.0 + (t.end - t.begin).to(torch.float32) * 0.0
    counts = torch.zeros([n], dtype=torch.float32, device=x.device)
    for i in ts.grid(n):
        counts[i] = x[i] + 1.0
    return out + counts * 0.0 + (counts - x - 1.0)


@ts.kernel
def shared_block(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """register_block_size shared by a grid tile and an inner tile; None indexing."""
    m, n = x.size()
    bs = ts.register_block_size(16, 64)
    out = torch.empty([m], dtype=torch.float32, device=x.device)
    for tm in ts.tile(m, block_size=bs):
        acc = ts.zeros([tm], dtype=torch.float32)
        for tn in ts.tile(n, block_size=bs):
            acc = acc + (x[tm, tn] * y[None, tn]).sum(dim=1)
        out[tm] = acc
    return out


@ts.kernel
def promote(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """int + float32, half * python float, comparisons to bool, bool & bool."""
    out = torch.empty([a.size(0)], dtype=torch.float32, device=a.device)
    for t in ts.tile(a.size(0)):
        ia = a[t]
        fb = b[t]
        hc = c[t]
        mixed = ia + fb  # int32 + float32 -> float32
        half = (hc * 1.5).to(torch.float32)  # stays float16 before the cast
        flag = (ia > 0) & (fb < 0.5)
        out[t] = torch.where(flag, mixed, half)
    return out


@ts.kernel
def addmm_atomic(bias: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """torch.addmm with full-K blocks and a split over K combined with ts.atomic_add."""
    m, k = x.size()
    n = w.size(1)
    out = torch.zeros([m, n], dtype=torch.float32, device=x.device)
    total = torch.zeros([1], dtype=torch.float32, device=x.device)
    for tm, tn in ts.tile([m, n]):
        y = torch.addmm(bias[None, tn], x[tm, :], w[:, tn])
        ts.atomic_add(out, [tm, tn], y)
        ts.atomic_add(total, [0], y.sum())
    return out, total


@ts.kernel
def tunable_scale(x: torch.Tensor) -> torch.Tensor:
    factor = ts.register_tunable("factor", [1, 2, 4])
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        out[t] = (x[t] * factor) / factor
    return out


# ------------------------------------------------------------------------------- tests


def test_unary_functions_match_torch(compiled_mode: None, poison_empty: None) -> None:
    seed()
    x = torch.randn(37, 70)
    close(unary_zoo(x), unary_zoo_ref(x.double()), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("rolled", [False, True], ids=["persistent", "looped"])
def test_reductions_persistent_and_looped(rolled: bool, compiled_mode: None,
                                          poison_empty: None) -> None:
    seed()
    x = torch.randn(45, 150)
    bound = reductions.bind((x,))
    space = bound.config_space
    chunks = [c for c in space.params["reduction_loops[0]"] if c]
    config = space.default().replace(reduction_loops=[chunks[0] if rolled else None])
    got = bound.compile(config)(x)
    close(got, reductions_ref(x.double()))


def test_tile_begin_end_grid_scalars_and_two_launches(compiled_mode: None,
                                                      poison_empty: None) -> None:
    seed()
    x = torch.randn(203)
    got = tile_ranges(x, 37, 2.5)
    want = torch.zeros(203, dtype=torch.float64)
    want[37:] = x[37:].double() * 2.5
    close(got, want)


def test_register_block_size_is_one_shared_parameter(compiled_mode: None,
                                                     poison_empty: None) -> None:
    seed()
    x, y = torch.randn(70, 90), torch.randn(90)
    bound = shared_block.bind((x, y))
    assert [k for k in bound.config_space.params if k.startswith("block_sizes")] == [
        "block_sizes[0]"]
    assert bound.config_space.params["block_sizes[0]"] == [16, 32, 64]
    for bs in (16, 64):
        cfg = bound.config_space.default().replace(block_sizes=[bs])
        close(bound.compile(cfg)(x, y), (x.double() * y.double()).sum(1))


def test_dtype_promotion_follows_torch(compiled_mode: None, poison_empty: None) -> None:
    seed()
    a = torch.randint(-3, 4, (77,), dtype=torch.int32)
    b = torch.rand(77)
    c = torch.randn(77).half()
    want = torch.where((a > 0) & (b < 0.5), a + b, (c * 1.5).float())
    close(promote(a, b, c), want)


@ts.kernel
def bmm_3d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = torch.empty([a.size(0), a.size(1), b.size(2)], dtype=a.dtype)
    for tb, tm, tn in ts.tile(out.size(), block_size=[1, None, None]):
        acc = ts.zeros([tb, tm, tn], dtype=torch.float32)
        for tk in ts.tile(a.size(2)):
            acc = ts.dot(a[tb, tm, tk], b[tb, tk, tn], acc=acc)  # [1, m, k] @ [1, k, n]
        out[tb, tm, tn] = acc.to(a.dtype)
    return out


def test_batched_3d_dot_with_a_batch_block_of_one(compiled_mode: None,
                                                  poison_empty: None) -> None:
    seed()
    a, b = torch.randn(3, 45, 70), torch.randn(3, 70, 38)
    close(bmm_3d(a, b), torch.bmm(a.double(), b.double()), atol=1e-4)


def test_addmm_full_k_and_atomic_add(compiled_mode: None, poison_empty: None) -> None:
    seed()
    bias, x, w = torch.randn(40), torch.randn(50, 33), torch.randn(33, 40)
    out, total = addmm_atomic(bias, x, w)
    want = torch.addmm(bias.double(), x.double(), w.double())
    close(out, want, atol=1e-4)
    close(total, want.sum().reshape(1), atol=1e-3, rtol=1e-4)


def test_register_tunable_values_all_compute_the_same(compiled_mode: None,
                                                      poison_empty: None) -> None:
    x = torch.randn(50)
    bound = tunable_scale.bind((x,))
    assert bound.config_space.params["factor"] == [1, 2, 4]
    for f in (1, 2, 4):
        cfg = bound.config_space.default().replace(factor=f)
        close(bound.compile(cfg)(x), x)


def test_pinned_config_and_validation(compiled_mode: None) -> None:
    @ts.kernel(config=Config(block_sizes=[32], num_warps=2))
    def double(x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for t in ts.tile(x.size(0)):
            out[t] = x[t] * 2
        return out

    x = torch.randn(100)
    close(double(x), 2 * x)
    code = double.to_triton_code(args=(x,))
    assert "BLOCK_T=32" not in code and "def _double_kernel0" in code
    bad = double.bind((x,))
    with pytest.raises(KernelConfigError, match="block_sizes"):
        bad.compile(Config(block_sizes=[32, 32]))
    with pytest.raises(KernelConfigError, match="num_warps=3"):
        bad.compile(Config(block_sizes=[32], num_warps=3))


def test_partial_config_takes_the_rest_from_the_default(compiled_mode: None) -> None:
    """A pinned Config that names only block sizes and warps works for a 2-D tiled kernel with
    a looped-reduction candidate (loop orders and reduction loops come from the default)."""

    @ts.kernel(config=Config(block_sizes=[32, 64], num_warps=2))
    def scale_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for tm, tn in ts.tile(x.size()):
            out[tm, tn] = x[tm, tn] * y[tm, :].sum(dim=1, keepdim=True)
        return out

    x, y = torch.randn(70, 90), torch.randn(70, 50)
    close(scale_rows(x, y), x * y.sum(dim=1, keepdim=True))
    bound = scale_rows.bind((x, y))
    space = bound.config_space
    done = space.complete(Config(num_warps=8))
    assert done.block_sizes == space.default().block_sizes and done.num_warps == 8
    assert done.loop_orders == space.default().loop_orders
    assert space.complete(Config(block_sizes=[32, 64])).block_sizes == [32, 64]
    close(bound.compile(Config(num_warps=8))(x, y), x * y.sum(dim=1, keepdim=True))


def test_half_and_bfloat16_softmax_style_kernel(compiled_mode: None, poison_empty: None) -> None:
    @ts.kernel
    def rowscale(x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for tm in ts.tile(x.size(0)):
            row = x[tm, :]
            out[tm, :] = row / row.abs().amax(dim=1, keepdim=True)
        return out

    for dt in (torch.float16, torch.bfloat16):
        x = torch.randn(33, 65).to(dt)
        got = rowscale(x)
        assert got.dtype == dt
        close(got, x.double() / x.double().abs().amax(1, keepdim=True), atol=1e-2, rtol=1e-2)


def test_sizes_are_read_at_call_time(compiled_mode: None, poison_empty: None) -> None:
    @ts.kernel
    def inc(x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for tm in ts.tile(x.size(0)):
            out[tm, :] = x[tm, :] + 1
        return out

    for shape in ((5, 7), (40, 100), (1, 3)):
        x = torch.randn(*shape)
        close(inc(x), x + 1)
    assert math.isfinite(float(inc(torch.ones(2, 2)).sum()))


def test_64_bit_offsets_for_big_tensors(monkeypatch: pytest.MonkeyPatch, compiled_mode: None,
                                         poison_empty: None) -> None:
    """Tensors of 2**31+ elements index with int64 offsets (threshold lowered to test it)."""
    from torchship.kernels.frontend import captures

    @ts.kernel
    def gather_rows(ids: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out = torch.empty([ids.size(0), w.size(1)], dtype=w.dtype, device=w.device)
        for tn, td in ts.tile([ids.size(0), w.size(1)]):
            out[tn, td] = w[ids[tn], td] * 2
        return out

    ids, w = torch.randint(0, 50, (40,)), torch.randn(50, 33)
    monkeypatch.setattr(captures, "BIG_TENSOR", 1000)
    code = gather_rows.to_triton_code(args=(ids, w))
    assert re.search(r"\.to\(tl\.int64\)(\[[^]]*\])? \* w_stride0", code), code
    close(gather_rows(ids, w), w[ids].double() * 2)


@ts.kernel
def host_loop_scale(x: torch.Tensor, steps: int, *, eps: float = 0.0) -> torch.Tensor:
    """A launch site inside a host loop, keyword arguments, strided (transposed) inputs."""
    out = x.clone()
    for _ in range(steps):
        nxt = torch.empty_like(out)
        for tm, tn in ts.tile(out.size(), block_size=[16, None]):
            v = out[tm, tn]
            keep = tm.index[:, None] >= tn.index[None, :]
            nxt[tm, tn] = torch.where(keep, v * 2.0 + eps, v)
        out = nxt
    return out


def test_host_loops_kwargs_and_strided_inputs(compiled_mode: None, poison_empty: None) -> None:
    seed()
    base = torch.randn(40, 29)
    for x in (base, base.t()):  # contiguous and transposed
        got = host_loop_scale(x, 3, eps=0.5)
        want = x.double()
        keep = torch.arange(x.size(0))[:, None] >= torch.arange(x.size(1))[None, :]
        for _ in range(3):
            want = torch.where(keep, want * 2 + 0.5, want)
        close(got, want)


@ts.kernel
def grid2d_fill(x: torch.Tensor, value: float) -> torch.Tensor:
    """ts.grid over two dims (scalar indices), x.shape in device code, ts.full of a scalar."""
    out = torch.empty_like(x)
    for i, j in ts.grid([x.size(0), x.size(1)]):
        scale = ts.full([1], value, dtype=torch.float32)
        out[i, j] = x[i, j] * scale.sum() + x.shape[1]
    return out


def test_grid_2d_and_scalar_full(compiled_mode: None, poison_empty: None) -> None:
    seed()
    x = torch.randn(5, 7)
    close(grid2d_fill(x, 1.5), x.double() * 1.5 + 7)
