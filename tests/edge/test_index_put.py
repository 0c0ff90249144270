"""Writing through an index (``x[i] = v``, ``x[:, i] += v``, ``x[mask] = v``, ``index_add``):
export + numpy runtime against torch eager in float64."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tests.edge.test_ops import Fn, check
from torchship.edge import ExportError, export

X3 = torch.randn(4, 5, 6)


def _put(index, value, accumulate=False):
    def fn(x, *tensors):
        y = x.clone()
        v = tensors[0] if tensors else value
        if accumulate:
            y[index] += v
        else:
            y[index] = v
        return y

    return fn


I = torch.tensor([2, 0, -1])  # noqa: E741 - a negative entry counts from the end
J = torch.tensor([[1, 3, 3]])  # broadcasts against I: shape [1, 3]

CASES = {
    "rows_scalar": (_put((I,), 0.5), [X3]),
    "middle_axis_tensor": (_put((slice(None), I), None), [X3, torch.randn(4, 3, 6)]),
    "adjacent_pair": (_put((slice(None), J, I), None), [X3, torch.randn(4, 1, 3)]),
    "apart_pair_front": (_put((J, slice(None), I), None), [X3, torch.randn(1, 3, 5)]),
    "accumulate_broadcast": (_put((I,), None, accumulate=True), [X3, torch.randn(6)]),
    "int_tensor": (_put((slice(None), torch.tensor([0, 3])), 7), [torch.arange(20).reshape(4, 5)]),
    "mask": (lambda x: _put((x > 0.3,), -1.0)(x), [X3]),
    "mask_leading": (lambda x: _put((x[:, :, 0] > 0,), 2.0)(x), [X3]),
    "mask_accumulate": (lambda x: x.index_put((x[:, :, 0] > 0,), torch.full((), 2.0, dtype=x.dtype), accumulate=True),
                        [X3]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_index_put(name: str) -> None:
    fn, inputs = CASES[name]
    check(fn, inputs)


def test_index_put_accumulate_sums_duplicates() -> None:
    dup = torch.tensor([1, 3, 1, 1])
    check(lambda x, v: x.index_put((dup,), v, accumulate=True), [X3[0], torch.randn(4, 6)])
    check(lambda x, s: x.index_add(1, dup, s, alpha=0.5), [X3, torch.randn(4, 4, 6)])


def test_index_put_refusals_name_what_to_do() -> None:
    with pytest.raises(ExportError, match="torch.where"):
        export(Fn(_put((X3 > 0,), None)), (X3, torch.randn(int((X3 > 0).sum()))))


class _Bag(torch.nn.Module):
    def __init__(self, **kw) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.bag = torch.nn.EmbeddingBag(20, 6, **kw)

    def forward(self, *a):
        return self.bag(*a)


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_embedding_bag(mode: str) -> None:
    ids = torch.tensor([3, 7, 7, 0, 19, 5, 2])
    offsets = torch.tensor([0, 2, 2, 6])  # bag 1 is empty
    cases = [
        (_Bag(mode=mode), (torch.randint(0, 20, (3, 4)),)),
        (_Bag(mode=mode), (ids, offsets)),
        (_Bag(mode=mode, padding_idx=7), (ids, offsets)),
        (_Bag(mode=mode, include_last_offset=True), (ids, torch.tensor([0, 3, 7]))),
    ]
    if mode == "sum":
        cases.append((_Bag(mode=mode), (ids, offsets, torch.rand(7))))
    for model, inputs in cases:
        got = export(model, inputs).run(*inputs)
        with torch.no_grad():
            ref = copy.deepcopy(model).double()(
                *(a.double() if a.is_floating_point() else a for a in inputs)).numpy()
        assert np.abs(got - ref).max() <= 1e-6 * max(1.0, np.abs(ref).max())

