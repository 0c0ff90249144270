"""Writes through masks, flat indices and views a user's model reaches for: LLaVA-style image
features placed into the token embeddings with ``masked_scatter``, graph pooling with
``index_reduce``, ``put``, slice / row / diagonal assignments (``slice_scatter``, ``copy``,
``diagonal_scatter``), the clear refusal of data-sized results (``masked_select``,
``nonzero``, ``unique``), and two small gaps found on the way (``vector_norm`` of any order,
``searchsorted`` of a number); numpy runtime against eager torch in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.export import Dim

from tests.edge.test_ops import Fn, check
from tests.edge.test_user_models_vision import check_model
from torchship.edge import ExportError, export

IMAGE_ID = 7


class TinyLlava(nn.Module):
    """Token embeddings with the image placeholder tokens replaced, in order, by projected
    vision features (transformers' ``inputs_embeds.masked_scatter(image_mask, features)``)."""

    def __init__(self, vocab: int = 16, dim: int = 8, vision: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.proj = nn.Sequential(nn.Linear(vision, dim), nn.GELU(), nn.Linear(dim, dim))
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        emb = self.embed(ids)
        features = self.proj(patches).reshape(-1, emb.shape[-1])
        mask = (ids == IMAGE_ID).unsqueeze(-1).expand_as(emb)
        return self.head(emb.masked_scatter(mask, features))


def test_llava_image_features_masked_scatter() -> None:
    torch.manual_seed(82)
    ids = torch.randint(0, IMAGE_ID, (2, 9))
    ids[0, 2:5] = IMAGE_ID
    ids[1, 0:3] = IMAGE_ID  # 6 image tokens, one 3-patch image per prompt
    other = torch.randint(0, IMAGE_ID, (2, 9))
    other[0, 6:9] = IMAGE_ID
    other[1, 1], other[1, 4], other[1, 8] = IMAGE_ID, IMAGE_ID, IMAGE_ID
    patches = torch.randn(2, 3, 6)
    check_model(TinyLlava(), (ids, patches), others=((other, torch.randn(2, 3, 6)),))


class GraphPool(nn.Module):
    """Per-graph max and mean readout of node features over a dynamic node count."""

    def __init__(self, graphs: int = 3) -> None:
        super().__init__()
        self.graphs = graphs
        self.lin = nn.Linear(5, 4)

    def forward(self, h: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.lin(h)
        empty = h.new_zeros(self.graphs, h.shape[1])
        top = empty.index_reduce(0, batch, h, "amax", include_self=False)
        mean = empty.index_reduce(0, batch, h, "mean", include_self=False)
        return top, mean


@pytest.mark.filterwarnings("ignore:index_reduce.. is in beta")
def test_graph_readout_with_index_reduce_over_dynamic_nodes() -> None:
    torch.manual_seed(83)
    nodes = Dim("nodes", min=2, max=64)
    check_model(GraphPool(), (torch.randn(7, 5), torch.tensor([0, 0, 1, 1, 1, 2, 2])), ({0: nodes}, {0: nodes}),
                others=((torch.randn(4, 5), torch.tensor([2, 0, 2, 0])),))  # graph 1 empty: stays 0


@pytest.mark.parametrize("reduce", ["prod", "mean", "amax", "amin"])
@pytest.mark.parametrize("include_self", [True, False])
def test_index_reduce(reduce: str, include_self: bool) -> None:
    idx = torch.tensor([2, 0, 2, 3])
    check(lambda x, s: x.index_reduce(1, idx, s, reduce, include_self=include_self),
          [torch.randn(3, 5), torch.randn(3, 4)])


@pytest.mark.parametrize("accumulate", [False, True])
def test_put_and_index_fill_copy(accumulate: bool) -> None:
    idx = torch.tensor([[0, -1], [5, 3]])
    check(lambda x, s: x.put(idx, s, accumulate=accumulate), [torch.randn(3, 4), torch.randn(2, 2)])
    check(lambda x, s: x.index_fill(1, torch.tensor([2, 0]), -1.5).index_copy(0, torch.tensor([1]), s),
          [torch.randn(3, 4), torch.randn(1, 4)])


def test_masked_scatter_with_a_broadcast_mask_and_integers() -> None:
    x = torch.randn(3, 4)
    check(lambda t, m, s: t.masked_scatter(m, s), [x, torch.tensor([True, False, False, True]), torch.randn(13)])
    check(lambda t, m, s: t.masked_scatter(m, s), [torch.arange(12).reshape(3, 4), x > 0, torch.arange(100, 112)])


@pytest.mark.parametrize("fn", [lambda x: x.masked_select(x > 0), lambda x: torch.nonzero(x > 0),
                                lambda x: torch.unique(x), lambda x: torch.bincount((x > 0).long().flatten())],
                         ids=["masked_select", "nonzero", "unique", "bincount"])
def test_data_sized_results_are_refused_with_what_to_do(fn) -> None:
    with pytest.raises(ExportError, match=r"length depends on the tensor's values.*torch.where"):
        export(Fn(fn), (torch.randn(3, 4),))


class Merge(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        return x.masked_scatter(mask, src)


def test_masked_scatter_over_dynamic_sizes() -> None:
    rows, n = Dim("rows", min=1, max=8), Dim("n", min=1, max=64)
    x = torch.randn(3, 4)
    prog = export(Merge(), (x, x > 0, torch.randn(20)), ({0: rows}, {0: rows}, {0: n}))
    for b, k in ((2, 9), (5, 25)):
        x, src = torch.randn(b, 4), torch.randn(k)
        np.testing.assert_array_equal(prog.run(x.numpy(), (x > 0).numpy(), src.numpy()),
                                      Merge()(x, x > 0, src).numpy())


class InPlaceWrites(nn.Module):
    """Writes into views of a fresh tensor, as user code does them: a slice assignment over a
    dynamic length, a strided one, a negative-start one, a row (``select``), and attention
    scores whose diagonal (dynamic length) is masked out and read (``diagonal().fill_``)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, t, d = a.shape
        out = torch.zeros(n, t, 2 * d)
        out[:, :, :d] = a
        out[:, :, d:] = b.relu()
        out[:, 1:, ::2] += 1.0
        out[:, -1] = 7.0
        out[..., -2:] = b[..., :2] * 3
        scores = a @ b.transpose(1, 2)  # [n, t, t]
        self_score = scores.diagonal(dim1=-2, dim2=-1).clone()
        scores.diagonal(dim1=-2, dim2=-1).fill_(-1e4)
        below = torch.diagonal(scores, -1, -2, -1)
        scores = torch.diagonal_scatter(scores, below * 2, -1, -2, -1) + scores.diagonal(1, -2, -1).sum(-1)[:, None, None]
        return out, scores.softmax(-1) + self_score[:, :, None]


def test_in_place_writes_into_slices_rows_and_diagonals() -> None:
    torch.manual_seed(84)
    t = Dim("t", min=3, max=16)
    check_model(InPlaceWrites(), (torch.randn(2, 5, 4), torch.randn(2, 5, 4)), ({1: t}, {1: t}),
                others=((torch.randn(2, 9, 4), torch.randn(2, 9, 4)),))


@pytest.mark.parametrize("offset,d1,d2", [(0, 0, 1), (1, 0, 2), (-2, 2, 1)])
def test_diagonal_scatter(offset: int, d1: int, d2: int) -> None:
    x = torch.randn(4, 3, 5)
    src = torch.diagonal(x, offset, d1, d2).clone().normal_()
    check(lambda t, s: torch.diagonal_scatter(t, s, offset, d1, d2), [x, src])
    check(lambda t, s: torch.slice_scatter(t, s[:, :2], 1, 1, 3) * 2, [x, torch.randn(4, 3, 5)])


@pytest.mark.parametrize("order", [3, 0.5, 0, float("-inf")])
def test_vector_norm_of_any_order_and_searchsorted_of_a_number(order: float) -> None:
    x = torch.randn(3, 5)
    x[0, 1] = 0.0
    check(lambda t: torch.linalg.vector_norm(t, order, dim=-1), [x], tol=1e-5)
    check(lambda t: torch.searchsorted(t[0].sort().values, 0.25, right=order == 3), [x])
