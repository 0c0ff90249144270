"""``scatter_reduce`` with prod / mean / amax / amin (``include_self`` either way), ``scatter``
with ``reduce=``, and ``EmbeddingBag(mode="max")``: export + numpy runtime against torch eager
in float64, and the core ``scatter``'s ``reduce`` attribute's load-time rules."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.export import Dim

from tests.edge.test_ops import Fn, check
from torchship.edge import ExportError, export
from torchship.edge.runtime import scan  # noqa: F401  (registers scatter)
from torchship.edge.runtime.dims import ProgramError
from torchship.edge.runtime.registry import OPS, validate_attrs

torch.manual_seed(0)
IDX = torch.tensor([[0, 2, 2, 1], [3, 0, 3, 3]])  # duplicate targets in both rows; column 4 untouched


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("reduce", ["sum", "prod", "mean", "amax", "amin"])
def test_scatter_reduce_float(reduce: str, include_self: bool) -> None:
    x, src = torch.randn(2, 5), torch.randn(3, 6)  # src larger than the index
    check(lambda x, s: x.scatter_reduce(1, IDX, s, reduce, include_self=include_self), [x, src])
    # along axis 0 of a 3-D tensor, an index smaller than x outside the axis
    idx3 = torch.randint(0, 3, (4, 2, 3))
    check(lambda x, s: x.scatter_reduce(0, idx3, s, reduce, include_self=include_self),
          [torch.randn(3, 3, 4), torch.randn(4, 2, 3)])


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("reduce", ["sum", "prod", "amax", "amin"])
def test_scatter_reduce_int(reduce: str, include_self: bool) -> None:
    x = torch.randint(-9, 9, (2, 5))
    check(lambda x: x.scatter_reduce(1, IDX, x[:, :4] * 3 - 1, reduce, include_self=include_self), [x])


@pytest.mark.parametrize("reduce", ["amax", "amin", "prod"])
def test_scatter_reduce_nan_propagates_like_torch(reduce: str) -> None:
    src = torch.randn(2, 4)
    src[0, 1] = float("nan")
    model = Fn(lambda x, s: x.scatter_reduce(1, IDX, s, reduce)).eval()
    got = export(model, (torch.randn(2, 5), src)).run(np.ones((2, 5), np.float32), src.numpy())
    ref = torch.ones(2, 5).scatter_reduce(1, IDX, src, reduce).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6)


@pytest.mark.filterwarnings("ignore:The reduce argument of torch.scatter")
@pytest.mark.parametrize("reduce", ["add", "multiply"])
def test_scatter_with_reduce_argument(reduce: str) -> None:
    check(lambda x, s: x.scatter(1, IDX, s, reduce=reduce), [torch.randn(2, 5), torch.randn(2, 4)])
    check(lambda x: x.scatter(1, IDX, 1.5, reduce=reduce), [torch.randn(2, 5)])


def test_scatter_reduce_dynamic_batch() -> None:
    model = Fn(lambda x, i, s: x.scatter_reduce(1, i, s, "amax", include_self=False)).eval()
    batch = Dim("batch", max=8)
    spec = (({0: batch}, {0: batch}, {0: batch}),)  # Fn.forward(*xs)
    prog = export(model, (torch.randn(3, 5), torch.randint(0, 5, (3, 4)), torch.randn(3, 4)), spec)
    for n in (1, 6):
        x, i, s = torch.randn(n, 5), torch.randint(0, 5, (n, 4)), torch.randn(n, 4)
        ref = x.double().scatter_reduce(1, i, s.double(), "amax", include_self=False).numpy()
        np.testing.assert_allclose(prog.run(x.numpy(), i.numpy(), s.numpy()), ref, rtol=1e-6)


class _Bag(nn.Module):
    def __init__(self, **kw: object) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(20, 6, **kw)

    def forward(self, *a: torch.Tensor) -> torch.Tensor:
        return self.bag(*a)


def test_embedding_bag_max() -> None:
    ids = torch.tensor([3, 7, 7, 0, 19, 5, 2, 7])
    offsets = torch.tensor([0, 2, 2, 6, 7])  # bag 1 empty, bag 4 only the padding index 7
    cases = [
        (_Bag(mode="max"), (torch.randint(0, 20, (3, 4)),)),
        (_Bag(mode="max"), (ids, offsets)),
        (_Bag(mode="max", padding_idx=7), (ids, offsets)),
        (_Bag(mode="max", include_last_offset=True), (ids, torch.tensor([0, 3, 8]))),
    ]
    for model, inputs in cases:
        model.eval()
        got = export(model, inputs).run(*inputs)
        with torch.no_grad():
            ref = copy.deepcopy(model).double()(*inputs).numpy()
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-6 * max(1.0, np.abs(ref).max())


def test_refusals() -> None:
    with pytest.raises(ExportError, match="reduce='mean'\\) on an integer tensor"):
        export(Fn(lambda x: x.scatter_reduce(1, IDX, x[:, :4], "mean")), (torch.randint(0, 9, (2, 5)),))
    # the core op: a reduction needs accumulate, and only the four listed ones exist
    with pytest.raises(ProgramError, match="reduce='amax' needs accumulate"):
        OPS["scatter"].infer([(2, 5), (2, 4), (2, 4)], ["F32", "I64", "F32"], {"axis": 1, "reduce": "amax"})
    with pytest.raises(ProgramError):
        validate_attrs(OPS["scatter"], {"axis": 1, "accumulate": True, "reduce": "mean"}, {}, "test")
