"""Vision models as a user writes them next, exported with a dynamic batch (and image size)
and run by the numpy runtime against eager torch in float64: a Stable-Diffusion-style UNet
block (GroupNorm + SiLU ResBlock with a sinusoidal time embedding, self- and cross-attention
to a text context of dynamic length, a GEGLU feed-forward, nearest upsampling by
``F.interpolate``), a MobileViT block, a LeViT stage with its attention-bias table, and a
DINOv2-style ViT with register tokens and a bicubically interpolated position embedding over
a dynamic image size."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from tests.edge.test_user_models_vision import check_model

BATCH = Dim("batch", min=1, max=4)


def _randomise_batch_norms(model: nn.Module) -> nn.Module:
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2.0)
    return model


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int) -> None:
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(4, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(tdim, cout)
        self.n2, self.c2 = nn.GroupNorm(4, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x))) + self.t(F.silu(temb))[:, :, None, None]
        return self.skip(x) + self.c2(F.dropout(F.silu(self.n2(h)), 0.0))


class SpatialTransformer(nn.Module):
    """Self-attention (``nn.MultiheadAttention``), cross-attention to the context through
    ``scaled_dot_product_attention`` and a GEGLU feed-forward over the flattened pixels."""

    def __init__(self, c: int, ctx: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.norm, self.proj_in = nn.GroupNorm(4, c, eps=1e-6), nn.Conv2d(c, c, 1)
        self.ln1, self.attn1 = nn.LayerNorm(c), nn.MultiheadAttention(c, heads, batch_first=True)
        self.ln2, self.q, self.o = nn.LayerNorm(c), nn.Linear(c, c, bias=False), nn.Linear(c, c)
        self.k, self.v = nn.Linear(ctx, c, bias=False), nn.Linear(ctx, c, bias=False)
        self.ln3, self.ff1, self.ff2 = nn.LayerNorm(c), nn.Linear(c, 8 * c), nn.Linear(4 * c, c)
        self.proj_out = nn.Conv2d(c, c, 1)

    def heads_first(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(b, h * w, c)
        z = self.ln1(y)
        y = y + self.attn1(z, z, z, need_weights=False)[0]
        q = self.heads_first(self.q(self.ln2(y)))
        a = F.scaled_dot_product_attention(q, self.heads_first(self.k(context)), self.heads_first(self.v(context)))
        y = y + self.o(a.transpose(1, 2).flatten(2))
        hidden, gate = self.ff1(self.ln3(y)).chunk(2, dim=-1)
        y = y + self.ff2(hidden * F.gelu(gate))
        return self.proj_out(y.reshape(b, h, w, c).permute(0, 3, 1, 2)) + x


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=t.dtype) / half)
    args = t[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class UNetUpBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.time_mlp = nn.Sequential(nn.Linear(16, 32), nn.SiLU(), nn.Linear(32, 32))
        self.res, self.attn = ResBlock(8, 16, 32), SpatialTransformer(16, 12)
        self.up = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = self.attn(self.res(x, self.time_mlp(timestep_embedding(t, 16))), context)
        return self.up(F.interpolate(h, scale_factor=2.0, mode="nearest"))


def test_stable_diffusion_unet_block_with_time_embedding_and_cross_attention() -> None:
    torch.manual_seed(100)
    ctx = Dim("ctx", min=1, max=16)
    check_model(UNetUpBlock(), (torch.randn(2, 8, 4, 4), torch.tensor([3.0, 500.0]), torch.randn(2, 5, 12)),
                ({0: BATCH}, {0: BATCH}, {0: BATCH, 1: ctx}),
                others=((torch.randn(3, 8, 4, 4), torch.tensor([1.0, 999.0, 20.0]), torch.randn(3, 7, 12)),))


class MobileViTBlock(nn.Module):
    """Local convolutions, a transformer over the pixels at the same position of every 2x2
    patch (unfolded by reshape/permute), folded back and fused with the input."""

    def __init__(self, c: int = 8, d: int = 16, p: int = 2) -> None:
        super().__init__()
        self.p = p
        self.local = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.SiLU(), nn.Conv2d(c, d, 1))
        self.transformer = nn.TransformerEncoderLayer(d, 2, 2 * d, dropout=0.0, batch_first=True, norm_first=True,
                                                      activation="gelu")
        self.proj, self.fuse = nn.Conv2d(d, c, 1), nn.Conv2d(2 * c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.local(x)
        b, d, h, w = y.shape
        p = self.p
        y = y.reshape(b, d, h // p, p, w // p, p).permute(0, 3, 5, 2, 4, 1).reshape(b * p * p, (h // p) * (w // p), d)
        y = self.transformer(y)
        y = y.reshape(b, p, p, h // p, w // p, d).permute(0, 5, 3, 1, 4, 2).reshape(b, d, h, w)
        return self.fuse(torch.cat([x, self.proj(y)], 1))


class MobileViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.Hardswish())
        self.mv2 = nn.Sequential(nn.Conv2d(8, 16, 1), nn.ReLU6(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                                 nn.ReLU6(), nn.Conv2d(16, 8, 1))
        self.block, self.head = MobileViTBlock(), nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.block(x + self.mv2(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_mobilevit_block() -> None:
    torch.manual_seed(101)
    check_model(_randomise_batch_norms(MobileViT()), (torch.randn(2, 3, 16, 16),), ({0: BATCH},),
                others=((torch.randn(1, 3, 16, 16),),))


class LeViTAttention(nn.Module):
    """LeViT attention: per-head biases looked up in a table by the |dy|, |dx| offset of every
    pair of positions (an index buffer), values twice as wide as the keys, Hardswish."""

    def __init__(self, d: int = 16, heads: int = 2, res: int = 4, kd: int = 4) -> None:
        super().__init__()
        self.h, self.kd = heads, kd
        self.qkv = nn.Linear(d, heads * 4 * kd)
        self.proj = nn.Sequential(nn.Hardswish(), nn.Linear(heads * 2 * kd, d))
        points = [(i, j) for i in range(res) for j in range(res)]
        offsets: dict[tuple[int, int], int] = {}
        idxs = [offsets.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(offsets)) for a in points for b in points]
        self.bias = nn.Parameter(torch.randn(heads, len(offsets)) * 0.1)
        self.register_buffer("idx", torch.tensor(idxs).view(res * res, res * res), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, self.h, -1).split([self.kd, self.kd, 2 * self.kd], dim=3)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        a = (q @ k.transpose(-2, -1)) * self.kd ** -0.5 + self.bias[:, self.idx]
        return self.proj((a.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1))


class LeViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.Hardswish(), nn.Conv2d(8, 16, 3, 2, 1))
        self.attn, self.bn = LeViTAttention(), nn.BatchNorm1d(16)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.Hardswish(), nn.Linear(32, 16))
        self.head, self.dist = nn.Linear(16, 3), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = x + self.attn(x)
        x = (x + self.mlp(self.bn(x.flatten(0, 1)).reshape_as(x))).mean(1)
        return (self.head(x) + self.dist(x)) / 2


def test_levit_attention_bias_table_and_distillation_head() -> None:
    torch.manual_seed(102)
    check_model(_randomise_batch_norms(LeViT()), (torch.randn(2, 3, 16, 16),), ({0: BATCH},),
                others=((torch.randn(3, 3, 16, 16),),))


class DinoBlock(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.h = heads
        self.n1, self.qkv, self.proj = nn.LayerNorm(d, eps=1e-6), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.n2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.ls1, self.ls2 = nn.Parameter(torch.full((d,), 0.1)), nn.Parameter(torch.full((d,), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(self.n1(x)).reshape(b, n, 3, self.h, c // self.h).permute(2, 0, 3, 1, 4).unbind(0)
        x = x + self.ls1 * self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))
        return x + self.ls2 * self.mlp(self.n2(x))


class DinoViT(nn.Module):
    """DINOv2 with registers: the 4x4 grid of position embeddings bicubically resized to the
    image's patch grid, register tokens inserted after the class token, LayerScale."""

    def __init__(self, d: int = 16, grid: int = 4, registers: int = 4) -> None:
        super().__init__()
        self.grid, self.registers = grid, registers
        self.embed = nn.Conv2d(3, d, 4, 4)
        self.cls, self.reg = nn.Parameter(torch.randn(1, 1, d)), nn.Parameter(torch.randn(1, registers, d))
        self.pos = nn.Parameter(torch.randn(1, grid * grid + 1, d))
        self.blocks = nn.Sequential(DinoBlock(d, 2), DinoBlock(d, 2))
        self.norm = nn.LayerNorm(d, eps=1e-6)

    def interpolate_pos_encoding(self, h: int, w: int) -> torch.Tensor:
        d = self.pos.shape[-1]
        patch_pos = self.pos[:, 1:].reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([self.pos[:, :1], patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, d)], 1)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = img.shape[0]
        x = self.embed(img)
        h, w = x.shape[-2:]
        x = torch.cat([self.cls.expand(b, -1, -1), x.flatten(2).transpose(1, 2)], 1) + self.interpolate_pos_encoding(h, w)
        x = torch.cat([x[:, :1], self.reg.expand(b, -1, -1), x[:, 1:]], 1)
        x = self.norm(self.blocks(x))
        return x[:, 0], x[:, 1 + self.registers:]


def test_dinov2_registers_and_position_embedding_interpolated_to_a_dynamic_image_size() -> None:
    torch.manual_seed(103)
    h, w = Dim("h", min=1, max=8), Dim("w", min=1, max=8)
    check_model(DinoViT(), (torch.randn(2, 3, 24, 20),), ({0: BATCH, 2: 4 * h, 3: 4 * w},),
                others=((torch.randn(1, 3, 16, 16),), (torch.randn(3, 3, 8, 28),)))
