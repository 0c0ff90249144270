"""Graph and point-cloud networks as a user writes them, run by the numpy runtime against
eager torch in float64: message passing with ``index_add`` / ``scatter_reduce`` (amax, mean)
over dynamic node, edge and graph counts, a GAT layer's per-node softmax over its edges, and
PointNet++ set abstraction — farthest point sampling, a ball query through ``cdist`` +
``topk`` + ``gather`` over a dynamic point count whose range crosses 25 (where torch's
``cdist`` would switch algorithm), and the reference implementation's ball query
(``idx[d2 > r²] = n`` with ``n`` a dynamic size, ``idx[mask] = first[mask]``), DGCNN's EdgeConv
(a k-nearest-neighbour graph by ``topk``, global max pooling over a dynamic point count). Also
what a DINO-v1 ``scale_factor`` position interpolation gets told."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from tests.edge.test_user_models_vision import check_model
from torchship.edge import ExportError, export

BATCH = Dim("batch", min=1, max=4)


class MessagePassing(nn.Module):
    """Edge messages from both ends and the edge weight; mean (``index_add`` / degree) plus
    max (``scatter_reduce`` amax) aggregation; a ``GRUCell`` update."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.msg, self.upd = nn.Linear(2 * d + 1, d), nn.GRUCell(d, d)

    def forward(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        m = F.relu(self.msg(torch.cat([x[src], x[dst], w[:, None]], -1)))
        total = torch.zeros_like(x).index_add_(0, dst, m)
        degree = x.new_zeros(x.shape[0]).index_add_(0, dst, torch.ones_like(w)).clamp(min=1)
        top = torch.full_like(x, -1e9).scatter_reduce(0, dst[:, None].expand_as(m), m, "amax", include_self=True)
        top = torch.where(top < -1e8, torch.zeros_like(top), top)
        return self.upd(total / degree[:, None] + top, x)


class GraphClassifier(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.inp, self.l1, self.l2, self.out = nn.Linear(4, d), MessagePassing(d), MessagePassing(d), nn.Linear(d, 2)

    def forward(self, feats: torch.Tensor, edges: torch.Tensor, w: torch.Tensor, graph_id: torch.Tensor,
                graphs: torch.Tensor) -> torch.Tensor:
        src, dst = edges[0], edges[1]
        x = self.l2(self.l1(self.inp(feats), src, dst, w), src, dst, w)
        pooled = x.new_zeros(graphs.shape[0], x.shape[1]).scatter_reduce(
            0, graph_id[:, None].expand_as(x), x, "mean", include_self=False)
        return self.out(pooled)


def test_message_passing_with_mean_max_aggregation_and_graph_pooling_over_dynamic_counts() -> None:
    torch.manual_seed(120)
    nodes, edges, graphs = Dim("nodes", min=2, max=64), Dim("edges", min=1, max=256), Dim("graphs", min=1, max=8)

    def batch(n: int, e: int, g: int) -> tuple[torch.Tensor, ...]:
        graph_id = torch.sort(torch.cat([torch.arange(g), torch.randint(0, g, (n - g,))])).values
        return torch.randn(n, 4), torch.randint(0, n, (2, e)), torch.rand(e), graph_id, torch.zeros(g)
    check_model(GraphClassifier(), batch(10, 30, 2), ({0: nodes}, {1: edges}, {0: edges}, {0: nodes}, {0: graphs}),
                others=(batch(17, 5, 3), batch(40, 200, 6)))


class GATLayer(nn.Module):
    """Graph attention with self loops: per-edge scores, a softmax over each node's incoming
    edges (``scatter_reduce`` amax, ``exp``, ``index_add``), weighted messages summed."""

    def __init__(self, d: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.h, self.d = heads, d
        self.lin = nn.Linear(4, heads * d, bias=False)
        self.att_src, self.att_dst = nn.Parameter(torch.randn(1, heads, d)), nn.Parameter(torch.randn(1, heads, d))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        src, dst = torch.cat([edge_index, torch.arange(n)[None].expand(2, n)], 1)
        hx = self.lin(x).view(n, self.h, self.d)
        score = F.leaky_relu((hx * self.att_src).sum(-1)[src] + (hx * self.att_dst).sum(-1)[dst], 0.2)
        top = torch.full((n, self.h), float("-inf"), dtype=x.dtype).scatter_reduce(
            0, dst[:, None].expand_as(score), score, "amax", include_self=True)
        e = (score - top[dst]).exp()
        alpha = e / torch.zeros(n, self.h, dtype=x.dtype).index_add(0, dst, e)[dst]
        return F.elu(torch.zeros_like(hx).index_add_(0, dst, hx[src] * alpha[..., None]).flatten(1))


def test_gat_softmax_over_incoming_edges() -> None:
    torch.manual_seed(121)
    nodes, edges = Dim("nodes", min=2, max=64), Dim("edges", min=1, max=256)
    check_model(GATLayer(), (torch.randn(10, 4), torch.randint(0, 10, (2, 30))), ({0: nodes}, {1: edges}),
                others=((torch.randn(33, 4), torch.randint(0, 33, (2, 3))),))


def farthest_points(xyz: torch.Tensor, count: int) -> torch.Tensor:
    b, n, _ = xyz.shape
    dist, far, rows, picked = torch.full((b, n), 1e10, dtype=xyz.dtype), torch.zeros(b, dtype=torch.long), torch.arange(b), []
    for _ in range(count):
        picked.append(far)
        dist = torch.minimum(dist, ((xyz - xyz[rows, far][:, None]) ** 2).sum(-1))
        far = dist.argmax(-1)
    return torch.stack(picked, 1)


class SetAbstraction(nn.Module):
    """Farthest point sampling, the ``k`` nearest points within ``radius`` of each center
    (``cdist`` + ``topk``; missing ones repeat the nearest), relative coordinates and features
    grouped by ``gather``, a shared MLP and a max over each group."""

    def __init__(self, centers: int, radius: float, k: int, cin: int, cout: int) -> None:
        super().__init__()
        self.centers, self.radius, self.k = centers, radius, k
        self.mlp = nn.Sequential(nn.Conv2d(cin + 3, cout, 1), nn.BatchNorm2d(cout), nn.ReLU(), nn.Conv2d(cout, cout, 1), nn.ReLU())

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = xyz.shape[0]
        centers = torch.gather(xyz, 1, farthest_points(xyz, self.centers)[..., None].expand(-1, -1, 3))
        d2 = torch.cdist(centers, xyz) ** 2
        d2 = torch.where(d2 > self.radius ** 2, torch.full_like(d2, 1e10), d2)
        neg, nbr = torch.topk(-d2, self.k, dim=-1)
        nbr = torch.where(neg < -1e9, nbr[..., :1].expand_as(nbr), nbr).reshape(b, -1)
        g_xyz = torch.gather(xyz, 1, nbr[..., None].expand(-1, -1, 3)).reshape(b, self.centers, self.k, 3) - centers[:, :, None]
        g_f = torch.gather(feats, 1, nbr[..., None].expand(-1, -1, feats.shape[-1])).reshape(b, self.centers, self.k, -1)
        h = self.mlp(torch.cat([g_xyz, g_f], -1).permute(0, 3, 1, 2))
        return centers, h.max(-1).values.transpose(1, 2)


class PointNet2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sa1, self.sa2 = SetAbstraction(16, 0.6, 8, 3, 16), SetAbstraction(4, 1.2, 4, 16, 32)
        self.head = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 5))

    def forward(self, xyz: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
        centers, f = self.sa1(xyz, normals)
        return self.head(self.sa2(centers, f)[1].max(1).values).log_softmax(-1)


def test_pointnet2_sampling_and_ball_query_over_a_point_count_crossing_25() -> None:
    torch.manual_seed(122)
    model = PointNet2()
    for bn in (model.sa1.mlp[1], model.sa2.mlp[1]):
        with torch.no_grad():
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
    points = Dim("points", min=16, max=256)
    check_model(model, (torch.rand(2, 64, 3), torch.randn(2, 64, 3)), ({0: BATCH, 1: points}, {0: BATCH, 1: points}),
                others=((torch.rand(3, 100, 3), torch.randn(3, 100, 3)), (torch.rand(1, 20, 3), torch.randn(1, 20, 3))))



class FeaturePropagation(nn.Module):
    """PointNet++ segmentation's upsampling: each point's 3 nearest coarse points (a ``sort`` of
    squared distances), inverse-distance weights, the coarse features gathered by batch and
    point indices, concatenated with the skip features, a shared MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv1d(8 + 4, 16, 1), nn.BatchNorm1d(16), nn.ReLU())

    def forward(self, xyz1: torch.Tensor, xyz2: torch.Tensor, points1: torch.Tensor, points2: torch.Tensor) -> torch.Tensor:
        dists, idx = ((xyz1[:, :, None] - xyz2[:, None]) ** 2).sum(-1).sort(dim=-1)
        recip = 1.0 / (dists[:, :, :3] + 1e-8)
        weight = recip / recip.sum(dim=2, keepdim=True)
        rows = torch.arange(xyz1.shape[0]).view(-1, 1, 1).repeat(1, xyz1.shape[1], 3)
        interpolated = (points2[rows, idx[:, :, :3], :] * weight[..., None]).sum(dim=2)
        return self.mlp(torch.cat([points1, interpolated], dim=-1).permute(0, 2, 1))


def test_pointnet2_feature_propagation_over_dynamic_fine_and_coarse_counts() -> None:
    torch.manual_seed(128)
    # the coarse count needs min > 3: torch.export guards that a [:3] slice of it is not the whole axis
    fine, coarse = Dim("fine", min=4, max=128), Dim("coarse", min=4, max=32)
    check_model(FeaturePropagation(), (torch.rand(2, 20, 3), torch.rand(2, 6, 3), torch.randn(2, 20, 4), torch.randn(2, 6, 8)),
                ({0: BATCH, 1: fine}, {0: BATCH, 1: coarse}, {0: BATCH, 1: fine}, {0: BATCH, 1: coarse}),
                others=((torch.rand(1, 50, 3), torch.rand(1, 9, 3), torch.randn(1, 50, 4), torch.randn(1, 9, 8)),))

class ReferenceBallQuery(nn.Module):
    """PointNet++'s widely copied PyTorch ball query, as written there."""

    def forward(self, xyz: torch.Tensor, new_xyz: torch.Tensor) -> torch.Tensor:
        radius, nsample = 0.5, 4
        b, n, _ = xyz.shape
        s = new_xyz.shape[1]
        group_idx = torch.arange(n, dtype=torch.long).view(1, 1, n).repeat([b, s, 1])
        sqrdists = (-2 * torch.matmul(new_xyz, xyz.permute(0, 2, 1)) + (new_xyz ** 2).sum(-1)[..., None]
                    + (xyz ** 2).sum(-1)[:, None])
        group_idx[sqrdists > radius ** 2] = n
        group_idx = group_idx.sort(dim=-1)[0][:, :, :nsample]
        group_first = group_idx[:, :, 0].view(b, s, 1).repeat([1, 1, nsample])
        mask = group_idx == n
        group_idx[mask] = group_first[mask]
        return group_idx


def test_reference_ball_query_writes_a_dynamic_size_and_a_masked_copy() -> None:
    torch.manual_seed(123)
    points = Dim("points", min=8, max=64)
    check_model(ReferenceBallQuery(), (torch.rand(2, 20, 3), torch.rand(2, 5, 3)), ({0: BATCH, 1: points}, {0: BATCH}),
                others=((torch.rand(1, 33, 3), torch.rand(1, 5, 3)), (torch.rand(3, 8, 3) * 4, torch.rand(3, 5, 3))))


class MaskedCopies(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x.clone(), x.clone()
        mask = y.sum(-1) > 0
        a[mask] = y[mask]  # one row of the last axis per True entry
        b.index_put_((mask,), z[mask], accumulate=True)  # z broadcast along the last axis
        return a, b


def test_masked_copy_over_leading_axes_and_accumulating() -> None:
    torch.manual_seed(124)
    rows = Dim("rows", min=1, max=32)
    check_model(MaskedCopies(), (torch.randn(2, 5, 3), torch.randn(2, 5, 3), torch.randn(2, 5, 1)),
                ({1: rows}, {1: rows}, {1: rows}), others=((torch.randn(2, 9, 3), torch.randn(2, 9, 3), torch.randn(2, 9, 1)),))


class MaskedReadElsewhere(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        picked = y[y > 0]
        x[y > 0] = picked
        return x + picked.sum()


class MaskedReadCounted(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        picked = y[y > 0]
        x[y > 0] = picked
        return x * picked.shape[0]


@pytest.mark.parametrize("model", [MaskedReadElsewhere(), MaskedReadCounted()])
def test_a_masked_read_used_elsewhere_is_still_refused(model: nn.Module) -> None:
    with pytest.raises(ExportError, match="boolean-mask indexing has a data-dependent shape"):
        export(model, (torch.randn(4), torch.randn(4)))


class DinoV1Positions(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos, self.embed = nn.Parameter(torch.randn(1, 16, 8)), nn.Conv2d(3, 8, 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0, w0 = x.shape[2] // 4 + 0.1, x.shape[3] // 4 + 0.1
        pos = F.interpolate(self.pos.reshape(1, 4, 4, 8).permute(0, 3, 1, 2),
                            scale_factor=(h0 / math.sqrt(16), w0 / math.sqrt(16)), mode="bicubic")
        return self.embed(x).flatten(2).transpose(1, 2) + pos.permute(0, 2, 3, 1).view(1, -1, 8)


def test_scale_factor_from_a_dynamic_size_is_refused_with_the_size_form() -> None:
    h, w = Dim("h", min=1, max=8), Dim("w", min=1, max=8)
    with pytest.raises(ExportError, match=r"F\.interpolate\(pos, size=\(h, w\)\)"):
        export(DinoV1Positions(), (torch.randn(2, 3, 24, 20),), ({2: 4 * h, 3: 4 * w},))


class FullOfASize(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full((2, x.shape[1]), x.shape[1]) + x, torch.full((3,), x.shape[1] * 2, dtype=torch.long)


def test_full_with_a_dynamic_size_as_its_value() -> None:
    check_model(FullOfASize(), (torch.randn(2, 5),), ({1: Dim("n", min=1, max=9)},), others=((torch.randn(2, 7),),))


def knn_features(x: torch.Tensor, k: int) -> torch.Tensor:
    """DGCNN's edge features ``[x_j - x_i, x_i]`` of each point's ``k`` nearest neighbours."""
    b, c, n = x.shape
    pairwise = -(x ** 2).sum(1, keepdim=True) + 2 * x.transpose(2, 1) @ x - (x ** 2).sum(1, keepdim=True).transpose(2, 1)
    idx = (pairwise.topk(k=k, dim=-1)[1] + torch.arange(0, b).view(-1, 1, 1) * n).view(-1)
    x = x.transpose(2, 1).contiguous()
    neighbours = x.view(b * n, -1)[idx, :].view(b, n, k, c)
    x = x.view(b, n, 1, c).repeat(1, 1, k, 1)
    return torch.cat((neighbours - x, x), dim=3).permute(0, 3, 1, 2).contiguous()


class DGCNN(nn.Module):
    def __init__(self, k: int = 4) -> None:
        super().__init__()
        self.k = k
        self.e1 = nn.Sequential(nn.Conv2d(6, 16, 1, bias=False), nn.BatchNorm2d(16), nn.LeakyReLU(0.2))
        self.e2 = nn.Sequential(nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16), nn.LeakyReLU(0.2))
        self.mix = nn.Sequential(nn.Conv1d(32, 32, 1, bias=False), nn.BatchNorm1d(32), nn.LeakyReLU(0.2))
        self.head = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.e1(knn_features(x, self.k)).max(dim=-1)[0]
        x2 = self.e2(knn_features(x1, self.k)).max(dim=-1)[0]
        x = self.mix(torch.cat((x1, x2), dim=1))
        pooled = (F.adaptive_max_pool1d(x, 1).view(x.shape[0], -1), F.adaptive_avg_pool1d(x, 1).view(x.shape[0], -1))
        return self.head(torch.cat(pooled, 1))


def test_dgcnn_knn_graph_and_global_max_pooling_over_a_dynamic_point_count() -> None:
    torch.manual_seed(125)
    check_model(DGCNN(), (torch.randn(2, 3, 20),), ({0: BATCH, 2: Dim("points", min=8, max=128)},),
                others=((torch.randn(3, 3, 50),),))


class AdaptiveMax(nn.Module):
    def __init__(self, size: tuple[int | None, int | None]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_max_pool2d(x, self.size)


@pytest.mark.parametrize("size", [(1, 1), (2, 1), (None, 1), (4, 1)])
def test_adaptive_max_pool_of_a_dynamic_width(size: tuple[int | None, int | None]) -> None:
    torch.manual_seed(126)
    check_model(AdaptiveMax(size), (torch.randn(2, 3, 6, 5),), ({3: Dim("w", min=1, max=40)},),
                others=((torch.randn(2, 3, 6, 17),),))


def test_adaptive_max_pool_of_a_dynamic_width_to_another_size_is_refused() -> None:
    with pytest.raises(ExportError, match="pooled to 1"):
        export(AdaptiveMax((2, 3)), (torch.randn(2, 3, 6, 5),), ({3: Dim("w", min=1, max=40)},))


class SparseAdjacency(nn.Module):
    def __init__(self, index_add: bool) -> None:
        super().__init__()
        self.index_add, self.lin = index_add, nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        h, (row, col) = self.lin(x), edge_index
        if self.index_add:  # what the refusal says to write
            return torch.zeros_like(h).index_add_(0, row, w[:, None] * h[col])
        return torch.sparse.mm(torch.sparse_coo_tensor(edge_index, w, (x.shape[0], x.shape[0])), h)


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
def test_a_sparse_adjacency_is_refused_with_the_index_add_form_which_matches_it() -> None:
    torch.manual_seed(127)
    sparse, summed = SparseAdjacency(False), SparseAdjacency(True)
    summed.load_state_dict(sparse.state_dict())
    x, edge_index, w = torch.randn(5, 4), torch.randint(0, 5, (2, 7)), torch.rand(7)
    with pytest.raises(ExportError, match=r"sparse tensors .*index_add_\(0, row, w\[:, None\] \* h\[col\]\)"):
        export(sparse, (x, edge_index, w))
    edges = Dim("edges", min=1, max=64)
    prog = check_model(summed, (x, edge_index, w), ({0: Dim("nodes", min=1, max=16)}, {1: edges}, {0: edges}))
    with torch.no_grad():
        ref = sparse.double()(x.double(), edge_index, w.double()).numpy()
    got = prog.run(x.numpy(), edge_index.numpy(), w.numpy())
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
