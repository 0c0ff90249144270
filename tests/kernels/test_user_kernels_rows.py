"""Row-wise kernels written the way a Helion user would (softmax variants, norms forward and
backward, long sums, losses, moments), in both compiled (Triton interpreter) and reference
mode, against torch eager in float64.

Example:
    pytest -q tests/kernels/test_user_kernels_rows.py
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchship.kernels as ts
from tests.kernels.test_compiler import close, seed

MODES = ["compiled_mode", "ref_mode"]


def use(mode: str, request: pytest.FixtureRequest) -> None:
    """Switch to ``mode`` (a conftest fixture name) and seed torch.

    Example:
        use("ref_mode", request)
    """
    request.getfixturevalue(mode)
    seed()


@ts.kernel
def softmax_two_pass(x: torch.Tensor) -> torch.Tensor:
    m, n = x.size()
    out = torch.empty_like(x)
    for tm in ts.tile(m):
        mi = ts.full([tm], float("-inf"), dtype=torch.float32)
        di = ts.zeros([tm], dtype=torch.float32)
        for tn in ts.tile(n):
            values = x[tm, tn]
            mi_next = torch.maximum(mi, torch.amax(values, dim=1))
            di = di * torch.exp(mi - mi_next) + torch.exp(values - mi_next[:, None]).sum(dim=1)
            mi = mi_next
        for tn in ts.tile(n):
            out[tm, tn] = torch.exp(x[tm, tn] - mi[:, None]) / di[:, None]
    return out


@ts.kernel
def softmax_bwd(grad_out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    gx = torch.empty_like(y)
    for tm in ts.tile(y.size(0)):
        dy = grad_out[tm, :]
        yy = y[tm, :]
        gx[tm, :] = yy * (dy - (dy * yy).sum(dim=1, keepdim=True))
    return gx


@pytest.mark.parametrize("mode", MODES)
def test_softmax_two_pass_and_backward(mode: str, request: pytest.FixtureRequest,
                                       poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(37, 150) * 3
    close(softmax_two_pass(x), x.double().softmax(1))
    y = x.double().softmax(1)
    dy = torch.randn(37, 150)
    want = y * (dy - (dy * y).sum(1, keepdim=True))
    close(softmax_bwd(dy, y.float()), want)


@ts.kernel
def long_sum(x: torch.Tensor) -> torch.Tensor:
    m, n = x.size()
    out = torch.empty([m], dtype=x.dtype, device=x.device)
    for tm in ts.tile(m):
        acc = ts.zeros([tm], dtype=torch.float32)
        for tn in ts.tile(n):
            acc += x[tm, tn].sum(dim=1)
        out[tm] = acc
    return out


@ts.kernel
def column_sum(x: torch.Tensor) -> torch.Tensor:
    m, n = x.size()
    out = torch.empty([n], dtype=x.dtype, device=x.device)
    for tn in ts.tile(n):
        acc = ts.zeros([tn], dtype=torch.float32)
        for tm in ts.tile(m):
            acc = acc + x[tm, tn].sum(dim=0)
        out[tn] = acc
    return out


@pytest.mark.parametrize("mode", MODES)
def test_long_sum_over_either_axis(mode: str, request: pytest.FixtureRequest,
                                   poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(37, 150)
    close(long_sum(x), x.double().sum(1), atol=1e-4)
    close(column_sum(x), x.double().sum(0), atol=1e-4)


@ts.kernel
def rms_norm_fwd(x: torch.Tensor, weight: torch.Tensor,
                 eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    m, n = x.size()
    out = torch.empty_like(x)
    inv_rms = torch.empty([m], dtype=torch.float32, device=x.device)
    for tm in ts.tile(m):
        xt = x[tm, :].to(torch.float32)
        inv = torch.rsqrt(torch.mean(xt * xt, dim=-1) + eps)
        out[tm, :] = (xt * inv[:, None] * weight[:].to(torch.float32)).to(out.dtype)
        inv_rms[tm] = inv
    return out, inv_rms


@ts.kernel
def rms_norm_bwd(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                 inv_rms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m, n = x.size()
    grad_x = torch.empty_like(x)
    grad_w = torch.zeros([n], dtype=torch.float32, device=x.device)
    for tm in ts.tile(m):
        xt = x[tm, :].to(torch.float32)
        dy = grad_out[tm, :].to(torch.float32)
        r = inv_rms[tm]
        xhat = xt * r[:, None]
        dyw = dy * weight[:].to(torch.float32)
        c = (dyw * xhat).sum(dim=1, keepdim=True) / n
        grad_x[tm, :] = (r[:, None] * (dyw - xhat * c)).to(x.dtype)
        ts.atomic_add(grad_w, [slice(None)], (dy * xhat).sum(dim=0))
    return grad_x, grad_w


def _grads(fn: object, dy: torch.Tensor, *inputs: torch.Tensor) -> list[torch.Tensor]:
    leaves = [t.double().requires_grad_(True) for t in inputs]
    fn(*leaves).backward(dy.double())  # type: ignore[operator]
    return [t.grad for t in leaves]


@pytest.mark.parametrize("mode", MODES)
def test_rms_norm_forward_and_backward(mode: str, request: pytest.FixtureRequest,
                                       poison_empty: None) -> None:
    use(mode, request)
    x, w, dy = torch.randn(37, 70), torch.randn(70), torch.randn(37, 70)

    def rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-5) * w

    y, inv = rms_norm_fwd(x, w)
    close(y, rms(x.double(), w.double()))
    close(inv, torch.rsqrt((x.double() ** 2).mean(1) + 1e-5))
    gx, gw = rms_norm_bwd(dy, x, w, inv)
    want_x, want_w = _grads(rms, dy, x, w)
    close(gx, want_x, atol=1e-4)
    close(gw, want_w, atol=1e-4)


@ts.kernel
def layer_norm_fwd(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float = 1e-5
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m, n = x.size()
    out = torch.empty_like(x)
    mean_out = torch.empty([m], dtype=torch.float32, device=x.device)
    rstd_out = torch.empty([m], dtype=torch.float32, device=x.device)
    for tm in ts.tile(m):
        acc = x[tm, :].to(torch.float32)
        var, mean = torch.var_mean(acc, dim=-1, keepdim=True, correction=0)
        rstd = torch.rsqrt(var + eps)
        out[tm, :] = ((acc - mean) * rstd * w[:] + b[:]).to(out.dtype)
        mean_out[tm] = mean.squeeze(-1)
        rstd_out[tm] = torch.squeeze(rstd, 1)
    return out, mean_out, rstd_out


@ts.kernel
def layer_norm_bwd(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                   mean: torch.Tensor, rstd: torch.Tensor, groups: int = 4
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dx per row; dw/db as per-group partial sums (one program per group of rows)."""
    m, n = x.size()
    grad_x = torch.empty_like(x)
    gw_part = torch.zeros([groups, n], dtype=torch.float32, device=x.device)
    gb_part = torch.zeros([groups, n], dtype=torch.float32, device=x.device)
    rows = (m + groups - 1) // groups
    for g in ts.grid(groups):
        for tm in ts.tile(g * rows, min((g + 1) * rows, m)):
            dy = grad_out[tm, :].to(torch.float32)
            xhat = (x[tm, :].to(torch.float32) - mean[tm][:, None]) * rstd[tm][:, None]
            wdy = weight[None, :].to(torch.float32) * dy
            c1 = (xhat * wdy).sum(dim=1, keepdim=True) / n
            c2 = wdy.sum(dim=1, keepdim=True) / n
            grad_x[tm, :] = ((wdy - (xhat * c1 + c2)) * rstd[tm][:, None]).to(x.dtype)
            ts.atomic_add(gw_part, [g, slice(None)], (dy * xhat).sum(dim=0))
            ts.atomic_add(gb_part, [g, slice(None)], dy.sum(dim=0))
    return grad_x, gw_part.sum(0), gb_part.sum(0)


