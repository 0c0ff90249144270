"""Sequence models a new user writes in plain torch.nn (GPT-2 with a KV cache, T5 relative
position bias, RNNs, a Whisper-style encoder, a dilated causal conv stack, a selective scan),
exported with dynamic batch / length and run by the numpy runtime against eager float64."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from tests.edge.test_user_models_vision import check_model

BATCH = Dim("batch", min=1, max=4)
SEQ = Dim("seq", min=2, max=32)


class GPT2Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.c_attn = nn.Linear(dim, 3 * dim)
        self.c_proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, past_k: torch.Tensor | None = None,
                past_v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        q, k, v = self.c_attn(self.ln1(x)).split(c, dim=2)
        q, k, v = self._split(q), self._split(k), self._split(v)
        if past_k is not None:
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        total = k.shape[2]
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])
        # causal: query i (at absolute position total - n + i) sees keys up to its own position
        mask = torch.triu(torch.ones(n, total, dtype=torch.bool), diagonal=total - n + 1)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, n, c)
        x = x + self.c_proj(y)
        return x + self.mlp(self.ln2(x)), k, v


class GPT2(nn.Module):
    def __init__(self, vocab: int = 64, dim: int = 32, heads: int = 4, layers: int = 2, ctx: int = 64) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(ctx, dim)
        self.blocks = nn.ModuleList(GPT2Block(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied input / output embeddings

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1])
        x = self.wte(ids) + self.wpe(pos)
        for blk in self.blocks:
            x = blk(x)[0]
        return self.lm_head(self.ln_f(x))

    def step(self, ids: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoding step: past keys/values [layers, B, H, P, D] in, the grown caches out."""
        start = past_k.shape[3]
        x = self.wte(ids) + self.wpe(torch.arange(start, start + ids.shape[1]))
        ks, vs = [], []
        for i, blk in enumerate(self.blocks):
            x, k, v = blk(x, past_k[i], past_v[i])
            ks.append(k)
            vs.append(v)
        return self.lm_head(self.ln_f(x)), torch.stack(ks), torch.stack(vs)


def test_gpt2_with_kv_cache_step() -> None:
    torch.manual_seed(10)
    model = GPT2().eval()
    past = Dim("past", min=1, max=31)
    ids = torch.randint(0, 64, (2, 7))
    pk, pv = torch.randn(2, 2, 4, 5, 8), torch.randn(2, 2, 4, 5, 8)
    methods = {
        "forward": ((ids,), ({0: BATCH, 1: SEQ},)),
        "step": ((ids[:, :1], pk, pv), ({0: BATCH}, {1: BATCH, 3: past}, {1: BATCH, 3: past})),
    }
    prog = check_model(model, (ids,), methods=methods, others=((torch.randint(0, 64, (1, 30)),), (ids[:, :2],)))
    check_model(model, (ids[:, :1], pk, pv), method="step", prog=prog,
                others=((torch.randint(0, 64, (3, 1)), torch.randn(2, 3, 4, 1, 8), torch.randn(2, 3, 4, 1, 8)),))
    # the step agrees with the full forward: logits of the last token after a cached prefix
    with torch.no_grad():
        full = model(ids)
        _, k, v = model.step(ids[:, :6], torch.zeros(2, 2, 4, 0, 8), torch.zeros(2, 2, 4, 0, 8))
    logits, k2, _ = prog.method("step")(ids[:, 6:].numpy(), k.numpy(), v.numpy())
    assert abs(logits[:, 0] - full[:, 6].numpy()).max() <= 1e-4 and k2.shape == (2, 2, 4, 7, 8)


