"""Ops a new user's model brings beyond the zoo (activations, padding, resizing, scans,
scalar-only subgraphs), through export + numpy runtime against torch eager in float64."""

from __future__ import annotations

import torch

from tests.edge.test_ops import check


def test_scalar_subgraph_stays_zero_dimensional() -> None:
    # lerp decomposes into a 0-d weight subgraph (|w| >= 0.5 ? w - 1 : w) that constant
    # folding evaluates: scalar constants must stay 0-d (they were 1-d, and folding failed)
    check(lambda x: torch.lerp(x, x * 2, 0.3), [torch.randn(3, 8)])
    check(lambda x: torch.lerp(x, -x, 0.7), [torch.randn(5)])