@pytest.mark.parametrize("mode", MODES)
def test_layer_norm_forward_and_backward(mode: str, request: pytest.FixtureRequest,
                                         poison_empty: None) -> None:
    use(mode, request)
    x, w, b, dy = torch.randn(37, 70) * 2 + 1, torch.randn(70), torch.randn(70), \
        torch.randn(37, 70)
    y, mean, rstd = layer_norm_fwd(x, w, b)
    xd = x.double()
    close(y, F.layer_norm(xd, (70,), w.double(), b.double(), 1e-5), atol=1e-4)
    close(mean, xd.mean(1))
    close(rstd, torch.rsqrt(xd.var(1, unbiased=False) + 1e-5))
    got = layer_norm_bwd(dy, x, w, mean, rstd)
    want = _grads(lambda x, w, b: F.layer_norm(x, (70,), w, b, 1e-5), dy, x, w, b)
    for g, wnt in zip(got, want):
        close(g, wnt, atol=1e-4)


@ts.kernel
def moments(x: torch.Tensor) -> torch.Tensor:
    m, n = x.size()
    out = torch.empty([6, m], dtype=torch.float32, device=x.device)
    for tm in ts.tile(m):
        row = x[tm, :]
        v, mu = torch.var_mean(row, dim=-1, correction=0)
        out[0, tm] = v
        out[1, tm] = mu
        out[2, tm] = row.var(dim=1).float()
        out[3, tm] = torch.std(row, dim=1, unbiased=False).float()
        s, mu2 = torch.std_mean(row, dim=1, keepdim=True)
        out[4, tm] = s.squeeze(1).float()
        out[5, tm] = mu2[:, 0].float()
    return out


