"""Ops a new user's model brings beyond the zoo (activations, padding, resizing, scans,
scalar-only subgraphs), through export + numpy runtime against torch eager in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from tests.edge.test_ops import Fn, check
from torchship.edge import export
from torchship.edge.runtime.dims import ProgramError


def test_scalar_subgraph_stays_zero_dimensional() -> None:
    # lerp decomposes into a 0-d weight subgraph (|w| >= 0.5 ? w - 1 : w) that constant
    # folding evaluates: scalar constants must stay 0-d (they were 1-d, and folding failed)
    check(lambda x: torch.lerp(x, x * 2, 0.3), [torch.randn(3, 8)])
    check(lambda x: torch.lerp(x, -x, 0.7), [torch.randn(5)])


X2 = torch.randn(3, 8) * 3
X4 = torch.randn(1, 4, 6, 6)

ACTIVATIONS = {
    "leaky_relu": lambda x: F.leaky_relu(x, 0.1),
    "elu": lambda x: F.elu(x, 0.7),
    "celu": lambda x: F.celu(x, 1.5),
    "selu": F.selu,
    "softplus": F.softplus,
    "softplus_beta_threshold": lambda x: F.softplus(x, beta=2.0, threshold=3.0),
    "mish": F.mish,
    "hardshrink": lambda x: F.hardshrink(x, 0.4),
    "threshold": lambda x: F.threshold(x, 0.1, -1.0),
    "glu": lambda x: F.glu(x, -1),
    "logsumexp": lambda x: x.logsumexp(-1),
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activations_compose_from_core_ops(name: str) -> None:
    check(ACTIVATIONS[name], [X2])


def test_prelu_per_channel() -> None:
    check(lambda x, w: F.prelu(x, w), [X4], params=[torch.rand(4)])


@pytest.mark.parametrize("correction", [0, 1])
def test_var_std(correction: int) -> None:
    check(lambda x: torch.var(x, -1, correction=correction), [X2])
    check(lambda x: torch.std(x, (0, 2), keepdim=True, correction=correction), [X4[0]])
    # the two-output forms: both outputs used, with different weights
    check(lambda x: (lambda v, m: 3 * v + m)(*torch.var_mean(x, (0, 2), keepdim=True,
                                                            correction=correction)), [X4[0]])
    check(lambda x: (lambda s, m: s - 2 * m)(*torch.std_mean(x, -1, correction=correction)), [X2])


def test_one_hot_drops_its_bounds_assertion() -> None:
    # F.one_hot exports with an _assert_async on the index range: a check, not a computation
    check(lambda i: F.one_hot(i, 7).float() * 2, [torch.tensor([0, 6, 3, 3])])
    check(lambda x: x.var() + x.std(0).sum(), [X2])


LAYOUT = {
    "x[:, idx]": (lambda x: x[:, torch.tensor([0, 3, 3, 7])], X2),
    "x[..., idx, :]": (lambda x: x[:, :, torch.tensor([[5, 0], [1, 1]]), :], X4),
    "x[i, :, j]": (lambda x: x[torch.tensor([0, 2]), :, torch.tensor([1, 1])], torch.randn(3, 4, 5)),
    "index_select": (lambda x: x.index_select(1, torch.tensor([2, 0])), X4),
    "flip": (lambda x: x.flip(-1, 1), X4),
    "roll": (lambda x: x.roll((2, -1), (1, 0)), X2),
    "repeat": (lambda x: x.repeat(2, 1, 3), X2),
    "pad_constant": (lambda x: F.pad(x, (1, 2, 0, 3), value=0.5), X4),
    "pad_crop": (lambda x: F.pad(x, (-1, 2, 1, -2)), X4),
    "pad_reflect": (lambda x: F.pad(x, (1, 1, 2, 2), mode="reflect"), X4),
    "pad_replicate": (lambda x: F.pad(x, (2, 1, 1, 1), mode="replicate"), X4),
    "upsample_nearest": (lambda x: F.interpolate(x, scale_factor=2), X4),
    "upsample_bilinear": (lambda x: F.interpolate(x, size=(9, 11), mode="bilinear"), X4),
    "upsample_bilinear_corners": (
        lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True), X4),
    "pixel_shuffle": (lambda x: F.pixel_shuffle(x, 2), X4),
    "pixel_unshuffle": (lambda x: F.pixel_unshuffle(x, 2), X4),
}


@pytest.mark.parametrize("name", list(LAYOUT))
def test_indexing_padding_resizing(name: str) -> None:
    fn, x = LAYOUT[name]
    check(fn, [x])


UNARY = {
    "log1p_tiny": lambda x: torch.log1p(x * 1e-7) * 1e7,  # log(1 + x) would lose these
    "expm1_tiny": lambda x: torch.expm1(x * 1e-7) * 1e7,
    "log1p_expm1": lambda x: torch.log1p(x.abs()) + torch.expm1(x * 0.1),
    "log2": lambda x: torch.log2(x.abs() + 0.1),
    "floor_ceil_trunc": lambda x: torch.floor(x) + torch.ceil(x) * 10 + torch.trunc(x) * 100,
    "round_half_even": lambda x: torch.round(x * 2) / 2 + torch.round(torch.tensor([0.5, 1.5, 2.5, -0.5])).sum(),
    "sign": lambda x: torch.sign(x) + torch.sign(x.round()) * 0.5,
    "logsigmoid": F.logsigmoid,
    "softshrink": lambda x: F.softshrink(x, 0.5),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_math(name: str) -> None:
    check(UNARY[name], [X2])


def test_cumsum_float_int_bool() -> None:
    check(lambda x: x.cumsum(-1) + x.cumsum(0), [X2])
    check(lambda x: torch.cumsum(x, 1), [torch.randint(-9, 9, (4, 6), dtype=torch.int32)])
    check(lambda x: (x > 0).cumsum(1), [X2])
    check(lambda x: torch.arange(x.shape[1]).cumsum(0) + x.long().cumsum(1), [X2])


def _module(mod: torch.nn.Module, x: torch.Tensor) -> None:
    mod = mod.eval()
    with torch.no_grad():
        want = mod.double()(x.double()).numpy()
        prog = export(mod.float(), (x,))
    got = prog.run(x.numpy())
    assert float(np.abs(got - want).max() / np.abs(want).max()) <= 2e-6


@pytest.mark.parametrize("kw", [
    {"stride": 2, "padding": 1, "output_padding": 1},
    {"stride": 3, "padding": 0},
    {"stride": 1, "padding": 2, "dilation": 2},
    {"stride": 2, "padding": 1, "groups": 2, "bias": False},
    {"stride": (2, 1), "padding": (0, 1), "output_padding": (1, 0)},
])
def test_conv_transpose2d(kw: dict) -> None:
    torch.manual_seed(1)
    _module(nn.ConvTranspose2d(4, 6, 3, **kw), torch.randn(2, 4, 5, 7))


def test_conv_transpose1d() -> None:
    torch.manual_seed(2)
    _module(nn.ConvTranspose1d(4, 3, 4, stride=2, padding=1), torch.randn(1, 4, 9))


@pytest.mark.parametrize("mod", [nn.GroupNorm(2, 6), nn.GroupNorm(3, 6, affine=False),
                                 nn.InstanceNorm2d(6, affine=True), nn.InstanceNorm1d(6)],
                         ids=["group", "group_plain", "instance2d", "instance1d"])
def test_group_and_instance_norm(mod: nn.Module) -> None:
    torch.manual_seed(3)
    if getattr(mod, "affine", False):
        with torch.no_grad():
            mod.weight.uniform_(0.5, 2.0)
            mod.bias.uniform_(-1, 1)
    x = torch.randn(2, 6, 5, 4) * 3 + 1 if not isinstance(mod, nn.InstanceNorm1d) else torch.randn(2, 6, 9)
    _module(mod, x)


SMALL = {
    "argmin": (lambda x: x.argmin(-1), X2),
    "clamp_tensor_bounds": (lambda x: torch.clamp(x, min=x.mean(), max=x.amax(0) / 2), X2),
    "any_all": (lambda x: (x > 0).any(-1).float() + (x > -3).all().float(), X2),
    "floor_divide": (lambda x: torch.div(x, 0.3, rounding_mode="floor") + torch.div(x, 0.7, rounding_mode="trunc"), X2),
    "int_floor_divide": (lambda x: torch.div(x, 3, rounding_mode="floor"), torch.randint(-20, 20, (4, 5))),
    "remainder_fmod": (lambda x: torch.remainder(x, 0.7) + torch.fmod(x, 0.7) + x % 1.5, X2),
    "trig": (lambda x: torch.atan(x) + torch.asin(x.clamp(-1, 1)) + torch.acos(x.clamp(-0.9, 0.9))
             + torch.tan(x * 0.3) + torch.sinh(x * 0.2) + torch.cosh(x * 0.2), X2),
    "cumprod": (lambda x: (x * 0.1 + 1).cumprod(-1), X2),
    "adaptive_max_pool": (lambda x: F.adaptive_max_pool2d(x, (2, 3)) + F.adaptive_max_pool2d(x, 1), X4),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_small_compositions(name: str) -> None:
    fn, x = SMALL[name]
    check(fn, [x])


SORTS = {
    "sort": lambda x: x.sort(-1).values + x.sort(0, descending=True).indices.float(),
    "sort_stable": lambda x: torch.sort(x, dim=1, stable=True, descending=True).values,
    "argsort": lambda x: x.argsort(-1).float() + torch.argsort(x, 0, descending=True).float(),
    "topk": lambda x: x.topk(3).values.sum(-1) + x.topk(2, dim=0, largest=False).values.sum(),
    "topk_indices": lambda x: x.topk(4, -1).indices.float(),
}


@pytest.mark.parametrize("name", list(SORTS))
def test_sort_argsort_topk(name: str) -> None:
    check(SORTS[name], [torch.randn(5, 8)])  # distinct values: torch's order is unique


def test_descending_argsort_is_stable_with_ties() -> None:
    x = torch.tensor([[3.0, 1.0, 3.0, 2.0, 1.0, 3.0]])
    prog = export(Fn(lambda t: torch.argsort(t, dim=-1, descending=True, stable=True)), (x,))
    assert prog.run(x.numpy()).tolist() == [[0, 2, 5, 3, 1, 4]]
    prog = export(Fn(lambda t: torch.sort(t, dim=-1, stable=True).indices), (x,))
    assert prog.run(x.numpy()).tolist() == [[1, 4, 3, 0, 2, 5]]


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1)
        self.norm = nn.GroupNorm(1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pad(self.norm(self.up(x)), (1, 1, 2, 0), mode="reflect")
        return F.interpolate(y, scale_factor=2, mode="bilinear").flip(-1).cumsum(1)


class _PadSeq(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, 1, 2)).roll(1, 3) + F.pad(x, (1, 0, 2, 1), value=2.0)[..., :-1]


def test_new_ops_under_dynamic_dims() -> None:
    """A dynamic batch through transposed conv, group norm, padding and resizing, and a
    dynamic length padded (its concat size is a dimension expression)."""
    torch.manual_seed(5)
    dec = _Decoder().eval()
    prog = export(dec, (torch.randn(2, 4, 5, 6),), dynamic_shapes={"x": {0: Dim("b", min=1, max=8)}})
    for n in (1, 3, 8):
        x = torch.randn(n, 4, 5, 6)
        with torch.no_grad():
            want = dec.double()(x.double()).numpy()
        dec.float()
        got = prog.run(x.numpy())
        assert got.shape == want.shape and float(np.abs(got - want).max() / np.abs(want).max()) <= 2e-6
    prog = export(_PadSeq(), (torch.randn(1, 2, 10, 4),), dynamic_shapes={"x": {2: Dim("s", min=2, max=64)}})
    for n in (2, 17, 64):
        x = torch.randn(1, 2, n, 4)
        np.testing.assert_array_equal(prog.run(x.numpy()), _PadSeq()(x).numpy())


IDX = torch.tensor([[0, 2, 2], [3, 0, 3]])  # duplicate targets in both rows


@pytest.mark.parametrize("name", ["src", "value", "add", "reduce_sum", "axis0", "int"])
def test_scatter(name: str) -> None:
    x, src = torch.randn(3, 4, 5), torch.randn(3, 4, 6)
    idx3 = torch.stack([IDX, IDX.flip(1)])  # [2, 2, 3]: smaller than x outside the axis
    fns = {
        # plain scatter with duplicates is order-dependent in torch too: distinct targets here
        "src": (lambda x, s: x.scatter(2, torch.tensor([[[4, 1, 0]]]).expand(2, 3, 3), s), [x, src]),
        "value": (lambda x: x.scatter(1, idx3, -2.5), [x]),
        "add": (lambda x, s: x.scatter_add(1, idx3, s), [x, src]),
        "reduce_sum": (lambda x, s: x.scatter_reduce(1, idx3, s, "sum"), [x, src]),
        "axis0": (lambda x, s: x.scatter_add(0, torch.tensor([[2, 0, 2, 1, 1]]), s[:1, 0]), [x[:, 0], src]),
        "int": (lambda x: x.scatter_add(1, IDX, x * 3), [torch.arange(24).reshape(4, 6)]),
    }
    fn, inputs = fns[name]
    check(fn, inputs)


def test_scatter_rejects_bad_indices_at_run_time() -> None:
    prog = export(Fn(lambda x, i: x.scatter_add(1, i, x)), (torch.randn(2, 4), IDX))
    with pytest.raises(ProgramError, match=r"scatter: index out of range \[0, 4\)"):
        prog.run(np.zeros((2, 4), np.float32), np.array([[0, 4, 1], [0, 0, 0]]))


class _Spread(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.var(x, 1) + torch.std(x, (1, 2), correction=0)[:, None]


def test_var_std_over_a_dynamic_dimension() -> None:
    prog = export(_Spread(), (torch.randn(2, 9, 4),),
                  dynamic_shapes={"x": {1: Dim("seq", min=2, max=40)}})
    for n in (2, 9, 31):
        x = torch.randn(2, n, 4, dtype=torch.float64)
        ref = _Spread()(x).numpy()
        got = prog.run(x.float().numpy())
        assert np.abs(got - ref).max() <= 2e-6 * np.abs(ref).max()


def test_bilinear_layer_and_a_general_trilinear() -> None:
    torch.manual_seed(0)
    layer = nn.Bilinear(6, 5, 4).eval()
    a, b = torch.randn(3, 6), torch.randn(3, 5)
    prog = export(layer, (a, b))
    with torch.no_grad():
        ref = layer.double()(a.double(), b.double()).numpy()
    got = prog.run(a.numpy(), b.numpy())
    assert np.abs(got - ref).max() <= 2e-6 * np.abs(ref).max()
    # another expand/sum pattern goes through the broadcast product
    check(lambda x, y, z: torch.ops.aten._trilinear(x, y, z, [2], [0], [1], [1]),
          [torch.randn(3, 4), torch.randn(4, 2), torch.randn(3, 2)])
