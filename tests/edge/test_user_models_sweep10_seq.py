"""Sequence models as a user writes them next, run by the numpy runtime against eager torch in
float64: a Conformer block (macaron feed-forwards, MHSA with a key padding mask from lengths,
a depthwise conv module with GLU and BatchNorm) over a dynamic length, and a T5/BART-like
encoder-decoder exported as several methods — the encoder (with the cross-attention keys and
values) over a dynamic source length, and a decoder step reading them and a static KV cache it
writes with ``index_copy`` — driven through a greedy decode; and a decoder step whose cache
grows by ``torch.cat`` over a dynamic past length (an empty past included)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from tests.edge.test_user_models_vision import check_model
from torchship.edge import export

BATCH = Dim("batch", min=1, max=4)


class FeedForward(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln, self.l1, self.l2 = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(F.silu(self.l1(self.ln(x))))


class ConvModule(nn.Module):
    def __init__(self, d: int, k: int = 7) -> None:
        super().__init__()
        self.ln, self.pw1 = nn.LayerNorm(d), nn.Conv1d(d, 2 * d, 1)
        self.dw, self.bn = nn.Conv1d(d, d, k, padding=k // 2, groups=d), nn.BatchNorm1d(d)
        self.pw2 = nn.Conv1d(d, d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.glu(self.pw1(self.ln(x).transpose(1, 2)), dim=1)
        return self.pw2(F.silu(self.bn(self.dw(y)))).transpose(1, 2)


class ConformerBlock(nn.Module):
    def __init__(self, d: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.ff1, self.ff2 = FeedForward(d), FeedForward(d)
        self.ln_att, self.att = nn.LayerNorm(d), nn.MultiheadAttention(d, heads, batch_first=True)
        self.conv, self.ln_out = ConvModule(d), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        pad = torch.arange(x.shape[1])[None, :] >= lengths[:, None]
        x = x + 0.5 * self.ff1(x)
        y = self.ln_att(x)
        x = x + self.att(y, y, y, key_padding_mask=pad, need_weights=False)[0]
        x = x + self.conv(x.masked_fill(pad[..., None], 0.0))
        return self.ln_out(x + 0.5 * self.ff2(x))


def test_conformer_block_over_a_dynamic_length_with_padding() -> None:
    torch.manual_seed(110)
    model = ConformerBlock()
    with torch.no_grad():
        model.conv.bn.running_mean.normal_()
        model.conv.bn.running_var.uniform_(0.5, 2.0)
    time = Dim("time", min=2, max=64)
    check_model(model, (torch.randn(2, 10, 16), torch.tensor([10, 6])), ({0: BATCH, 1: time}, {0: BATCH}),
                others=((torch.randn(3, 23, 16), torch.tensor([5, 23, 17])),))


class Attention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.h = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.h, -1)).transpose(1, 2)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = F.scaled_dot_product_attention(self.split(self.q(x)), k, v, attn_mask=mask)
        return self.o(y.transpose(1, 2).flatten(2))


class EncoderDecoder(nn.Module):
    """Post-norm encoder and decoder; ``forward`` encodes and returns the stacked cross-attention
    keys/values ``(L, 2, b, h, S, dh)``; ``step`` decodes one token at position ``pos`` into
    a cache ``(L, 2, b, h, T, dh)`` of static length ``T``."""

    def __init__(self, vocab: int = 20, d: int = 16, heads: int = 2, layers: int = 2) -> None:
        super().__init__()
        self.layers = layers
        self.emb, self.pos = nn.Embedding(vocab, d), nn.Embedding(32, d)
        self.enc_att = nn.ModuleList(Attention(d, heads) for _ in range(layers))
        self.self_att = nn.ModuleList(Attention(d, heads) for _ in range(layers))
        self.cross = nn.ModuleList(Attention(d, heads) for _ in range(layers))
        self.enc_ff = nn.ModuleList(nn.Sequential(nn.Linear(d, 32), nn.GELU(), nn.Linear(32, d)) for _ in range(layers))
        self.dec_ff = nn.ModuleList(nn.Sequential(nn.Linear(d, 32), nn.GELU(), nn.Linear(32, d)) for _ in range(layers))
        self.enc_ln = nn.ModuleList(nn.LayerNorm(d) for _ in range(2 * layers))
        self.dec_ln = nn.ModuleList(nn.LayerNorm(d) for _ in range(3 * layers))
        self.lm = nn.Linear(d, vocab)

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.emb(src) + self.pos(torch.arange(src.shape[1]))
        mask = src_mask[:, None, None, :]
        for i, att in enumerate(self.enc_att):
            x = self.enc_ln[2 * i](x + att.attend(x, att.split(att.k(x)), att.split(att.v(x)), mask))
            x = self.enc_ln[2 * i + 1](x + self.enc_ff[i](x))
        return x, torch.stack([torch.stack([c.split(c.k(x)), c.split(c.v(x))]) for c in self.cross])

    def step(self, tok: torch.Tensor, pos: torch.Tensor, cache: torch.Tensor, cross: torch.Tensor,
             src_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.emb(tok) + self.pos(pos)[None]
        seen = (torch.arange(cache.shape[4]) <= pos)[None, None, None, :]
        new = []
        for i, (att, cross_att) in enumerate(zip(self.self_att, self.cross)):
            k = cache[i, 0].index_copy(2, pos, att.split(att.k(x)))
            v = cache[i, 1].index_copy(2, pos, att.split(att.v(x)))
            new.append(torch.stack([k, v]))
            x = self.dec_ln[3 * i](x + att.attend(x, k, v, seen))
            x = self.dec_ln[3 * i + 1](x + cross_att.attend(x, cross[i, 0], cross[i, 1], src_mask[:, None, None, :]))
            x = self.dec_ln[3 * i + 2](x + self.dec_ff[i](x))
        return self.lm(x[:, -1]).log_softmax(-1), torch.stack(new)


def test_encoder_decoder_methods_with_cross_attention_states_and_a_kv_cache() -> None:
    torch.manual_seed(111)
    model, steps = EncoderDecoder().eval(), 5
    src, src_mask = torch.randint(0, 20, (2, 7)), torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    cross = model(src, src_mask)[1]
    length = Dim("src", min=2, max=24)
    prog = export(model, None, methods={
        "forward": ((src, src_mask), ({0: BATCH, 1: length}, {0: BATCH, 1: length})),
        "step": ((torch.tensor([[1], [2]]), torch.tensor([0]), torch.zeros(2, 2, 2, 2, steps, 8), cross, src_mask),
                 ({0: BATCH}, None, {2: BATCH}, {2: BATCH, 4: length}, {0: BATCH, 1: length})),
    })
    src2, mask2 = torch.randint(0, 20, (3, 11)), torch.ones(3, 11, dtype=torch.bool)
    mask2[1, 6:] = False
    check_model(model, (src, src_mask), prog=prog, others=((src2, mask2),))
    cross_p = prog.method("forward")(src2.numpy(), mask2.numpy())[1]
    ref = model.double()
    with torch.no_grad():
        cross_r = ref(src2, mask2)[1]
        cache_p, cache_r = np.zeros((2, 2, 3, 2, steps, 8), np.float32), torch.zeros(2, 2, 3, 2, steps, 8, dtype=torch.float64)
        tok = torch.zeros(3, 1, dtype=torch.long)
        for t in range(steps):  # greedy decoding, each step's tokens from the reference
            logp, cache_p = prog.method("step")(tok.numpy(), np.array([t]), cache_p, cross_p, mask2.numpy())
            logp_r, cache_r = ref.step(tok, torch.tensor([t]), cache_r, cross_r, mask2)
            assert np.abs(logp - logp_r.numpy()).max() <= 1e-5 * np.abs(logp_r.numpy()).max()
            assert np.abs(cache_p - cache_r.numpy()).max() <= 1e-5 * np.abs(cache_r.numpy()).max()
            assert (logp.argmax(-1) == logp_r.argmax(-1).numpy()).all()
            tok = logp_r.argmax(-1, keepdim=True)
    model.float()


class GrowingCacheStep(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (2, 4)).transpose(1, 2)
        k, v = torch.cat([past_k, heads(self.k(x))], 2), torch.cat([past_v, heads(self.v(x))], 2)
        return F.scaled_dot_product_attention(heads(self.q(x)), k, v), k, v


def test_decoder_step_with_a_cache_grown_by_cat_over_a_dynamic_past_including_empty() -> None:
    torch.manual_seed(112)
    past = Dim("past", min=0, max=31)
    check_model(GrowingCacheStep(), (torch.randn(2, 1, 8), torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4)),
                ({0: BATCH}, {0: BATCH, 2: past}, {0: BATCH, 2: past}),
                others=((torch.randn(1, 1, 8), torch.randn(1, 2, 0, 4), torch.randn(1, 2, 0, 4)),))
