"""Activation fusion (passes/fuse.py, clamp_min/clamp_max) against torch eager in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torchship.edge import export
from torchship.edge.runtime.dims import ProgramError
from torchship.edge.runtime.registry import OPS

torch.manual_seed(0)


class Fn(torch.nn.Module):
    def __init__(self, fn, *params: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        self.params = torch.nn.ParameterList([torch.nn.Parameter(p, requires_grad=False) for p in params])

    def forward(self, *xs):
        return self.fn(*xs, *self.params)


def _run(fn, inputs, params, quantize=None):
    prog = export(Fn(fn, *params).eval(), tuple(inputs), quantize=quantize)
    ops = prog.summary()["methods"]["forward"]["ops"]
    got = prog.run(*(x.numpy() for x in inputs))
    with torch.no_grad():
        ref = Fn(fn, *(p.double() for p in params))(*(x.double() for x in inputs)).numpy()
    return ops, got, ref


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


W, B = torch.randn(7, 5), torch.randn(7)
CW, DW = torch.randn(6, 3, 3, 3), torch.randn(3, 1, 3, 3)
CASES = {
    "linear+relu": (lambda x, w, b: F.relu(F.linear(x, w, b)), [torch.randn(4, 5)], [W, B]),
    "linear+relu6": (lambda x, w: F.relu6(F.linear(x, w)), [torch.randn(4, 5) * 3], [W]),
    "linear+clamp_max": (lambda x, w, b: F.linear(x, w, b).clamp(max=0.5), [torch.randn(4, 5)], [W, B]),
    "conv+relu": (lambda x, w: F.relu(F.conv2d(x, w, padding=1)), [torch.randn(2, 3, 9, 8)], [CW]),
    "depthwise+hardtanh": (lambda x, w: F.hardtanh(F.conv2d(x, w, stride=2, padding=1, groups=3), -1.0, 2.0), [torch.randn(2, 3, 9, 8)], [DW]),
    "conv1x1+clamp_min": (lambda x, w: F.conv2d(x, w[:, :, :1, :1]).clamp(min=-0.25), [torch.randn(1, 3, 5, 5)], [CW]),
    "add+relu": (lambda x, y: F.relu(x + y), [torch.randn(3, 4), torch.randn(4)], []),
}


@pytest.mark.parametrize("name", list(CASES))
def test_activation_fused_and_exact(name: str) -> None:
    fn, inputs, params = CASES[name]
    ops, got, ref = _run(fn, inputs, params)
    assert "relu" not in ops and "clamp" not in ops, ops
    assert _rel(got, ref) <= 2e-6
    assert (got >= ref.min() - 1e-6).all()  # the clamp really applied (ref is clamped)


def test_not_fused_when_the_unclamped_value_is_read_elsewhere() -> None:
    ops, got, ref = _run(lambda x, w, b: (lambda y: F.relu(y) + y)(F.linear(x, w, b)), [torch.randn(4, 5)], [W, B])
    assert ops.get("relu") == 1, ops
    assert _rel(got, ref) <= 2e-6


def test_fused_int8_depthwise_matches_dequantized_weights() -> None:
    """Dequantized (computed, not file) depthwise weights with a fused clamp: equal to torch
    float64 run with the same int8-rounded weights (docs/edge-ops.md, Quantisation)."""
    fn = lambda x, w: F.hardtanh(F.conv2d(x, w, stride=2, padding=1, groups=32), -1.0, 2.0)  # noqa: E731
    w = torch.randn(32, 1, 3, 3)
    scale = w.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    wq = torch.round(w / scale).clamp(-127, 127) * scale
    x = torch.randn(1, 32, 9, 8)
    ops, got, _ = _run(fn, [x], [w], quantize="int8")
    assert "clamp" not in ops and ops.get("dequantize") == 1, ops
    ref = fn(x.double(), wq.double()).numpy()
    assert _rel(got, ref) <= 2e-6


def test_clamp_attributes_are_validated() -> None:
    with pytest.raises(ProgramError, match="clamp_min 1.0 > clamp_max 0.0"):
        OPS["linear"].infer([(2, 3), (4, 3)], ["F32", "F32"], {"transposed": False, "clamp_min": 1.0, "clamp_max": 0.0})
    with pytest.raises(ProgramError, match="need a float output"):
        OPS["add"].infer([(2,), (2,)], ["I64", "I64"], {"clamp_min": 0.0, "clamp_max": None})