class T5Attention(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, buckets: int = 8, max_distance: int = 16, bidirectional: bool = True) -> None:
        super().__init__()
        self.heads, self.buckets, self.max_distance, self.bidirectional = heads, buckets, max_distance, bidirectional
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.rel_bias = nn.Embedding(buckets, heads)

    def bucket(self, rel: torch.Tensor) -> torch.Tensor:
        n = self.buckets
        ret = torch.zeros_like(rel)
        if self.bidirectional:
            n //= 2
            ret += (rel > 0).to(torch.long) * n
            rel = torch.abs(rel)
        else:
            rel = -torch.min(rel, torch.zeros_like(rel))
        exact = n // 2
        is_small = rel < exact
        large = exact + (torch.log(rel.float() / exact) / math.log(self.max_distance / exact) * (n - exact)).to(torch.long)
        large = torch.min(large, torch.full_like(large, n - 1))
        return ret + torch.where(is_small, rel, large)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        ctx = torch.arange(n, dtype=torch.long)[:, None]
        mem = torch.arange(n, dtype=torch.long)[None, :]
        bias = self.rel_bias(self.bucket(mem - ctx)).permute(2, 0, 1).unsqueeze(0)  # [1, H, n, n]
        q, k, v = (f(x).view(b, n, self.heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        scores = (q @ k.transpose(-1, -2) + bias).clamp(-1e4, 1e4)
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.o(y)


class T5Pair(nn.Module):
    """An encoder (bidirectional buckets) and a decoder (causal buckets) self-attention."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.dec = T5Attention(bidirectional=True), T5Attention(bidirectional=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x))


def test_t5_relative_position_bias() -> None:
    torch.manual_seed(11)
    check_model(T5Pair(), (torch.randn(2, 12, 32),), ({0: BATCH, 1: SEQ},),
                others=((torch.randn(1, 32, 32),), (torch.randn(3, 2, 32),)))


class GRUClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(8, 16, num_layers=2, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, h = self.gru(x)
        return self.head(out[:, -1]), h


def test_gru() -> None:
    torch.manual_seed(12)
    check_model(GRUClassifier(), (torch.randn(2, 4, 8),), ({0: BATCH},), others=((torch.randn(3, 4, 8),),))


class LSTMCellLoop(nn.Module):
    def __init__(self, steps: int = 5) -> None:
        super().__init__()
        self.steps = steps
        self.cell = nn.LSTMCell(8, 16)
        self.out = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ys = []
        for t in range(self.steps):
            h, c = self.cell(x[:, t], (h, c))
            ys.append(self.out(h))
        return torch.stack(ys, 1), c


def test_lstm_cell_loop() -> None:
    torch.manual_seed(13)
    args = (torch.randn(2, 5, 8), torch.randn(2, 16), torch.randn(2, 16))
    check_model(LSTMCellLoop(), args, ({0: BATCH}, {0: BATCH}, {0: BATCH}),
                others=((torch.randn(4, 5, 8), torch.randn(4, 16), torch.randn(4, 16)),))


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2))
    t = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


class WhisperEncoder(nn.Module):
    def __init__(self, mels: int = 8, dim: int = 32, heads: int = 4, ctx: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(mels, dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(ctx, dim))
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, activation="gelu",
                                                               batch_first=True, norm_first=True) for _ in range(1))
        self.ln_post = nn.LayerNorm(dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).permute(0, 2, 1)
        x = x + self.positional_embedding[: x.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return self.ln_post(x)


def test_whisper_style_encoder() -> None:
    torch.manual_seed(14)
    frames = Dim("frames", min=2, max=16)
    check_model(WhisperEncoder(), (torch.randn(2, 8, 20),), ({0: BATCH, 2: 2 * frames},),
                others=((torch.randn(1, 8, 32),), (torch.randn(3, 8, 4),)))


class CausalConv1d(nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, ((self.kernel_size[0] - 1) * self.dilation[0], 0)))


class WaveNetBlock(nn.Module):
    def __init__(self, c: int, dilation: int) -> None:
        super().__init__()
        self.filt = CausalConv1d(c, c, 2, dilation=dilation)
        self.gate = CausalConv1d(c, c, 2, dilation=dilation)
        self.res, self.skip = nn.Conv1d(c, c, 1), nn.Conv1d(c, c, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.filt(x)) * torch.sigmoid(self.gate(x))
        return x + self.res(h), self.skip(h)


class WaveNet(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.inp = CausalConv1d(1, c, 2)
        self.blocks = nn.ModuleList(WaveNetBlock(c, d) for d in (1, 2, 4, 8))
        self.out = nn.Sequential(nn.ReLU(), nn.Conv1d(c, c, 1), nn.ReLU(), nn.Conv1d(c, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        skips = 0
        for blk in self.blocks:
            x, s = blk(x)
            skips = skips + s
        return self.out(skips)


def test_wavenet_dilated_causal_conv_stack() -> None:
    torch.manual_seed(15)
    check_model(WaveNet(), (torch.randn(2, 1, 24),), ({0: BATCH, 2: SEQ},), others=((torch.randn(1, 1, 32),), (torch.randn(3, 1, 3),)))


class SelectiveScan(nn.Module):
    """Mamba-like block: input-dependent (delta, B, C), a python loop over a fixed length."""

    def __init__(self, dim: int = 8, state: int = 4, length: int = 4) -> None:
        super().__init__()
        self.length = length
        self.in_proj = nn.Linear(dim, 2 * dim)
        self.conv = nn.Conv1d(dim, dim, 3, padding=2, groups=dim)
        self.x_proj = nn.Linear(dim, 1 + 2 * state)
        self.dt_proj = nn.Linear(1, dim)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, state + 1, dtype=torch.float32)).repeat(dim, 1))
        self.D = nn.Parameter(torch.ones(dim))
        self.out_proj = nn.Linear(dim, dim)
        self.state = state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u = F.silu(self.conv(u.transpose(1, 2))[..., :n]).transpose(1, 2)
        dt, B, C = self.x_proj(u).split([1, self.state, self.state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))  # [b, n, d]
        A = -torch.exp(self.A_log)  # [d, state]
        h = torch.zeros(b, d, self.state)
        ys = []
        for t in range(self.length):
            dA = torch.exp(delta[:, t, :, None] * A)
            h = dA * h + delta[:, t, :, None] * B[:, t, None, :] * u[:, t, :, None]
            ys.append(torch.einsum("bds,bs->bd", h, C[:, t]))
        y = torch.stack(ys, dim=1) + u * self.D
        return self.out_proj(y * F.silu(z))


def test_mamba_like_selective_scan() -> None:
    torch.manual_seed(16)
    check_model(SelectiveScan(), (torch.randn(2, 4, 8),), ({0: BATCH},), others=((torch.randn(4, 4, 8),),))


class HiFiGANish(nn.Module):
    """A vocoder stage: weight-normalised convs (both parametrization APIs), a transposed-conv
    upsampler, dilated residual convs."""

    def __init__(self) -> None:
        super().__init__()
        wn = nn.utils.parametrizations.weight_norm
        self.pre = wn(nn.Conv1d(4, 8, 7, padding=3))
        self.up = wn(nn.ConvTranspose1d(8, 4, 4, 2, 1))  # its weight is computed from g and v
        self.res = nn.ModuleList(wn(nn.Conv1d(4, 4, 3, dilation=d, padding=d)) for d in (1, 3))
        self.post = nn.utils.weight_norm(nn.Conv1d(4, 1, 7, padding=3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(F.leaky_relu(self.pre(x), 0.1))
        for conv in self.res:
            x = x + conv(F.leaky_relu(x, 0.1))
        return torch.tanh(self.post(x))


def test_hifigan_weight_norm_and_transposed_conv() -> None:
    torch.manual_seed(17)
    check_model(HiFiGANish(), (torch.randn(2, 4, 10),), ({0: BATCH, 2: SEQ},), others=((torch.randn(1, 4, 31),),))


class GQAttention(nn.Module):
    """Llama-style grouped-query attention through F.scaled_dot_product_attention(enable_gqa=True)
    with a boolean key padding mask."""

    def __init__(self, dim: int = 32, heads: int = 4, kv_heads: int = 2) -> None:
        super().__init__()
        self.h, self.kv, self.d = heads, kv_heads, dim // heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv_proj = nn.Linear(dim, 2 * kv_heads * self.d, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.h, self.d).transpose(1, 2)
        k, v = self.kv_proj(x).view(b, n, 2, self.kv, self.d).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :], enable_gqa=True)
        return self.o(y.transpose(1, 2).reshape(b, n, -1))


def test_grouped_query_sdpa_with_a_bool_mask() -> None:
    torch.manual_seed(18)

    def inputs(b: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        keep = torch.ones(b, n, dtype=torch.bool)
        keep[0, n - 2:] = False
        return torch.randn(b, n, 32), keep

    check_model(GQAttention(), inputs(2, 6), ({0: BATCH, 1: SEQ}, {0: BATCH, 1: SEQ}), others=(inputs(3, 17),))


class FramedEnergy(nn.Module):
    """Audio framing over a dynamic length: overlapping windows by Tensor.unfold, a Hann window,
    per-frame log energy and a linear projection of each frame."""

    def __init__(self, frame: int = 8, hop: int = 4) -> None:
        super().__init__()
        self.frame, self.hop = frame, hop
        self.register_buffer("window", torch.hann_window(frame))
        self.proj = nn.Linear(frame, 3)

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # [B, T]
        frames = wave.unfold(-1, self.frame, self.hop) * self.window  # [B, n, frame]
        return torch.log(frames.pow(2).sum(-1) + 1e-6), self.proj(frames)


def test_unfold_frames_over_a_dynamic_length() -> None:
    torch.manual_seed(19)
    check_model(FramedEnergy(), (torch.randn(2, 30),), ({0: BATCH, 1: Dim("samples", min=16, max=128)},),
                others=((torch.randn(1, 128),), (torch.randn(3, 17),)))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, -1)
    return torch.cat((-x2, x1), -1)


class LlamaStaticCache(nn.Module):
    """ExecuTorch-style Llama layer: RMSNorm, rotate-half RoPE at input positions, grouped-query
    heads by repeat_interleave, SwiGLU, and a fixed-size KV cache passed in and returned,
    updated with index_copy at ``input_pos`` (the stateless form of a mutable cache buffer)."""

    def __init__(self, vocab: int = 50, d: int = 32, heads: int = 4, kv: int = 2) -> None:
        super().__init__()
        self.h, self.kv, self.hd = heads, kv, d // heads
        self.emb = nn.Embedding(vocab, d)
        self.n1, self.n2 = nn.RMSNorm(d, eps=1e-6), nn.RMSNorm(d, eps=1e-6)
        self.wq, self.wo = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.wk, self.wv = nn.Linear(d, kv * self.hd, bias=False), nn.Linear(d, kv * self.hd, bias=False)
        self.w1, self.w3, self.w2 = nn.Linear(d, 64, bias=False), nn.Linear(d, 64, bias=False), nn.Linear(64, d, bias=False)
        self.out = nn.Linear(d, vocab, bias=False)
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, self.hd, 2).float() / self.hd)))

    def forward(self, ids: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                input_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n = ids.shape
        x = self.emb(ids)
        freqs = torch.outer(input_pos.float(), self.inv_freq)
        cos, sin = torch.cat([freqs, freqs], -1).cos(), torch.cat([freqs, freqs], -1).sin()
        h = self.n1(x)
        q = self.wq(h).view(b, n, self.h, self.hd).transpose(1, 2)
        k = self.wk(h).view(b, n, self.kv, self.hd).transpose(1, 2)
        v = self.wv(h).view(b, n, self.kv, self.hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k_cache, v_cache = k_cache.index_copy(2, input_pos, k), v_cache.index_copy(2, input_pos, v)
        mask = torch.arange(k_cache.shape[2])[None, :] <= input_pos[:, None]
        keys = k_cache.repeat_interleave(self.h // self.kv, 1)
        values = v_cache.repeat_interleave(self.h // self.kv, 1)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        x = x + self.wo(y.transpose(1, 2).reshape(b, n, -1))
        h = self.n2(x)
        return self.out(x + self.w2(F.silu(self.w1(h)) * self.w3(h))), k_cache, v_cache


def test_llama_layer_with_a_static_kv_cache_input() -> None:
    torch.manual_seed(21)
    cache = (torch.zeros(1, 2, 16, 8), torch.zeros(1, 2, 16, 8))
    prefill = (torch.randint(0, 50, (1, 5)), *cache, torch.arange(5))
    decode = (torch.randint(0, 50, (1, 3)), torch.randn(1, 2, 16, 8), torch.randn(1, 2, 16, 8), torch.tensor([7, 8, 9]))
    check_model(LlamaStaticCache(), prefill, ({1: SEQ}, None, None, {0: SEQ}), others=(decode,))
