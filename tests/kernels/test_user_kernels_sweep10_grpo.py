"""Helion's GRPO loss (forward and backward), bf16 x int16 GEMMs and KL divergence, ported
the way a Helion user would, in both modes against torch eager in float64: host slicing of
the logits (``logits[:, :-1, :]``), optional tensors (``if old_logp is None``), in-place
updates of values (``loss *= mask``), ``if beta != 0.0 and ref_logp is not None:`` on a
float argument (decided at launch, one kernel per value), an online log-sum-exp over the
vocabulary, the backward as one launch per ``(b, l)`` tile looping over the vocabulary, a
host store after the launch, and ``F.kl_div(..., reduction="none")`` in device code (other
reductions refused).

Example:
    pytest -q tests/kernels/test_user_kernels_sweep10_grpo.py
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use

TEMP, BETA, EPS_LOW, EPS_HIGH = 0.9, 0.04, 0.2, 0.4


@ts.kernel
def grpo_forward(logits: torch.Tensor, selected: torch.Tensor, old_logp: torch.Tensor | None,
                 ref_logp: torch.Tensor | None, advantages: torch.Tensor,
                 completion_mask: torch.Tensor | None, temperature: float, beta: float,
                 eps_low: float, eps_high: float
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token clipped policy loss with a KL term; also its log-sum-exp for backward."""
    b, l_add_1, v = logits.shape
    length = l_add_1 - 1
    logits = logits[:, :-1, :]
    loss = torch.zeros([b, length], dtype=torch.float32, device=logits.device)
    is_clipped = torch.zeros([b, length], dtype=torch.float32, device=logits.device)
    kl_loss = torch.zeros([b, length], dtype=torch.float32, device=logits.device)
    lse = torch.zeros([b, length], dtype=torch.float32, device=logits.device)
    for tb, tl in ts.tile([b, length]):
        max_logits = ts.full([tb, tl], float("-inf"), dtype=torch.float32)
        sum_exp = ts.zeros([tb, tl], dtype=torch.float32)
        for tv in ts.tile(v, block_size=32):
            tile = logits[tb, tl, tv].to(torch.float32) / temperature
            new_m = torch.maximum(max_logits, torch.amax(tile, dim=-1))
            sum_exp = sum_exp * torch.exp(max_logits - new_m) + torch.sum(
                torch.exp(tile - new_m[:, :, None]), dim=-1)
            max_logits = new_m
        log_sum_exp = max_logits + torch.log(sum_exp)
        lse[tb, tl] = log_sum_exp
        logp = selected[tb, tl] - log_sum_exp
        old = logp if old_logp is None else old_logp[tb, tl]
        coef_1 = torch.exp(logp - old)
        coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
        loss1 = coef_1 * advantages[tb][:, None]
        loss2 = coef_2 * advantages[tb][:, None]
        per_token = -torch.minimum(loss1, loss2)
        if completion_mask is not None:
            per_token *= completion_mask[tb, tl]
        if beta != 0.0 and ref_logp is not None:
            ref = ref_logp[tb, tl]
            kl = torch.exp(ref - logp) - (ref - logp) - 1
            if completion_mask is not None:
                kl *= completion_mask[tb, tl]
            per_token += beta * kl
            kl_loss[tb, tl] = kl
        loss[tb, tl] = per_token
        is_clipped[tb, tl] = (loss1 < loss2).float()
    return loss, kl_loss, is_clipped, lse


