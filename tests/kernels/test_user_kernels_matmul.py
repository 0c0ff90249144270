"""Matmul-family kernels written the way a Helion user would: addmm accumulation, a bias+relu
epilogue, batched baddbmm, matmul backward, grouped GEMM over device-side group offsets, a
gathered GEMV, squeeze-and-excitation, int4 (packed) and fp8 GEMMs, attention with bmm; both
modes, against torch eager in float64.

Example:
    pytest -q tests/kernels/test_user_kernels_matmul.py
"""

from __future__ import annotations

import math

import pytest
import torch

import torchship.kernels as ts
from tests.kernels.test_compiler import close
from tests.kernels.test_user_kernels_rows import MODES, use


@ts.kernel
def matmul_bias_relu(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    m, k = a.size()
    n = b.size(1)
    out = torch.empty([m, n], dtype=a.dtype, device=a.device)
    for tm, tn in ts.tile([m, n]):
        acc = ts.zeros([tm, tn], dtype=torch.float32)
        for tk in ts.tile(k):
            acc = torch.addmm(acc, a[tm, tk], b[tk, tn])
        out[tm, tn] = torch.relu(acc + bias[tn])
    return out


@ts.kernel
def matmul_bwd(grad: torch.Tensor, a: torch.Tensor,
               b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m, k = a.size()
    n = b.size(1)
    ga = torch.empty_like(a)
    gb = torch.empty_like(b)
    for tm, tk in ts.tile([m, k]):
        acc = ts.zeros([tm, tk], dtype=torch.float32)
        for tn in ts.tile(n):
            acc += grad[tm, tn] @ b[tk, tn].T
        ga[tm, tk] = acc
    for tk, tn in ts.tile([k, n]):
        acc = ts.zeros([tk, tn], dtype=torch.float32)
        for tm in ts.tile(m):
            acc += a[tm, tk].T @ grad[tm, tn]
        gb[tk, tn] = acc
    return ga, gb


@ts.kernel
def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    bsz, m, k = a.size()
    n = b.size(2)
    out = torch.empty([bsz, m, n], dtype=a.dtype, device=a.device)
    for tb, tm, tn in ts.tile([bsz, m, n]):
        acc = ts.zeros([tb, tm, tn], dtype=torch.float32)
        for tk in ts.tile(k):
            acc = torch.baddbmm(acc, a[tb, tm, tk], b[tb, tk, tn])
        out[tb, tm, tn] = acc
    return out


@pytest.mark.parametrize("mode", MODES)
def test_matmul_forms_and_backward(mode: str, request: pytest.FixtureRequest,
                                   poison_empty: None) -> None:
    use(mode, request)
    a, b, bias, g = torch.randn(33, 40), torch.randn(40, 20), torch.randn(20), torch.randn(33, 20)
    ad, bd, gd = a.double(), b.double(), g.double()
    close(matmul_bias_relu(a, b, bias), torch.relu(ad @ bd + bias.double()), atol=1e-4)
    ga, gb = matmul_bwd(g, a, b)
    close(ga, gd @ bd.T, atol=1e-4)
    close(gb, ad.T @ gd, atol=1e-4)
    a3, b3 = torch.randn(3, 33, 40), torch.randn(3, 40, 20)
    close(bmm(a3, b3), a3.double() @ b3.double(), atol=1e-4)


@ts.kernel
def grouped_gemm(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Rows ``offsets[g]:offsets[g + 1]`` of ``a`` times ``b[g]``; tile bounds read on device."""
    total, k = a.size()
    groups, _, n = b.size()
    out = torch.empty([total, n], dtype=a.dtype, device=a.device)
    for g in ts.grid(groups):
        start = offsets[g]
        end = offsets[g + 1]
        for tm, tn in ts.tile([start, 0], [end, n]):
            acc = ts.zeros([tm, tn], dtype=torch.float32)
            for tk in ts.tile(k):
                acc = torch.addmm(acc, a[tm, tk], b[g, tk, tn])
            out[tm, tn] = acc.to(out.dtype)
    return out


@ts.kernel
def gather_gemv(w: torch.Tensor, idx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out[i] = w[idx[i]] @ x[i]`` (an expert's matrix chosen per row)."""
    bsz = idx.size(0)
    n, k = w.size(1), w.size(2)
    out = torch.empty([bsz, n], dtype=torch.float32, device=x.device)
    for i in ts.grid(bsz):
        e = idx[i]
        for tn in ts.tile(n):
            acc = ts.zeros([tn], dtype=torch.float32)
            for tk in ts.tile(k):
                acc = acc + (w[e, tn, tk] * x[i, tk][None, :]).sum(dim=1)
            out[i, tn] = acc
    return out


@pytest.mark.parametrize("mode", MODES)
def test_grouped_and_gathered(mode: str, request: pytest.FixtureRequest,
                              poison_empty: None) -> None:
    use(mode, request)
    offsets = torch.tensor([0, 3, 3, 40, 41, 90])
    a, b = torch.randn(90, 48), torch.randn(5, 48, 40)
    want = torch.cat([a[s:e].double() @ b[i].double()
                      for i, (s, e) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist()))])
    close(grouped_gemm(a, b, offsets), want, atol=1e-4)
    w, idx, x = torch.randn(4, 70, 50), torch.randint(0, 4, (9,)), torch.randn(9, 50)
    close(gather_gemv(w, idx, x), torch.einsum("bnk,bk->bn", w[idx].double(), x.double()),
          atol=1e-4)


@ts.kernel
def squeeze_excitation(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(relu(x @ a) @ b)``: the hidden block is recomputed per output tile."""
    m, n = x.size()
    out = torch.empty_like(x)
    for tm, tn in ts.tile([m, n]):
        acc = ts.zeros([tm, tn], dtype=torch.float32)
        for tk in ts.tile(a.size(1)):
            acc = acc + torch.relu(x[tm, :] @ a[:, tk]) @ b[tk, tn]
        out[tm, tn] = x[tm, tn] * torch.sigmoid(acc)
    return out


@ts.kernel
def int4_gemm(a: torch.Tensor, b_packed: torch.Tensor) -> torch.Tensor:
    """``a [m, k] @ unpack(b_packed [k/2, n] int8)``: signed int4 pairs, low nibble = even k."""
    m, k = a.size()
    n = b_packed.size(1)
    out = torch.empty([m, n], dtype=torch.float32, device=a.device)
    for tm, tn in ts.tile([m, n]):
        acc = ts.zeros([tm, tn], dtype=torch.float32)
        for tk in ts.tile(k // 2):
            packed = b_packed[tk, tn].to(torch.int32)
            lo = ((packed << 28) >> 28).to(torch.float32)
            hi = ((packed << 24) >> 28).to(torch.float32)
            acc = acc + a[tm, tk.index * 2] @ lo + a[tm, tk.index * 2 + 1] @ hi
        out[tm, tn] = acc
    return out


@ts.kernel
def fp8_gemm(a: torch.Tensor, b: torch.Tensor, scale_a: float, scale_b: float) -> torch.Tensor:
    m, k = a.size()
    n = b.size(1)
    out = torch.empty([m, n], dtype=torch.float32, device=a.device)
    for tm, tn in ts.tile([m, n]):
        acc = ts.zeros([tm, tn], dtype=torch.float32)
        for tk in ts.tile(k):
            acc = ts.dot(a[tm, tk], b[tk, tn], acc=acc)
        out[tm, tn] = acc * scale_a * scale_b
    return out


@pytest.mark.parametrize("mode", MODES)
def test_fused_and_quantized_gemms(mode: str, request: pytest.FixtureRequest,
                                   poison_empty: None) -> None:
    use(mode, request)
    x, a, b = torch.randn(33, 64), torch.randn(64, 48) * 0.2, torch.randn(48, 64) * 0.2
    xd = x.double()
    close(squeeze_excitation(x, a, b),
          xd * torch.sigmoid(torch.relu(xd @ a.double()) @ b.double()), atol=1e-5)
    packed = torch.randint(-128, 128, (32, 40), dtype=torch.int8)
    p = packed.to(torch.int64)
    unpacked = torch.stack([(p << 60) >> 60, (p << 56) >> 60], dim=1).reshape(64, 40)
    close(int4_gemm(x, packed), xd @ unpacked.double(), atol=1e-3)
    a8, b8 = torch.randn(33, 64).to(torch.float8_e4m3fn), torch.randn(64, 40).to(
        torch.float8_e4m3fn)
    close(fp8_gemm(a8, b8, 0.5, 2.0), a8.double() @ b8.double(), atol=1e-4)


@ts.kernel
def attention_bmm(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    bh, sq, d = q.size()
    out = torch.empty_like(q)
    scale = 1.0 / math.sqrt(d)
    for tb, tq in ts.tile([bh, sq], block_size=[1, None]):
        qb = q[tb, tq, :]
        m_i = ts.full([tb, tq], float("-inf"), dtype=torch.float32)
        l_i = ts.zeros([tb, tq], dtype=torch.float32)
        acc = ts.zeros([tb, tq, d], dtype=torch.float32)
        for tk in ts.tile(k.size(1)):
            s = torch.bmm(qb, k[tb, tk, :].transpose(1, 2)) * scale
            m_new = torch.maximum(m_i, s.amax(dim=-1))
            p = torch.exp(s - m_new[:, :, None])
            alpha = torch.exp(m_i - m_new)
            l_i = l_i * alpha + p.sum(dim=-1)
            acc = torch.baddbmm(acc * alpha[:, :, None], p, v[tb, tk, :])
            m_i = m_new
        out[tb, tq, :] = (acc / l_i[:, :, None]).to(out.dtype)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_attention_with_bmm(mode: str, request: pytest.FixtureRequest,
                            poison_empty: None) -> None:
    use(mode, request)
    q, k, v = torch.randn(3, 40, 32), torch.randn(3, 50, 32), torch.randn(3, 50, 32)
    qd, kd, vd = q.double(), k.double(), v.double()
    want = torch.softmax(qd @ kd.transpose(1, 2) / math.sqrt(32), -1) @ vd
    close(attention_bmm(q, k, v), want, atol=1e-5)


@ts.kernel
def matmul_layernorm(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor,
                     bias: torch.Tensor) -> torch.Tensor:
    """``layer_norm(a @ b)``: the accumulator spans all of n (``ts.zeros([tm, n])`` with n a
    tensor size that is not a power of two: a padded, masked full dim)."""
    m, k = a.size()
    n = b.size(1)
    out = torch.empty([m, n], dtype=a.dtype, device=a.device)
    for tm in ts.tile(m):
        acc = ts.zeros([tm, n], dtype=torch.float32)
        for tk in ts.tile(k):
            acc = acc + a[tm, tk] @ b[tk, :]
        var, mean = torch.var_mean(acc, dim=-1, keepdim=True, correction=0)
        out[tm, :] = (acc - mean) * torch.rsqrt(var + 1e-5) * w[None, :] + bias[None, :]
    return out


@pytest.mark.parametrize("mode", MODES)
def test_accumulator_over_a_whole_non_power_of_two_dim(mode: str,
                                                       request: pytest.FixtureRequest,
                                                       poison_empty: None) -> None:
    use(mode, request)
    a, b, w, bias = torch.randn(33, 64), torch.randn(64, 48), torch.randn(48), torch.randn(48)
    want = torch.nn.functional.layer_norm(a.double() @ b.double(), (48,), w.double(),
                                          bias.double())
    close(matmul_layernorm(a, b, w, bias), want, atol=1e-4)


@ts.kernel
def widen(x: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.empty([x.size(0), n], dtype=torch.float32, device=x.device)
    for tm in ts.tile(x.size(0)):
        out[tm, :] = ts.full([tm, n], 1.0, dtype=torch.float32) + x[tm, :]
    return out


def test_int_argument_full_dim_is_checked_at_launch(compiled_mode: None) -> None:
    x = torch.randn(5, 24)
    close(widen(x, 24), x.double() + 1)
    with pytest.raises(ts.KernelLaunchError, match="size mismatch"):
        widen(x, 20)


@pytest.mark.parametrize("indexing", ["tensor_descriptor", "pointer"])
def test_grouped_gemm_device_bounds_in_descriptors(indexing: str, compiled_mode: None,
                                                   poison_empty: None) -> None:
    """Tile bounds read from an int64 offsets tensor are cast to int32 for descriptors and
    block pointers (on an H100 Triton refused 64-bit block offsets/shapes)."""
    offsets = torch.tensor([0, 3, 3, 40, 41, 90])
    a, b = torch.randn(90, 48), torch.randn(5, 48, 40)
    cfg = ts.Config(block_sizes=[16, 32, 16], indexing=indexing)
    got = grouped_gemm.bind((a, b, offsets)).compile(cfg)(a, b, offsets)
    want = torch.cat([a[s:e].double() @ b[i].double()
                      for i, (s, e) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist()))])
    close(got, want, atol=1e-4)
    if indexing == "tensor_descriptor":
        code = grouped_gemm.to_triton_code(cfg, args=(a, b, offsets))
        assert "shape=[tl.cast(end, tl.int32)" in code


@ts.kernel
def fused_linear_jsd(h_s: torch.Tensor, w_s: torch.Tensor, h_t: torch.Tensor,
                     w_t: torch.Tensor) -> torch.Tensor:
    """Per-row JSD (beta 0.5) of student and teacher logits ``h @ w.T``, never written out:
    the logits of a row block span the whole vocabulary."""
    bt, d = h_s.size()
    v = w_s.size(0)
    loss = torch.empty([bt], dtype=torch.float32, device=h_s.device)
    for tb in ts.tile(bt):
        ls = ts.zeros([tb, v], dtype=torch.float32)
        lt = ts.zeros([tb, v], dtype=torch.float32)
        for tk in ts.tile(d):
            ls = ls + h_s[tb, tk] @ w_s[:, tk].T
            lt = lt + h_t[tb, tk] @ w_t[:, tk].T
        lq = torch.log_softmax(ls, dim=1)
        lp = torch.log_softmax(lt, dim=1)
        q, p = torch.exp(lq), torch.exp(lp)
        log_m = torch.log(0.5 * (p + q))
        loss[tb] = (0.5 * p * (lp - log_m) + 0.5 * q * (lq - log_m)).sum(dim=1)
    return loss


@ts.kernel
def moe_matmul(x: torch.Tensor, w: torch.Tensor, sorted_ids: torch.Tensor,
               expert_offsets: torch.Tensor) -> torch.Tensor:
    """Tokens sorted by expert: rows ``sorted_ids[offsets[e]:offsets[e + 1]]`` of x go through
    ``w[e]``; rows are gathered on load and scattered on store."""
    d = x.size(1)
    experts, _, n = w.size()
    out = torch.empty([x.size(0), n], dtype=torch.float32, device=x.device)
    for e in ts.grid(experts):
        for tm, tn in ts.tile([expert_offsets[e], 0], [expert_offsets[e + 1], n]):
            rows = sorted_ids[tm]
            acc = ts.zeros([tm, tn], dtype=torch.float32)
            for tk in ts.tile(d):
                acc = acc + x[rows, tk] @ w[e, tk, tn]
            out[rows, tn] = acc
    return out


@pytest.mark.parametrize("mode", MODES)
def test_fused_linear_jsd_and_moe(mode: str, request: pytest.FixtureRequest,
                                  poison_empty: None) -> None:
    use(mode, request)
    hs, ht = torch.randn(20, 48), torch.randn(20, 48)
    ws, wt = torch.randn(100, 48) * 0.2, torch.randn(100, 48) * 0.2
    lq = (hs.double() @ ws.double().T).log_softmax(1)
    lp = (ht.double() @ wt.double().T).log_softmax(1)
    q, p = lq.exp(), lp.exp()
    log_m = (0.5 * (p + q)).log()
    close(fused_linear_jsd(hs, ws, ht, wt),
          (0.5 * p * (lp - log_m) + 0.5 * q * (lq - log_m)).sum(1), atol=1e-5)
    x, w = torch.randn(50, 32), torch.randn(4, 32, 24)
    ids, offsets = torch.randperm(50), torch.tensor([0, 10, 10, 33, 50])
    want = torch.empty(50, 24, dtype=torch.float64)
    for e in range(4):
        r = ids[int(offsets[e]):int(offsets[e + 1])]
        want[r] = x[r].double() @ w[e].double()
    close(moe_matmul(x, w, ids, offsets), want, atol=1e-4)
