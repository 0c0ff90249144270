"""Fake quantisation (``torch.fake_quantize_per_tensor_affine`` with number or tensor
qparams, ``fake_quantize_per_channel_affine``) in an exported model, against torch eager:
``(clamp(round(x / s) + z, lo, hi) - z) · s``, rounding half to even like torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from torchship.edge import export


class PerTensor(nn.Module):
    def __init__(self, qparams_as_tensors: bool) -> None:
        super().__init__()
        self.register_buffer("s", torch.tensor(0.07))
        self.register_buffer("z", torch.tensor(2, dtype=torch.int32))
        self.tensors = qparams_as_tensors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tensors:
            return torch.fake_quantize_per_tensor_affine(x, self.s, self.z, -128, 127)
        return torch.fake_quantize_per_tensor_affine(x, 0.07, 2, 0, 255)


class PerChannel(nn.Module):
    def __init__(self, axis: int, channels: int) -> None:
        super().__init__()
        self.axis = axis
        self.register_buffer("s", torch.rand(channels) * 0.2 + 0.01)
        self.register_buffer("z", torch.randint(-5, 5, (channels,), dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_channel_affine(x, self.s, self.z, self.axis, -128, 127)


def _inputs(*shape: int) -> torch.Tensor:
    x = torch.randn(*shape) * 6  # beyond both clamp bounds
    x.view(-1)[:4] = torch.tensor([0.035, -0.105, 0.0, 100.0])  # exact halves round to even
    return x


@pytest.mark.parametrize("tensors", [False, True])
def test_per_tensor(tensors: bool) -> None:
    model = PerTensor(tensors).eval()
    x = _inputs(4, 9)
    np.testing.assert_array_equal(export(model, (x,)).run(x), model(x).numpy())


@pytest.mark.parametrize(("axis", "shape"), [(0, (6, 3, 3, 3)), (1, (2, 5, 7))])
def test_per_channel(axis: int, shape: tuple[int, ...]) -> None:
    torch.manual_seed(axis)
    model = PerChannel(axis, shape[axis]).eval()
    x = _inputs(*shape)
    np.testing.assert_allclose(export(model, (x,)).run(x), model(x).numpy(), rtol=0,
                               atol=1e-6)
