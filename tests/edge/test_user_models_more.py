"""More models a new user brings (graph message passing over a dynamic edge list, Swin window
attention, DETR sine positions from a padding mask, a Conformer conv module, nn.Transformer,
PointNet, a VAE decoder, masked pooling), exported with dynamic dims and run by the numpy
runtime against eager torch in float64."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from tests.edge.test_user_models_vision import check_model

BATCH = Dim("batch", min=1, max=8)
SEQ = Dim("seq", min=2, max=24)


class MessagePassing(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.msg = nn.Linear(2 * d, d)
        self.upd = nn.GRUCell(d, d)

    def forward(self, x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:  # x [N, d], edges [2, E]
        src, dst = edges[0], edges[1]
        m = F.relu(self.msg(torch.cat([x[src], x[dst]], -1)))
        agg = torch.zeros_like(x).index_add(0, dst, m)
        deg = torch.zeros(x.shape[0]).index_add(0, dst, torch.ones(dst.shape[0])).clamp(min=1)
        x = self.upd(agg / deg[:, None], x)
        x[edges[0, :1]] = 0.0  # zero the first edge's source node
        return x


def test_message_passing_over_dynamic_nodes_and_edges() -> None:
    torch.manual_seed(30)

    def graph(n: int, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(n, 8), torch.randint(0, n, (2, e))

    spec = ({0: Dim("nodes", min=2, max=32)}, {1: Dim("edges", min=1, max=64)})
    check_model(MessagePassing(), graph(5, 7), spec, others=(graph(11, 30), graph(3, 1)))


class SwinBlock(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 2, ws: int = 4, shift: int = 2) -> None:
        super().__init__()
        self.ws, self.shift, self.heads = ws, shift, heads
        self.norm = nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.table = nn.Parameter(torch.randn((2 * ws - 1) ** 2, heads) * 0.1)
        c = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
        rel = (c[:, :, None] - c[:, None, :]).permute(1, 2, 0) + ws - 1
        self.register_buffer("index", rel[..., 0] * (2 * ws - 1) + rel[..., 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, H, W, C]
        b, h, w, c = x.shape
        ws = self.ws
        y = torch.roll(self.norm(x), (-self.shift, -self.shift), (1, 2))
        y = y.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        q, k, v = self.qkv(y).reshape(y.shape[0], ws * ws, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        a = a + self.table[self.index.view(-1)].view(ws * ws, ws * ws, -1).permute(2, 0, 1).unsqueeze(0)
        y = (a.softmax(-1) @ v).transpose(1, 2).reshape(-1, ws * ws, c)
        y = self.proj(y).view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        return x + torch.roll(y, (self.shift, self.shift), (1, 2))


def test_swin_shifted_window_attention() -> None:
    torch.manual_seed(31)
    check_model(SwinBlock(), (torch.randn(2, 8, 8, 16),), ({0: BATCH},), others=((torch.randn(3, 8, 8, 16),),))


class DETRSinePositions(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # mask: True on padding
        not_mask = ~mask
        y = not_mask.cumsum(1, dtype=torch.float32)
        xx = not_mask.cumsum(2, dtype=torch.float32)
        y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
        xx = xx / (xx[:, :, -1:] + 1e-6) * 2 * math.pi
        dim_t = torch.arange(8, dtype=torch.float32)
        dim_t = 10000 ** (2 * (dim_t // 2) / 8)
        px, py = xx[:, :, :, None] / dim_t, y[:, :, :, None] / dim_t
        px = torch.stack((px[:, :, :, 0::2].sin(), px[:, :, :, 1::2].cos()), dim=4).flatten(3)
        py = torch.stack((py[:, :, :, 0::2].sin(), py[:, :, :, 1::2].cos()), dim=4).flatten(3)
        return x + torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


def test_detr_sine_positions_from_a_padding_mask() -> None:
    torch.manual_seed(32)

    def inputs(b: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.zeros(b, h, w, dtype=torch.bool)
        mask[0, h // 2 + 1:, :] = True
        mask[-1, :, w - 2:] = True
        return torch.randn(b, 16, h, w), mask

    h, w = Dim("h", min=3, max=12), Dim("w", min=3, max=12)
    check_model(DETRSinePositions(), inputs(2, 6, 7), ({0: BATCH, 2: h, 3: w}, {0: BATCH, 1: h, 2: w}),
                others=(inputs(1, 10, 4), inputs(3, 3, 12)))


class ConformerConv(nn.Module):
    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.pw1, self.pw2 = nn.Conv1d(d, 2 * d, 1), nn.Conv1d(d, d, 1)
        self.dw = nn.Conv1d(d, d, 7, padding=3, groups=d)
        self.bn = nn.BatchNorm1d(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.glu(self.pw1(self.ln(x).transpose(1, 2)), dim=1)
        y = self.pw2(F.silu(self.bn(self.dw(y))))
        return x + y.transpose(1, 2)


def test_conformer_conv_module() -> None:
    torch.manual_seed(33)
    model = ConformerConv()
    model.bn.running_mean.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    check_model(model, (torch.randn(2, 9, 16),), ({0: BATCH, 1: SEQ},), others=((torch.randn(1, 20, 16),),))


class Seq2Seq(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.t = nn.Transformer(16, 2, 1, 1, 32, 0.0, batch_first=True)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1])
        return self.t(src, tgt, tgt_mask=mask, tgt_is_causal=True)


def test_nn_transformer_with_a_square_subsequent_mask() -> None:
    torch.manual_seed(34)
    spec = ({0: BATCH, 1: SEQ}, {0: BATCH, 1: Dim("tgt", min=2, max=16)})
    check_model(Seq2Seq(), (torch.randn(2, 7, 16), torch.randn(2, 5, 16)), spec,
                others=((torch.randn(1, 3, 16), torch.randn(1, 12, 16)),))


class PointNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv1d(3, 16, 1), nn.ReLU(), nn.Conv1d(16, 32, 1))
        self.head = nn.Linear(32, 4)

    def forward(self, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # [B, N, 3]
        f = self.mlp(pts.transpose(1, 2))
        return self.head(f.max(dim=2)[0]), f.argmax(2)


def test_pointnet_over_a_dynamic_point_count() -> None:
    torch.manual_seed(35)
    check_model(PointNet(), (torch.randn(2, 20, 3),), ({0: BATCH, 1: Dim("points", min=2, max=64)},),
                others=((torch.randn(1, 64, 3),), (torch.randn(3, 5, 3),)))


class VAEDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 16 * 4 * 4)
        self.net = nn.Sequential(nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.ConvTranspose2d(8, 3, 4, 2, 1), nn.Tanh())

    def forward(self, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        z = mu + eps * torch.exp(0.5 * logvar)  # the reparameterisation with the noise as an input
        return self.net(self.fc(z).view(-1, 16, 4, 4))


def test_vae_decoder() -> None:
    torch.manual_seed(36)
    args = tuple(torch.randn(2, 6) for _ in range(3))
    check_model(VAEDecoder(), args, ({0: BATCH},) * 3, others=(tuple(torch.randn(5, 6) for _ in range(3)),))


class MaskedPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 8, padding_idx=0)
        self.cls = nn.Linear(8, 2)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = (ids != 0).unsqueeze(-1).float()
        e = self.emb(ids)
        pooled = (e * m).sum(1) / m.sum(1).clamp(min=1e-9)
        lengths = (ids != 0).sum(1)
        last = e[torch.arange(ids.shape[0]), (lengths - 1).clamp(min=0)]  # the last real token
        return self.cls(pooled + last), lengths


def test_masked_mean_and_last_token_pooling() -> None:
    torch.manual_seed(37)

    def ids(b: int, n: int) -> torch.Tensor:
        t = torch.randint(1, 30, (b, n))
        t[0, n // 2:] = 0
        return t

    check_model(MaskedPool(), (ids(3, 7),), ({0: BATCH, 1: SEQ},), others=((ids(1, 20),), (ids(5, 2),)))


class FoldPatches(nn.Module):
    """Overlapping patches out (F.unfold) and back (F.fold) over a dynamic batch, and
    index_fill of fixed columns."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cols = F.unfold(x, 3, padding=1, stride=2)
        back = F.fold(F.unfold(x, 2, stride=2) * 2, (8, 8), 2, stride=2)
        return cols, back.index_fill(1, torch.tensor([0, 2]), -1.0)