@ts.kernel
def column_var(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty([x.size(1)], dtype=torch.float32, device=x.device)
    for tn in ts.tile(x.size(1)):
        out[tn] = x[:, tn].var(dim=0)
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_var_std_and_their_means(mode: str, dtype: torch.dtype, request: pytest.FixtureRequest,
                                 poison_empty: None) -> None:
    use(mode, request)
    x = (torch.randn(37, 70) * 2 + 1).to(dtype)
    xd = x.double()
    want = torch.stack([xd.var(1, unbiased=False), xd.mean(1), xd.var(1),
                        xd.std(1, unbiased=False), xd.std(1), xd.mean(1)])
    tol = 1e-5 if dtype == torch.float32 else 4e-3
    close(moments(x), want, atol=tol, rtol=tol)
    close(column_var(x), xd.var(0), atol=tol, rtol=tol)


@ts.kernel
def kl_div_batchmean(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    bt, v = y_pred.size()
    loss = torch.empty([bt], dtype=torch.float32, device=y_pred.device)
    for tb in ts.tile(bt):
        acc = ts.zeros([tb], dtype=torch.float32)
        for tv in ts.tile(v):
            yt = y_true[tb, tv]
            acc += (yt * (torch.log(yt) - y_pred[tb, tv])).sum(dim=-1)
        loss[tb] = acc
    return loss.sum() / bt


@ts.kernel
def jsd(log_q: torch.Tensor, log_p: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    bt, v = log_q.size()
    loss = torch.empty([bt], dtype=torch.float32, device=log_q.device)
    for tb in ts.tile(bt):
        acc = ts.zeros([tb], dtype=torch.float32)
        for tv in ts.tile(v):
            lq = log_q[tb, tv]
            lp = log_p[tb, tv]
            q, p = torch.exp(lq), torch.exp(lp)
            log_m = torch.log(beta * p + (1 - beta) * q)
            acc += (beta * p * (lp - log_m) + (1 - beta) * q * (lq - log_m)).sum(dim=1)
        loss[tb] = acc
    return loss


@ts.kernel
def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    n, v = logits.size()
    losses = torch.empty([n], dtype=torch.float32, device=logits.device)
    flat = logits.view(-1)
    for tn in ts.tile(n):
        logit_at = flat[tn.index * v + labels[tn]]
        row = logits[tn, :]
        mx = row.amax(dim=1, keepdim=True)
        lse = mx.squeeze(1) + torch.log(torch.exp(row - mx).sum(dim=1))
        losses[tn] = lse - logit_at
    return losses.mean()


@pytest.mark.parametrize("mode", MODES)
def test_losses(mode: str, request: pytest.FixtureRequest, poison_empty: None) -> None:
    use(mode, request)
    y_pred = torch.randn(33, 200).log_softmax(1)
    y_true = torch.randn(33, 200).softmax(1)
    close(kl_div_batchmean(y_pred, y_true),
          F.kl_div(y_pred.double(), y_true.double(), reduction="batchmean"))
    lq, lp = y_pred.double(), y_true.double().log()
    q, p = lq.exp(), lp.exp()
    m = 0.5 * (p + q)
    close(jsd(y_pred, y_true.log()),
          (0.5 * p * (lp - m.log()) + 0.5 * q * (lq - m.log())).sum(1))
    logits, labels = torch.randn(33, 200), torch.randint(0, 200, (33,))
    close(cross_entropy(logits, labels), F.cross_entropy(logits.double(), labels))


@ts.kernel
def welford(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m, n = x.size()
    mean_o = torch.empty([m], dtype=torch.float32, device=x.device)
    var_o = torch.empty([m], dtype=torch.float32, device=x.device)
    for tm in ts.tile(m):
        mean = ts.zeros([tm], dtype=torch.float32)
        m2 = ts.zeros([tm], dtype=torch.float32)
        count = ts.zeros([tm], dtype=torch.float32)
        for tn in ts.tile(n):
            chunk = x[tm, tn].to(torch.float32)
            valid = (tn.index < n).to(torch.float32)
            cnt = valid.sum()
            cmean = chunk.sum(dim=1) / cnt
            cm2 = ((chunk - cmean[:, None]) ** 2 * valid[None, :]).sum(dim=1)
            delta = cmean - mean
            new_count = count + cnt
            mean = mean + delta * cnt / new_count
            m2 = m2 + cm2 + delta * delta * count * cnt / new_count
            count = new_count
        mean_o[tm] = mean
        var_o[tm] = m2 / count
    return mean_o, var_o


@pytest.mark.parametrize("mode", MODES)
def test_welford_chunked(mode: str, request: pytest.FixtureRequest, poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(37, 150) + 3
    mean, var = welford(x)
    close(mean, x.double().mean(1))
    close(var, x.double().var(1, unbiased=False), atol=1e-4)


def test_squeeze_needs_a_size_one_dim(compiled_mode: None) -> None:
    @ts.kernel
    def bad(x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for tm in ts.tile(x.size(0)):
            out[tm, :] = x[tm, :].squeeze(0)[None, :]
        return out

    with pytest.raises(ts.KernelSyntaxError, match=r"squeeze\(0\).*only dims of size 1"):
        bad(torch.randn(4, 8))


@ts.kernel
def cumsum_tiled(x: torch.Tensor) -> torch.Tensor:
    """A row prefix sum scanned tile by tile, carrying the running total between tiles."""
    m, n = x.size()
    out = torch.empty_like(x)
    for tm in ts.tile(m):
        carry = ts.zeros([tm], dtype=torch.float32)
        for tn in ts.tile(n):
            v = x[tm, tn]
            out[tm, tn] = torch.cumsum(v, dim=1) + carry[:, None]
            carry = carry + v.sum(dim=1)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_cumsum_over_inner_tiles_with_a_carry(mode: str, request: pytest.FixtureRequest,
                                              poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(37, 150)
    close(cumsum_tiled(x), x.double().cumsum(1), atol=1e-4)


def test_tensor_descriptors_skip_unaligned_tile_starts(compiled_mode: None,
                                                      poison_empty: None) -> None:
    """layer_norm_bwd's row tiles start at g * rows (any row): their 1-D loads of mean/rstd
    cannot use a tensor descriptor (16-byte aligned starts only) and fall back to pointers."""
    x, w, dy = torch.randn(37, 70), torch.randn(70), torch.randn(37, 70)
    mean, rstd = x.mean(1), torch.rsqrt(x.var(1, unbiased=False) + 1e-5)
    args = (dy, x, w, mean, rstd)
    bound = layer_norm_bwd.bind(args)
    cfg = ts.Config(indexing="tensor_descriptor")
    assert "tensor_descriptor" in bound.config_space.params["indexing"]
    want = _grads(lambda x, w, b: F.layer_norm(x, (70,), w, b, 1e-5), dy, x, w, torch.zeros(70))
    for g, wnt in zip(bound.compile(cfg)(*args), want):
        close(g, wnt, atol=1e-4)
    code = layer_norm_bwd.to_triton_code(cfg, args=args)
    assert "mean: tensor_descriptor does not apply" in code
