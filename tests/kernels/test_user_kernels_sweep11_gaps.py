"""Two known gaps, their refusals and the ways they name, in both modes against torch eager:

* a reshape that merges a tile with other dims (``x[tb, tm, :].reshape(-1, d)``,
  ``x[tm, :].reshape(tm * 2, 32)``) is refused, naming the host view to tile instead; the
  flattened-batch linear written that way works;
* host code computing with a ``ts.register_block_size`` symbol (Helion's layer-norm backward
  sizes its partial sums ``cdiv(m, m_block)``) is refused in both modes, naming the way:
  partials sized by the smallest block, zeroed, indexed with the tile's id. Helion's two-pass
  layer-norm backward (per-block partial ``dw``/``db``, summed in host code) is written so.

Example:
    pytest -q tests/kernels/test_user_kernels_sweep11_gaps.py
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import triton

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use


@ts.kernel
def merged_rows(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Helion's ``x[tile_b, tile_m, :].reshape(-1, d) @ w``: refused (merges two tiles)."""
    b, m, d = x.size()
    out = torch.empty([b * m, w.size(1)], device=x.device)
    for tb, tm in ts.tile([b, m], block_size=[32, 32]):
        out[tb, :] = ts.dot(x[tb, tm, :].reshape(-1, d), w[:, :])
    return out


@ts.kernel
def doubled_rows(x: torch.Tensor) -> torch.Tensor:
    """``[tm, 64] -> [tm * 2, 32]``: refused (the tile used as a number)."""
    m = x.size(0)
    out = torch.empty([m * 2, 32], device=x.device)
    for tm in ts.tile(m, block_size=32):
        out[tm, :] = x[tm, :].reshape(tm * 2, 32)[:, :]
    return out


@ts.kernel
def flat_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The way the refusal names: the batch merged in host code, one tile over its rows."""
    b, m, d = x.size()
    n = w.size(1)
    flat = x.view(b * m, d)
    out = torch.empty([b * m, n], dtype=torch.float32, device=x.device)
    for tr, tn in ts.tile([b * m, n], block_size=[32, 32]):
        acc = ts.zeros([tr, tn], dtype=torch.float32)
        for tk in ts.tile(d, block_size=32):
            acc = ts.dot(flat[tr, tk], w[tk, tn], acc)
        out[tr, tn] = acc
    return out.view(b, m, n)


def test_merging_a_tile_is_refused_with_the_way(compiled_mode: None) -> None:
    with pytest.raises(ts.KernelSyntaxError, match="merges or moves a tile") as err:
        merged_rows(torch.randn(4, 40, 32), torch.randn(32, 32))
    assert "x.view(b * m, d)" in str(err.value)
    with pytest.raises(ts.KernelTypeError, match="used as a number") as err:
        doubled_rows(torch.randn(40, 64))
    assert "view the tensor in host code" in str(err.value)


@pytest.mark.parametrize("mode", MODES)
def test_flat_linear(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    x, w = torch.randn(3, 45, 70), torch.randn(70, 50)
    close(flat_linear(x, w), x.double() @ w.double(), atol=1e-4)


@ts.kernel
def partials_by_symbol(x: torch.Tensor) -> torch.Tensor:
    """Helion's sizing: ``cdiv(m, m_block)`` rows of partial sums (refused)."""
    m, n = x.size()
    m_block = ts.register_block_size(32, 128)
    parts = torch.zeros([triton.cdiv(m, m_block), n], device=x.device)
    for tm in ts.tile(m, block_size=m_block):
        parts[tm.id, :] = x[tm, :].sum(dim=0)
    return parts.sum(dim=0)


@ts.kernel
def partials_by_expression(x: torch.Tensor) -> torch.Tensor:
    m, n = x.size()
    m_block = ts.register_block_size(32, 128)
    parts = torch.zeros([(m + m_block - 1) // m_block, n], device=x.device)
    for tm in ts.tile(m, block_size=m_block):
        parts[tm.id, :] = x[tm, :].sum(dim=0)
    return parts.sum(dim=0)


@pytest.mark.parametrize("mode", MODES)
def test_block_size_arithmetic_refused_in_both_modes(mode: str,
                                                     request: pytest.FixtureRequest) -> None:
    use(mode, request)
    for k in (partials_by_symbol, partials_by_expression):
        with pytest.raises(ts.KernelTypeError, match="register_block_size") as err:
            k(torch.randn(100, 32))
        assert "(m + 31) // 32" in str(err.value)


@ts.kernel
def layer_norm_bwd(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                   mean: torch.Tensor, rstd: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Helion's layer-norm backward: ``dx`` per row, and ``dw``/``db`` in two passes (a row of
    partial sums per m-block, then a host sum). The partials are sized by the smallest block
    the symbol allows and start at zero, so a larger block leaves rows unused."""
    m, n = x.size()
    m_block = ts.register_block_size(32, 64)
    grad_x = torch.empty_like(x)
    parts_w = torch.zeros([(m + 31) // 32, n], dtype=torch.float32, device=x.device)
    parts_b = torch.zeros([(m + 31) // 32, n], dtype=torch.float32, device=x.device)
    for tm in ts.tile(m, block_size=m_block):
        xt = x[tm, :].to(torch.float32)
        dy = grad_out[tm, :].to(torch.float32)
        xhat = (xt - mean[tm][:, None]) * rstd[tm][:, None]
        wdy = dy * weight[:].to(torch.float32)
        c1 = (xhat * wdy).sum(dim=1, keepdim=True) / n
        c2 = wdy.sum(dim=1, keepdim=True) / n
        grad_x[tm, :] = ((wdy - (xhat * c1 + c2)) * rstd[tm][:, None]).to(x.dtype)
        parts_w[tm.id, :] = (dy * xhat).sum(dim=0)
        parts_b[tm.id, :] = dy.sum(dim=0)
    return grad_x, parts_w.sum(dim=0), parts_b.sum(dim=0)


@pytest.mark.parametrize("mode", MODES)
def test_layer_norm_backward_two_pass(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    x, w, b, dy = torch.randn(150, 48), torch.randn(48), torch.randn(48), torch.randn(150, 48)
    leaves = [t.double().requires_grad_(True) for t in (x, w, b)]
    F.layer_norm(leaves[0], (48,), leaves[1], leaves[2], eps=1e-5).backward(dy.double())
    xd = x.double()
    mean = xd.mean(1)
    rstd = torch.rsqrt(xd.var(1, unbiased=False) + 1e-5)
    got = layer_norm_bwd(dy, x, w, mean.float(), rstd.float())
    for g, leaf in zip(got, leaves):
        close(g, leaf.grad, atol=1e-4)


def test_layer_norm_backward_every_block(compiled_mode: None) -> None:
    """The partials sized by the smallest block serve every block the symbol allows."""
    x, w, dy = torch.randn(150, 48), torch.randn(48), torch.randn(150, 48)
    mean, rstd = x.mean(1), torch.rsqrt(x.var(1, unbiased=False) + 1e-5)
    args = (dy, x, w, mean, rstd)
    bound = layer_norm_bwd.bind(args)
    runs = [bound.compile(bound.config_space.default().replace(block_sizes=[bs]))(*args)
            for bs in (32, 64)]
    for a, b in zip(*runs):
        close(a, b, atol=1e-5)