@ts.kernel
def grpo_backward(grad_output: torch.Tensor, logits: torch.Tensor, selected: torch.Tensor,
                  completion_ids: torch.Tensor, old_logp: torch.Tensor | None,
                  ref_logp: torch.Tensor | None, advantages: torch.Tensor,
                  completion_mask: torch.Tensor | None, lse: torch.Tensor, temperature: float,
                  beta: float, eps_low: float, eps_high: float) -> torch.Tensor:
    """d loss / d logits; the last position gets no gradient (set on the host)."""
    b, l_add_1, v = logits.shape
    length = l_add_1 - 1
    logits_fwd = logits[:, :-1, :]
    grad_logits = torch.zeros_like(logits)
    for tb, tl in ts.tile([b, length]):
        completion_id = completion_ids[tb, tl]
        log_sum_exp = lse[tb, tl]
        logp = selected[tb, tl] - log_sum_exp
        old = logp if old_logp is None else old_logp[tb, tl]
        coef_1 = torch.exp(logp - old)
        coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
        loss1 = coef_1 * advantages[tb][:, None]
        loss2 = coef_2 * advantages[tb][:, None]
        dlogp = -loss1 * (loss2 >= loss1).float()
        if beta != 0.0 and ref_logp is not None:
            dlogp += beta * (1 - torch.exp(ref_logp[tb, tl] - logp))
        dlogp = dlogp * grad_output[tb, tl] / temperature
        if completion_mask is not None:
            dlogp *= completion_mask[tb, tl]
        for tv in ts.tile(v, block_size=32):
            probs = torch.exp(logits_fwd[tb, tl, tv].to(torch.float32) / temperature
                              - log_sum_exp[:, :, None])
            sel = tv.index[None, None, :] == completion_id[:, :, None]
            grad_logits[tb, tl, tv] = torch.where(sel, dlogp[:, :, None] * (1 - probs),
                                                  -dlogp[:, :, None] * probs)
    grad_logits[:, -1, :] = 0
    return grad_logits


def _grpo_reference(logits: torch.Tensor, old_logp: torch.Tensor | None, ref_logp: torch.Tensor,
                    ids: torch.Tensor, adv: torch.Tensor,
                    mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch's formulas (Helion's reference), in whatever dtype the inputs have."""
    logp = torch.log_softmax(logits[:, :-1] / TEMP, dim=-1).gather(2, ids[..., None])[..., 0]
    old = logp.detach() if old_logp is None else old_logp
    coef_1 = torch.exp(logp - old)
    coef_2 = torch.clamp(coef_1, 1 - EPS_LOW, 1 + EPS_HIGH)
    loss1, loss2 = coef_1 * adv[:, None], coef_2 * adv[:, None]
    loss = -torch.min(loss1, loss2)
    kl = torch.exp(ref_logp - logp) - (ref_logp - logp) - 1
    if mask is not None:
        loss, kl = loss * mask, kl * mask
    return loss + BETA * kl, kl, (loss1 < loss2).float()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("optional", [True, False])
def test_grpo_loss_forward_and_backward(mode: str, optional: bool,
                                        request: pytest.FixtureRequest) -> None:
    use(mode, request)
    b, length, v = 3, 40, 70
    logits = torch.randn(b, length + 1, v)
    ids = torch.randint(0, v, (b, length))
    ref_logp = torch.randn(b, length) - 4
    adv = torch.randn(b)
    old_logp = None if optional else torch.randn(b, length) - 4
    mask = None if optional else (torch.rand(b, length) > 0.2).float()
    selected = logits[:, :-1].gather(2, ids[..., None])[..., 0] / TEMP
    loss, kl, clipped, lse = grpo_forward(logits, selected, old_logp, ref_logp, adv, mask,
                                          TEMP, BETA, EPS_LOW, EPS_HIGH)
    ld = logits.double().requires_grad_()
    want = _grpo_reference(ld, None if optional else old_logp.double(), ref_logp.double(), ids,
                           adv.double(), None if optional else mask.double())
    for got, ref in zip((loss, kl, clipped), want):
        close(got, ref.detach(), atol=1e-5)
    close(lse, torch.logsumexp(ld[:, :-1].detach() / TEMP, dim=-1))
    grad_out = torch.randn(b, length)
    want[0].backward(grad_out.double())
    grad = grpo_backward(grad_out, logits, selected, ids, old_logp, ref_logp, adv, mask, lse,
                         TEMP, BETA, EPS_LOW, EPS_HIGH)
    close(grad, ld.grad, atol=1e-5)
    # `if beta != 0.0` is decided per value of beta: the launch is specialised on it
    loss0, kl0, _, _ = grpo_forward(logits, selected, old_logp, ref_logp, adv, mask, TEMP, 0.0,
                                    EPS_LOW, EPS_HIGH)
    assert not kl0.any()
    close(loss0, (want[0] - BETA * want[1]).detach(), atol=1e-5)


@ts.kernel
def mixed_gemm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Helion's bf16 x int16 GEMM: the int16 operand is cast to bfloat16 before the dot."""
    m, k = x.shape
    n = w.size(1)
    out = torch.empty([m, n], dtype=torch.bfloat16, device=x.device)
    for tm, tn in ts.tile([m, n], block_size=[32, 32]):
        acc = ts.zeros([tm, tn], dtype=torch.float32)
        for tk in ts.tile(k, block_size=32):
            acc = ts.dot(x[tm, tk].to(torch.bfloat16), w[tk, tn].to(torch.bfloat16), acc=acc)
        out[tm, tn] = acc.to(torch.bfloat16)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_bf16_by_int16_gemm_either_way(mode: str, request: pytest.FixtureRequest,
                                       poison_empty: None) -> None:
    use(mode, request)
    x = torch.randn(50, 72).to(torch.bfloat16)
    w = torch.randint(-(2**15), 2**15 - 1, (72, 40), dtype=torch.int16)
    want = x.double() @ w.to(torch.bfloat16).double()
    close(mixed_gemm(x, w), want, atol=1e-2 * want.abs().max().item(), rtol=1e-2)
    xi = torch.randint(-(2**15), 2**15 - 1, (50, 72), dtype=torch.int16)
    wb = torch.randn(72, 40).to(torch.bfloat16)
    want = xi.to(torch.bfloat16).double() @ wb.double()
    close(mixed_gemm(xi, wb), want, atol=1e-2 * want.abs().max().item(), rtol=1e-2)