def test_unfold_fold_and_index_fill_over_a_dynamic_batch() -> None:
    torch.manual_seed(38)
    check_model(FoldPatches(), (torch.randn(2, 3, 8, 8),), ({0: BATCH},), others=((torch.randn(5, 3, 8, 8),),))


class DLRM(nn.Module):
    """Recommendation model: dense MLP, one EmbeddingBag per sparse feature (2-D input, a
    dynamic batch of bags), pairwise dot-product interactions picked by tril_indices."""

    def __init__(self) -> None:
        super().__init__()
        self.bottom = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.tables = nn.ModuleList(nn.EmbeddingBag(20, 8, mode="sum") for _ in range(3))
        self.top = nn.Sequential(nn.Linear(8 + 6, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:  # sparse [B, 3, 2]
        x = self.bottom(dense)
        t = torch.stack([x] + [table(sparse[:, i]) for i, table in enumerate(self.tables)], 1)
        z = torch.bmm(t, t.transpose(1, 2))
        li, lj = torch.tril_indices(4, 4, offset=-1)
        return torch.sigmoid(self.top(torch.cat([x, z[:, li, lj]], 1)))


def test_dlrm_embedding_bags_over_a_dynamic_batch() -> None:
    torch.manual_seed(39)
    check_model(DLRM(), (torch.randn(3, 4), torch.randint(0, 20, (3, 3, 2))), ({0: BATCH}, {0: BATCH}),
                others=((torch.randn(7, 4), torch.randint(0, 20, (7, 3, 2))),))


def test_embedding_bag_with_dynamic_indices_and_offsets() -> None:
    torch.manual_seed(40)
    bag = nn.EmbeddingBag(20, 4, mode="mean", include_last_offset=True, padding_idx=3)
    spec = ({0: Dim("n", min=1, max=40)}, {0: Dim("bags", min=3, max=20)})
    check_model(bag, (torch.randint(0, 20, (9,)), torch.tensor([0, 2, 2, 5, 9])), spec,
                others=((torch.tensor([3, 3, 1, 0, 7, 19, 3, 2]), torch.tensor([0, 1, 1, 2, 8])),
                        (torch.randint(0, 20, (17,)), torch.tensor([0, 1, 1, 1, 8, 16, 17]))))


class BoxIoU(nn.Module):
    """Detection post-processing: the IoU matrix of two box lists and each box's best match."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, ...]:  # [N, 4], [M, 4] xyxy
        area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
        area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        lt = torch.max(a[:, None, :2], b[None, :, :2])
        rb = torch.min(a[:, None, 2:], b[None, :, 2:])
        wh = (rb - lt).clamp(min=0)
        inter = wh[..., 0] * wh[..., 1]
        iou = inter / (area_a[:, None] + area_b[None] - inter)
        best, idx = iou.max(1)
        return iou, best, idx, (iou > 0.3).any(1)


def test_box_iou_over_dynamic_box_counts() -> None:
    torch.manual_seed(41)

    def boxes(n: int) -> torch.Tensor:
        xy = torch.rand(n, 2) * 10
        return torch.cat([xy, xy + torch.rand(n, 2) * 5 + 0.5], 1)

    spec = ({0: Dim("n", min=1, max=32)}, {0: Dim("m", min=1, max=32)})
    check_model(BoxIoU(), (boxes(5), boxes(7)), spec, others=((boxes(20), boxes(2)), (boxes(1), boxes(9))))
