"""Value tests, order statistics, bucketing, sliding windows, distances and diagonals:
export + numpy runtime against torch eager in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.edge.test_ops import Fn, check
from torchship.edge import export

SPECIAL = torch.tensor([[1.5, float("nan"), float("inf"), -2.0], [float("-inf"), 0.0, -0.0, 3e38]])
X = torch.randn(3, 7)


@pytest.mark.parametrize("fn", [torch.isnan, torch.isinf, torch.isfinite, torch.isposinf,
                                torch.isneginf], ids=lambda f: f.__name__)
def test_value_tests(fn) -> None:
    check(lambda x: fn(x), [SPECIAL])
    check(lambda i: fn(i), [torch.arange(6).reshape(2, 3)])  # integers: never nan/inf


def test_nan_to_num() -> None:
    got = export(Fn(lambda x: torch.nan_to_num(x)), (SPECIAL,)).run(SPECIAL.numpy())
    np.testing.assert_array_equal(got, torch.nan_to_num(SPECIAL).numpy())
    check(lambda x: torch.nan_to_num(x, 0.5, 9.0, -9.0), [SPECIAL])


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("which", ["kthvalue", "median1", "median0"])
def test_kthvalue_and_median_values_and_indices(which: str, keepdim: bool) -> None:
    fn = {"kthvalue": lambda t: tuple(t.kthvalue(3, dim=1, keepdim=keepdim)),
          "median1": lambda t: tuple(t.median(dim=1, keepdim=keepdim)),
          "median0": lambda t: tuple(t.median(dim=0, keepdim=keepdim))}[which]
    vals, idx = export(Fn(fn), (X,)).run(X.numpy())  # distinct values: indices are unique
    ref_vals, ref_idx = fn(X.double())
    np.testing.assert_allclose(vals, ref_vals.numpy(), rtol=1e-7)
    np.testing.assert_array_equal(idx, ref_idx.numpy())
    ties = torch.tensor([[3.0, 1.0, 3.0, 1.0, 2.0, 2.0, 0.0], [0.0, 0.0, 0.0, 5.0, -1.0, 1.0, 1.0]])
    vals, _ = export(Fn(fn), (ties,)).run(ties.numpy())
    np.testing.assert_array_equal(vals, fn(ties)[0].numpy())


@pytest.mark.parametrize("right", [False, True])
def test_bucketize_and_searchsorted(right: bool) -> None:
    edges = torch.tensor([-1.0, 0.0, 0.0, 1.0])
    x = torch.tensor([[-2.0, -1.0, 0.0], [0.5, 1.0, 7.0]])
    check(lambda t: torch.bucketize(t, edges, right=right), [x])
    check(lambda t: torch.searchsorted(edges, t, right=right).to(torch.int32), [x])
    rows = torch.tensor([[[-1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 3.0, 9.0]]])  # batched (N-D) boundaries
    pts = torch.tensor([[[0.0, -5.0, 1.0], [2.0, 9.0, 2.5]]])
    check(lambda b, t: torch.searchsorted(b, t, right=right), [rows, pts])
    check(lambda b, t: torch.searchsorted(b, t, side="right" if right else "left", out_int32=True), [rows, pts])
    order = torch.tensor([[[1, 2, 3, 0], [0, 1, 3, 2]]])  # an unsorted row and the sorter that sorts it
    check(lambda b, t: torch.searchsorted(b, t, right=right, sorter=order),
          [torch.tensor([[[1.0, -1.0, 0.0, 0.0], [2.0, 2.0, 9.0, 3.0]]]), pts])


def test_tensor_unfold_windows() -> None:
    check(lambda t: t.unfold(1, 3, 2), [X])
    check(lambda t: t.unfold(0, 2, 1) * 2, [torch.randn(5, 2, 3)])


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 0.0, float("inf")])
def test_cdist(p: float) -> None:
    a, b = torch.randn(2, 4, 3), torch.randn(2, 5, 3)
    b[0, 0] = a[0, 0]  # a zero distance
    check(lambda s, t: torch.cdist(s, t, p=p), [a, b], tol=1e-5)


@pytest.mark.parametrize("offset,d1,d2", [(0, 0, 1), (1, 0, 1), (-2, 1, 2), (0, 2, 0)])
def test_diagonal(offset: int, d1: int, d2: int) -> None:
    check(lambda t: torch.diagonal(t, offset, d1, d2) * 3, [torch.randn(4, 5, 6)])
