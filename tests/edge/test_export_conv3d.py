"""3-D convolution (``nn.Conv3d`` / ``F.conv3d``, and ``ConvTranspose3d`` from the same code),
lowered to one ``conv2d``, and circular padding (``F.pad`` / ``padding_mode``): export + numpy
runtime against torch eager in float64."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from tests.edge.test_ops import check
from torchship.edge import ExportError, export

torch.manual_seed(0)

CONV3D = [
    dict(k=3),
    dict(k=(3, 2, 3), stride=2, padding=1),
    dict(k=3, stride=(1, 2, 1), padding=(2, 0, 1), dilation=(2, 1, 2), groups=2),
    dict(k=(1, 3, 3), groups=4, o=8, bias=False),  # depthwise, multiplier 2, no depth taps
    dict(k=(2, 1, 1), stride=(2, 1, 1)),  # temporal-only kernel
]


@pytest.mark.parametrize("cfg", CONV3D, ids=[str(i) for i in range(len(CONV3D))])
def test_conv3d(cfg: dict) -> None:
    k = cfg["k"] if isinstance(cfg["k"], tuple) else (cfg["k"],) * 3
    groups, out = cfg.get("groups", 1), cfg.get("o", 6)
    kw = {n: cfg[n] for n in ("stride", "padding", "dilation", "groups") if n in cfg}
    x = torch.randn(2, 4, 7, 6, 5)
    w = torch.randn(out, 4 // groups, *k)
    if cfg.get("bias", True):
        check(lambda x, w, b: F.conv3d(x, w, b, **kw), [x], [w, torch.randn(out)], tol=1e-5)
    else:
        check(lambda x, w: F.conv3d(x, w, **kw), [x], [w], tol=1e-5)


CONV_T3D = [
    dict(k=3),
    dict(k=(3, 2, 3), stride=2, padding=1, output_padding=1),
    dict(k=3, stride=(1, 2, 1), padding=(2, 0, 1), dilation=(2, 1, 2), groups=2),
]


@pytest.mark.parametrize("cfg", CONV_T3D, ids=[str(i) for i in range(len(CONV_T3D))])
def test_conv_transpose3d(cfg: dict) -> None:
    k = cfg["k"] if isinstance(cfg["k"], tuple) else (cfg["k"],) * 3
    groups = cfg.get("groups", 1)
    kw = {n: cfg[n] for n in ("stride", "padding", "dilation", "groups", "output_padding") if n in cfg}
    x = torch.randn(2, 4, 5, 4, 3)
    check(lambda x, w, b: F.conv_transpose3d(x, w, b, **kw), [x], [torch.randn(4, 6 // groups, *k), torch.randn(6)],
          tol=1e-5)


class Video(nn.Module):
    """A small 3-D conv net (video / volume): conv3d, relu, strided conv3d, transposed conv3d."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv3d(3, 8, 3, padding=1)
        self.b = nn.Conv3d(8, 8, (3, 3, 3), stride=(1, 2, 2), padding=1, groups=2)
        self.c = nn.ConvTranspose3d(8, 4, (1, 2, 2), stride=(1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def test_conv3d_module_dynamic_batch_and_depth() -> None:
    model = Video().eval()
    spec = {"x": {0: Dim("batch", max=4), 2: Dim("frames", max=12)}}
    prog = export(model, (torch.randn(2, 3, 5, 8, 8),), spec)
    ref_model = Video().double().eval()
    ref_model.load_state_dict(model.state_dict())
    for batch, frames in ((1, 1), (3, 7), (4, 12)):
        x = torch.randn(batch, 3, frames, 8, 8)
        got = prog.run(x.numpy())
        with torch.no_grad():
            ref = ref_model(x.double()).numpy()
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_conv3d_with_input_weight() -> None:
    # a weight that is a method input (not folded at export): permuted at run time
    class Fn(nn.Module):
        def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return F.conv3d(x, w, padding=1, groups=2)

    x, w = torch.randn(1, 4, 4, 5, 6), torch.randn(6, 2, 3, 3, 3)
    got = export(Fn(), (x, w)).run(x.numpy(), w.numpy())
    ref = F.conv3d(x.double(), w.double(), padding=1, groups=2).numpy()
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_conv3d_padding_modes(mode: str) -> None:
    check(lambda x, w: F.conv3d(F.pad(x, (1, 1, 2, 0, 1, 1), mode=mode), w), [torch.randn(1, 2, 4, 5, 6)],
          [torch.randn(3, 2, 3, 3, 3)], tol=1e-5)


@pytest.mark.parametrize("pad,shape", [((2, 2), (2, 3, 5)), ((1, 2, 0, 1), (1, 2, 4, 5)), ((-1, 2, 1, -1), (2, 4, 5))],
                         ids=["1d", "2d", "crop"])
def test_circular_pad(pad: tuple[int, ...], shape: tuple[int, ...]) -> None:
    check(lambda x: F.pad(x, pad, mode="circular"), [torch.randn(*shape)])


def test_circular_padding_mode_conv_and_dynamic_refusal() -> None:
    model = nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular").eval()
    x = torch.randn(1, 2, 5, 6)
    got = export(model, (x,)).run(x.numpy())
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(x.double()).numpy()
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    with pytest.raises(ExportError, match="circular padding of a dynamic dimension"):
        export(model, (x,), {"input": {3: Dim("w", min=2, max=16)}})


def test_conv_transpose3d_with_input_weight_is_refused() -> None:
    class Fn(nn.Module):
        def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return F.conv_transpose3d(x, w)

    with pytest.raises(ExportError, match="transposed convolution needs a constant weight"):
        export(Fn(), (torch.randn(1, 2, 3, 3, 3), torch.randn(2, 2, 1, 1, 1)))


class Pool3d(nn.Module):
    def __init__(self, kind: str, **kw: object) -> None:
        super().__init__()
        self.kind, self.kw = kind, kw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fn = torch.nn.functional.max_pool3d if self.kind == "max" else torch.nn.functional.avg_pool3d
        return fn(x, **self.kw)


@pytest.mark.parametrize(("kind", "kw"), [
    ("max", dict(kernel_size=2)),
    ("max", dict(kernel_size=(3, 2, 3), stride=(2, 1, 2), padding=1, dilation=(1, 2, 1))),
    ("max", dict(kernel_size=3, stride=2, ceil_mode=True)),
    ("avg", dict(kernel_size=2)),
    ("avg", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ("avg", dict(kernel_size=(2, 3, 3), stride=2, padding=(1, 1, 0), ceil_mode=True)),
])
def test_pool3d(kind: str, kw: dict) -> None:
    """Max / average pooling over (d, h, w) as two 2-D pools, against float64 eager."""
    x = torch.randn(2, 3, 7, 8, 9)
    model = Pool3d(kind, **kw).eval()
    got = export(model, (x,)).run(x)
    np.testing.assert_allclose(got, model(x.double()).numpy(), rtol=1e-5, atol=1e-6)
    if kw.get("ceil_mode"):
        return  # torch.export guards ceil-mode output sizes on the parity of a dynamic depth
    # a dynamic batch and depth
    dims = {0: Dim("n", min=1, max=4), 2: Dim("d", min=4, max=16)}
    prog = export(model, (x,), dynamic_shapes=(dims,))
    y = torch.randn(3, 3, 11, 8, 9)
    np.testing.assert_allclose(prog.run(y), model(y.double()).numpy(), rtol=1e-5, atol=1e-6)