@ts.kernel
def branch_on_arguments(x: torch.Tensor, scale: float, shift: int) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm in ts.tile(x.size(0), block_size=32):
        v = x[tm]
        if scale > 1.0:
            v = v * scale
        out[tm] = v + (shift if shift != 0 else -1)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_if_on_scalar_arguments_is_decided_at_launch(mode: str,
                                                    request: pytest.FixtureRequest) -> None:
    use(mode, request)
    x = torch.randn(70)
    for scale, shift in ((2.0, 3), (0.5, 0), (2.0, 0), (3.0, 3)):
        want = x.double() * (scale if scale > 1.0 else 1.0) + (shift if shift != 0 else -1)
        close(branch_on_arguments(x, scale, shift), want)


@ts.kernel
def kl_div_rows(y_pred: torch.Tensor, y_true: torch.Tensor, log_target: bool) -> torch.Tensor:
    """Helion's kl_div (batchmean) with torch's pointwise loss: per-row sums, host mean."""
    b, v = y_pred.size()
    rows = torch.empty([b], dtype=torch.float32, device=y_pred.device)
    for tb in ts.tile(b, block_size=32):
        acc = ts.zeros([tb], dtype=torch.float32)
        for tv in ts.tile(v, block_size=32):
            acc += F.kl_div(y_pred[tb, tv], y_true[tb, tv], reduction="none",
                            log_target=log_target).sum(dim=-1)
        rows[tb] = acc
    return rows.sum() / b


@ts.kernel
def kl_div_mean(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(y_pred)
    for tb, tv in ts.tile(y_pred.size()):
        out[tb, tv] = F.kl_div(y_pred[tb, tv], y_true[tb, tv])
    return out


@pytest.mark.parametrize("mode", MODES)
def test_kl_div_pointwise_like_torch(mode: str, request: pytest.FixtureRequest) -> None:
    use(mode, request)
    y_pred = torch.randn(40, 70).log_softmax(-1)
    y_true = torch.randn(40, 70).softmax(-1)
    y_true[0, :5] = 0.0  # xlogy(0, 0) is 0
    for log_target, target in ((False, y_true), (True, y_true.clamp_min(1e-30).log())):
        want = F.kl_div(y_pred.double(), target.double(), reduction="batchmean",
                        log_target=log_target)
        close(kl_div_rows(y_pred, target, log_target), want)


def test_kl_div_reduction_in_device_code_is_refused(compiled_mode: None) -> None:
    with pytest.raises(ts.KernelError, match=r"(?s)reduction='mean'.*reduction=\"none\""):
        kl_div_mean(torch.randn(8, 8), torch.rand(8, 8))
