"""Core ops through export + numpy runtime against torch eager in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torchship.edge import export
from torchship.edge.runtime.ops import erfc


class Fn(torch.nn.Module):
    def __init__(self, fn, *params: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        self.params = torch.nn.ParameterList([torch.nn.Parameter(p, requires_grad=False) for p in params])

    def forward(self, *xs):
        return self.fn(*xs, *self.params)


def check(fn, inputs, params=(), tol=2e-6) -> None:
    model = Fn(fn, *params).eval()
    prog = export(model, tuple(inputs))
    got = prog.run(*inputs)
    with torch.no_grad():
        ref64 = Fn(fn, *(p.double() for p in params))(*(x.double() if x.is_floating_point() else x for x in inputs))
    ref = ref64.numpy()
    if ref.dtype == np.float64:
        ref = ref.astype(np.float32)
        assert float(np.abs(got.astype(np.float64) - ref64.numpy()).max() / max(np.abs(ref64.numpy()).max(), 1e-30)) <= tol
    else:
        np.testing.assert_array_equal(got, ref)


torch.manual_seed(0)

CONV = [
    dict(stride=1, padding=1, dilation=1, groups=1, k=3, c=4, o=6),
    dict(stride=2, padding=0, dilation=1, groups=1, k=3, c=3, o=5),
    dict(stride=1, padding=2, dilation=2, groups=1, k=3, c=4, o=4),
    dict(stride=2, padding=1, dilation=1, groups=2, k=3, c=4, o=6),
    dict(stride=1, padding=1, dilation=1, groups=4, k=3, c=4, o=4),  # depthwise
    dict(stride=2, padding=1, dilation=1, groups=4, k=5, c=4, o=8),  # depthwise, multiplier 2
    dict(stride=1, padding=2, dilation=2, groups=4, k=3, c=4, o=4),  # depthwise, dilated
    dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=3, k=3, c=3, o=3, bias=False),  # depthwise, mixed
    dict(stride=3, padding=0, dilation=1, groups=2, k=2, c=2, o=6),  # depthwise, stride 3, multiplier 3
    dict(stride=1, padding=(1, 0), dilation=1, groups=2, k=3, c=2, o=4),  # depthwise rows path, multiplier 2
    dict(stride=1, padding=(0, 3), dilation=(1, 2), groups=3, k=3, c=3, o=3),  # depthwise rows path, dilated
    dict(stride=1, padding=0, dilation=1, groups=4, k=1, c=4, o=4),  # depthwise 1x1
    dict(stride=2, padding=0, dilation=1, groups=1, k=1, c=8, o=3),  # strided 1x1
    dict(stride=1, padding=0, dilation=1, groups=1, k=1, c=8, o=3),  # plain 1x1 (matmul path)
]


@pytest.mark.parametrize("cfg", CONV, ids=[str(i) for i in range(len(CONV))])
def test_conv2d(cfg) -> None:
    x = torch.randn(2, cfg["c"], 11, 9)
    w = torch.randn(cfg["o"], cfg["c"] // cfg["groups"], cfg["k"], cfg["k"])
    kw = {k: cfg[k] for k in ("stride", "padding", "dilation", "groups")}
    if cfg.get("bias", True):
        check(lambda x, w, b: F.conv2d(x, w, b, **kw), [x], [w, torch.randn(cfg["o"])])
    else:
        check(lambda x, w: F.conv2d(x, w, **kw), [x], [w])


@pytest.mark.parametrize("cfg", CONV, ids=[str(i) for i in range(len(CONV))])
def test_conv2d_bound_step_matches_kernel_with_computed_weights(cfg) -> None:
    """The load-time bound conv step (bound.py) against the plain kernel and torch float64, with
    writable weights changed between calls (as dequantized int8 weights are)."""
    from torchship.edge.runtime.registry import OPS, bind_step

    pair = lambda v: list(v) if isinstance(v, tuple) else [v, v]  # noqa: E731
    a = {"stride": pair(cfg["stride"]), "padding": pair(cfg["padding"]), "dilation": pair(cfg["dilation"]), "groups": cfg["groups"]}
    x = torch.randn(2, cfg["c"], 11, 9)
    w = torch.randn(cfg["o"], cfg["c"] // cfg["groups"], cfg["k"], cfg["k"])
    b = torch.randn(cfg["o"])
    xs, ws, bs = x.numpy().copy(), w.numpy().copy(), b.numpy().copy()
    ref = F.conv2d(x.double(), w.double(), b.double(), **{k: cfg[k] for k in ("stride", "padding", "dilation", "groups")})
    out, plain = np.full(tuple(ref.shape), np.nan, np.float32), np.empty(tuple(ref.shape), np.float32)
    step = bind_step(OPS["conv2d"], [xs, ws, bs], [out], a)
    for scale in (1.0, -2.0):  # the second call sees new input, weight and bias contents
        xs *= scale
        ws *= scale
        bs *= scale
        step()
        OPS["conv2d"].kernel([xs, ws, bs], [plain], a)
        want = ref.numpy() * scale * scale + b.double().numpy().reshape(1, -1, 1, 1) * (scale - scale * scale)
        assert np.abs(out - want).max() <= 2e-6 * np.abs(want).max()
        assert np.abs(plain - want).max() <= 2e-6 * np.abs(want).max()


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("mult", [1, 2])
def test_depthwise_over_several_channel_blocks(stride: int, mult: int) -> None:
    """Planes big enough that the bound depthwise step pads and convolves several channel blocks
    (bound_conv._BLOCK) one after the other, with a fused clamp: equal to torch float64."""
    from torchship.edge.runtime import bound_conv

    x = torch.randn(1, 48, 60, 57)
    assert 48 * mult * 60 * 59 > 2 * bound_conv._BLOCK
    fn = lambda x, w, b: F.hardtanh(F.conv2d(x, w, b, stride=stride, padding=1, groups=48), -1.0, 2.0)  # noqa: E731
    check(fn, [x], [torch.randn(48 * mult, 1, 3, 3), torch.randn(48 * mult)])


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_im2col_in_several_chunks(stride: int) -> None:
    """Columns bigger than one chunk (bound_conv._COLS): the bound conv builds and multiplies
    them in chunks of output rows, then adds bias and clamps: equal to torch float64."""
    from torchship.edge.runtime import bound_conv

    x = torch.randn(2, 16, 23, 21)
    assert 2 * 16 * 9 * 21 * 23 * 4 // stride**2 > 3 * bound_conv._COLS
    fn = lambda x, w, b: F.relu(F.conv2d(x, w, b, stride=stride, padding=1))  # noqa: E731
    check(fn, [x], [torch.randn(8, 16, 3, 3), torch.randn(8)])


@pytest.mark.parametrize("hi", [3.0, 40.0])
def test_gelu_over_several_blocks(hi: float) -> None:
    """The bound erf-GELU works in blocks of bound._GELU_CHUNK elements (the last one partial);
    values in [-hi, hi] (40: both tails) equal torch float64 within 1e-6 of the largest output."""
    from torchship.edge.runtime import bound

    x = torch.linspace(-hi, hi, 2 * bound._GELU_CHUNK + 123).reshape(1, -1)
    check(lambda x: F.gelu(x), [x], tol=1e-6)


def test_conv1d() -> None:
    check(lambda x, w: F.conv1d(x, w, stride=2, padding=1), [torch.randn(2, 3, 17)], [torch.randn(4, 3, 3)])


POOL = [
    lambda x: F.max_pool2d(x, 3, 2, 1),
    lambda x: F.max_pool2d(x, 2, ceil_mode=True),
    lambda x: F.max_pool2d(x, 3, 1, 1, dilation=2),
    lambda x: F.avg_pool2d(x, 3, 2, 1),
    lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
    lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True),
    lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
    lambda x: F.avg_pool2d(x, 2, divisor_override=3),
    lambda x: F.adaptive_avg_pool2d(x, (5, 3)),
    lambda x: F.adaptive_avg_pool2d(x, 1),
]


@pytest.mark.parametrize("i", range(len(POOL)))
def test_pooling(i: int) -> None:
    check(POOL[i], [torch.randn(2, 3, 11, 10)])


ELEMENTWISE = [
    lambda x: F.gelu(x),
    lambda x: F.gelu(x, approximate="tanh"),
    lambda x: torch.erf(x),
    lambda x: torch.sigmoid(x) * torch.tanh(x) + F.silu(x),
    lambda x: F.hardswish(x) + F.hardsigmoid(x) + F.relu6(x),
    lambda x: torch.rsqrt(x.abs() + 1) - torch.sqrt(x.abs()) + torch.exp(-x * x) + torch.log(x.abs() + 2),
    lambda x: torch.where(x > 0.5, x, -x) + (x <= 0).float() * 3,
    lambda x: torch.clamp(x, -0.5, 0.7) + x.clamp(min=0.1) + x.clamp(max=-0.1),
    lambda x: F.softmax(x, -1) + F.log_softmax(x, 1).exp(),
    lambda x: F.layer_norm(x, (5, 6), eps=1e-6),
    lambda x: x.mean((1, 2), keepdim=True) + x.sum(-1, keepdim=True) - x.amax(0) + x.amin(1, keepdim=True),
    lambda x: torch.cat([x[:, 1:3], x[:, -2:], x[:, :2, ::2].sum(-1, keepdim=True).expand(4, 2, 6)], 1),
    lambda x: x.transpose(0, 2).reshape(6, -1) @ x.reshape(20, 6) + x.select(1, 2).sum(),
    lambda x: torch.linalg.vector_norm(x, dim=-1) + F.normalize(x, dim=-1).sum(-1),
    lambda x: x ** 2 + 2 ** x.clamp(-3, 3) + x / 3 - 1 / (x.abs() + 1),
]


@pytest.mark.parametrize("i", range(len(ELEMENTWISE)))
def test_elementwise_reduction_shape(i: int) -> None:
    check(ELEMENTWISE[i], [torch.randn(4, 5, 6) * 2])


def test_integer_and_bool_ops() -> None:
    check(lambda x: (x * 3 - 1).argmax(-1), [torch.randn(3, 7)])
    check(lambda i: (i + 1) * 2 - i.max(), [torch.arange(12).reshape(3, 4)])


def test_sdpa_causal_and_mask() -> None:
    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))
    mask = torch.rand(5, 5) > 0.3
    mask[:, 0] = True
    check(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), [q, k, v])
    check(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m), [q, k, v, mask])


def test_erfc_relative_accuracy() -> None:
    xs = np.linspace(-6, 9, 20001)
    want = np.array([math.erfc(x) for x in xs])
    got = erfc(xs)
    assert np.max(np.abs(got - want) / want) < 2e-7


def test_gather_and_index() -> None:
    idx = torch.tensor([[0, 2, 1], [1, 1, 0]])
    check(lambda x, i: torch.gather(x, 1, i), [torch.randn(2, 4), idx])
    check(lambda x, i: torch.gather(x, 0, i), [torch.randn(3, 5), idx])
    rows, cols = torch.tensor([[0], [2]]), torch.tensor([[1, 3, -1]])
    check(lambda x, r, c: x[r, c] * 2, [torch.randn(3, 4, 2), rows, cols])


@pytest.mark.parametrize("shape", [(2, 4, 16, 16), (64, 5), (40, 32), (3, 33)])
def test_softmax_short_and_long_rows(shape: tuple[int, ...]) -> None:
    """Many short rows take the transposed-max / outer-product path, the others the plain one."""
    x = torch.randn(*shape) * 4
    x.view(-1)[:: shape[-1] + 1] = 60.0  # large logits: the max subtraction must be exact
    check(lambda x: F.softmax(x, -1), [x])
    check(lambda x, b: F.softmax(x + b, -1), [x], [torch.full((shape[-1],), -1e9).index_fill(0, torch.tensor([0]), 0.0)])


@pytest.mark.parametrize("rows", [1, 3, 32, 200])
def test_layer_norm_outer_product_scale(rows: int) -> None:
    """Layer norm scales by the outer product rstd * w (also with no weight), then a linear."""
    w, b = torch.randn(24) + 1, torch.randn(24)
    lw, lb = torch.randn(40, 24), torch.randn(40)
    check(lambda x, w, b, lw, lb: F.linear(F.layer_norm(x * 3 + 1, (24,), w, b), lw, lb), [torch.randn(rows, 24)], [w, b, lw, lb])
    check(lambda x: F.layer_norm(x, (24,)), [torch.randn(rows, 24)])


def test_permute_of_permute_is_one_permute() -> None:
    fn = lambda x: x.permute(0, 2, 1, 3).transpose(-1, -2).contiguous() * 2  # noqa: E731
    x = torch.randn(2, 5, 3, 4)
    check(fn, [x])
    assert export(Fn(fn).eval(), (x,)).summary()["methods"]["forward"]["ops"]["permute"] == 1
