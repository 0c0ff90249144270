"""Ops a new user's own model reaches for (einsum attention, pairwise distances, one-hot,
top-k routing, masks from comparisons, integer arithmetic, bool outputs), exported with dynamic
dims and run by the numpy runtime against eager torch in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from tests.edge.test_ops import Fn
from tests.edge.test_user_models_vision import check_model
from torchship.edge import ExportError, export
from torchship.edge.runtime import ProgramError

BATCH = Dim("batch", min=1, max=8)
SEQ = Dim("seq", min=2, max=24)


class EinsumAttention(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).unbind(2)
        s = torch.einsum("bqhd,bkhd->bhqk", q, k) * (c // self.heads) ** -0.5
        s = s.masked_fill(pad[:, None, None, :] == 0, torch.finfo(s.dtype).min)
        y = torch.einsum("bhqk,bkhd->bqhd", s.softmax(-1), v)
        return self.out(y.reshape(b, n, c))


def test_einsum_attention_with_a_padding_mask() -> None:
    torch.manual_seed(20)
    pad = torch.ones(2, 9, dtype=torch.long)
    pad[1, 5:] = 0
    pad2 = torch.ones(3, 4, dtype=torch.long)
    pad2[0, 2:] = 0
    check_model(EinsumAttention(), (torch.randn(2, 9, 16), pad), ({0: BATCH, 1: SEQ}, {0: BATCH, 1: SEQ}),
                others=((torch.randn(3, 4, 16), pad2),))


class Prototypes(nn.Module):
    """Metric-learning head: normalised embeddings, distances to class prototypes, predictions."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.protos = nn.Parameter(torch.randn(5, 8))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        e = F.normalize(self.embed(x), dim=-1)
        d = torch.cdist(e, F.normalize(self.protos, p=2, dim=1))
        sq = ((e[:, None, :] - e[None, :, :]) ** 2).sum(-1)  # pairwise squared distances
        pred = (-d).argmax(-1)
        close = d < 1.0  # a bool output
        return d, sq, pred, F.one_hot(pred, 5), close


def test_normalize_cdist_argmax_one_hot_bool_outputs() -> None:
    torch.manual_seed(21)
    check_model(Prototypes(), (torch.randn(7, 6),), ({0: BATCH},), others=((torch.randn(2, 6),),))


class TopKRouter(nn.Module):
    """Mixture-of-experts routing: top-k experts per token, gather their gates, scatter the
    weights back into a dense [tokens, experts] combine matrix."""

    def __init__(self, dim: int = 8, experts: int = 4, k: int = 2) -> None:
        super().__init__()
        self.k = k
        self.gate = nn.Linear(dim, experts, bias=False)
        self.experts = nn.ModuleList(nn.Linear(dim, dim) for _ in range(experts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.gate(x)
        vals, idx = torch.topk(logits, self.k, dim=-1)
        gates = torch.softmax(torch.gather(logits, 1, idx), dim=-1) + 0 * vals
        combine = torch.zeros_like(logits).scatter(1, idx, gates)
        outs = torch.stack([e(x) for e in self.experts], dim=1)  # [tokens, experts, dim]
        y = (combine[:, :, None] * outs).sum(1)
        load = torch.zeros(logits.shape[1], dtype=torch.long).scatter_add(0, idx.flatten(), torch.ones_like(idx.flatten()))
        return y, idx, load


def test_top_k_router() -> None:
    torch.manual_seed(22)
    check_model(TopKRouter(), (torch.randn(6, 8),), ({0: BATCH},), others=((torch.randn(3, 8),),))


class Misc(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("edges", torch.tensor([-1.0, -0.25, 0.0, 0.5, 2.0]))

    def forward(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        w = torch.where(x > 0, x, 0.1)  # where with a scalar
        w2 = torch.where(x.abs() > 1, 1.0, -1.0)  # with two scalars
        c = torch.clamp(x, min=lo, max=hi)  # tensor bounds
        positions = torch.cumsum(ids != 0, dim=1) * (ids != 0)  # positions skipping padding
        rep = torch.repeat_interleave(x, 2, dim=1)
        buckets = torch.bucketize(x, self.edges)
        sorted_pos = torch.searchsorted(self.edges, x.contiguous(), right=True)
        r = torch.round(x * 3) / 3
        fd = ids // 3  # floor divide on integers
        fdn = torch.div(ids - 5, 2, rounding_mode="floor")
        rem = (ids - 5) % 4
        return w, w2, c, positions, rep, buckets, sorted_pos, r, fd, fdn, rem, (ids > 2) & (x > 0)


def test_where_clamp_cumsum_repeat_interleave_bucketize_integer_division() -> None:
    torch.manual_seed(23)

    def inputs(b: int, n: int) -> tuple[torch.Tensor, ...]:
        ids = torch.randint(0, 9, (b, n))
        ids[0, -2:] = 0
        return torch.randn(b, n) * 2, torch.full((b, n), -0.5), torch.rand(b, n) + 0.2, ids

    spec = ({0: BATCH, 1: SEQ},) * 4
    check_model(Misc(), inputs(3, 7), spec, others=(inputs(1, 12), inputs(5, 2)))


class RepeatInterleaveTensor(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # grouped-query attention's repeat of key/value heads
        return torch.repeat_interleave(x, 3, dim=1) + torch.arange(x.shape[1] * 3)[None, :, None]


def test_repeat_interleave_of_heads() -> None:
    check_model(RepeatInterleaveTensor(), (torch.randn(2, 4, 5),), ({0: BATCH, 2: SEQ},), others=((torch.randn(1, 4, 3),),))


@pytest.mark.parametrize("largest", [True, False])
def test_topk_values_and_indices_as_outputs(largest: bool) -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            v, i = x.topk(3, dim=-1, largest=largest)
            return v, i, x.argmax(-1, keepdim=True)

    check_model(M(), (torch.randn(4, 10),), ({0: BATCH},), others=((torch.randn(2, 10),),))


class IntegerMath(nn.Module):
    """Hashing / bucketing arithmetic on integer ids."""

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = (ids * 31 + 7) ** 2 % 1009  # integer pow (was written as a float pow the loader refused)
        shifted = (ids >> 1) + (ids << 3) + ((ids - 6) >> 2) + torch.bitwise_left_shift(ids.int(), 2)
        return h, torch.pow(2, ids % 10), shifted, torch.bitwise_right_shift(ids, 3)


def test_integer_pow_and_shifts() -> None:
    torch.manual_seed(24)
    check_model(IntegerMath(), (torch.randint(-50, 50, (3, 7)),), ({0: BATCH, 1: SEQ},),
                others=((torch.randint(-1000, 1000, (5, 2)),),))


def test_shift_by_a_tensor_is_refused_by_name() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x >> x  # the model's line, named in the error

    with pytest.raises(ExportError, match=r"shifting by a tensor .* shift by a Python int(.|\n)*test_user_models_ops.py:"):
        export(M(), (torch.randint(0, 4, (3,)),))


class StaticTables(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r, c = torch.triu_indices(5, 5, offset=1)
        upper = x[:, r, c]  # the strictly upper triangle of each [5, 5] matrix
        steps = torch.arange(0.0, 1.0, 0.25) + torch.arange(-1, 1, 0.5, dtype=torch.float64).float()
        lower = x[:, torch.tril_indices(5, 5)[0], torch.tril_indices(5, 5)[1]]
        return upper * steps.sum(), lower


def test_triu_indices_and_float_arange_are_constants() -> None:
    torch.manual_seed(25)
    check_model(StaticTables(), (torch.randn(2, 5, 5),), ({0: BATCH},), others=((torch.randn(4, 5, 5),),))


class BidirectionalSum(nn.Module):
    """A reverse-time pass over a dynamic length (flip along the sequence)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        back = torch.cumsum(x.flip(1), dim=1).flip(1)  # suffix sums
        return torch.cumsum(x, dim=1) + back + x.flip(0, 2)


def test_flip_along_a_dynamic_length() -> None:
    torch.manual_seed(26)
    check_model(BidirectionalSum(), (torch.randn(2, 5, 3),), ({0: BATCH, 1: SEQ},),
                others=((torch.randn(1, 17, 3),), (torch.randn(4, 2, 3),)))


class RollAndPool(nn.Module):
    def forward(self, x: torch.Tensor, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # rolls along a dynamic length (shifts of either sign, one longer than the length)
        r = torch.roll(x, 2, 1) + torch.roll(x, (-3, 1), (1, 2)) + torch.roll(x, 30, 1)
        # adaptive max pooling to sizes that do not divide the input (uneven windows)
        p = F.adaptive_max_pool2d(img, (3, 4)) + F.adaptive_max_pool2d(img, (7, 5))[:, :, 1:4, :4]
        return r, p


def test_roll_along_a_dynamic_length_and_uneven_adaptive_max_pool() -> None:
    torch.manual_seed(27)
    spec = ({0: BATCH, 1: SEQ}, {0: BATCH})
    check_model(RollAndPool(), (torch.randn(2, 5, 3), torch.randn(2, 3, 10, 10)), spec,
                others=((torch.randn(3, 17, 3), torch.randn(3, 3, 10, 10)), (torch.randn(1, 2, 3), torch.randn(1, 3, 10, 10))))


class Lookups(nn.Module):
    def forward(self, edges: torch.Tensor, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        per_row = torch.searchsorted(edges[0], x)  # 1-D boundaries (N-D ones are refused)
        right = torch.searchsorted(edges[-1], x, side="right")
        flat = (x.argmax(), x.argmin(), x.max())  # over the flattened tensor
        clipped = ids.clamp(1.5, 6.5)  # integers clamped by floats: a float result
        flags = ((ids > 3) ^ (ids < 6), torch.logical_xor(ids, ids > 4), (ids > 2) ^ True)
        return (per_row, right, *flat, clipped, *flags)


def test_searchsorted_flat_argmax_int_clamp_and_bool_xor() -> None:
    torch.manual_seed(28)

    def inputs(b: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        edges = torch.sort(torch.randn(b, 6), -1)[0]
        x = torch.cat([torch.randn(b, n), edges[:, :2]], 1)  # ties with boundaries too
        return edges, x, torch.randint(0, 9, (b, n + 2))

    spec = ({0: BATCH}, {0: BATCH, 1: SEQ}, {0: BATCH, 1: SEQ})
    check_model(Lookups(), inputs(3, 5), spec, others=(inputs(1, 12),))


def test_refusals_name_the_construct_and_the_line() -> None:
    class Cond(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cond(x.sum() > 0, lambda t: t * 2, lambda t: t - 1, (x,))  # the model's line, named in the error

    with pytest.raises(ExportError, match=r"control flow \(torch.cond(.|\n)*torch.where(.|\n)*test_user_models_ops.py:"):
        export(Cond(), (torch.randn(3),))

    class Xor(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x ^ 3  # the model's line, named in the error

    with pytest.raises(ExportError, match=r"bitwise xor of integers(.|\n)*test_user_models_ops.py:"):
        export(Xor(), (torch.randint(0, 4, (3,)),))


def test_state_in_buffers_is_refused_and_input_writes_are_dropped() -> None:
    class StaticCache(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("k_cache", torch.zeros(1, 8, 4))

        def forward(self, k: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
            self.k_cache[:, pos] = k  # ExecuTorch-style mutable KV cache
            return self.k_cache.sum(1)

    with pytest.raises(ExportError, match=r"writes into its buffer 'k_cache'(.|\n)*keeps no state(.|\n)*Pass that tensor as an input"):
        export(StaticCache(), (torch.randn(1, 1, 4), torch.tensor([0])))

    class InPlace(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x.mul_(2)  # writes into the caller's tensor; the program returns the right value
            return x + 1

    check_model(InPlace(), (torch.randn(2, 3),), ({0: BATCH},), others=((torch.randn(5, 3),),))


class GaussianCopula(nn.Module):
    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return math.sqrt(2) * torch.erfinv(2 * u - 1)  # uniform -> standard normal


def test_erfinv_elementwise_accuracy_and_edges() -> None:
    x = torch.cat([torch.linspace(-1, 1, 2001), torch.tensor([1e-30, -1e-7, 1 - 6e-8, -1 + 1e-7, 1.5, -2.0])])
    got = export(Fn(torch.erfinv), (x,)).run(x.numpy())
    ref = torch.erfinv(x.double()).numpy()
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))  # |x| > 1
    np.testing.assert_array_equal(got[np.isinf(ref)], ref[np.isinf(ref)])  # x = ±1
    rel = np.abs(got[finite] - ref[finite]) / np.maximum(np.abs(ref[finite]), 1e-38)
    assert rel.max() <= 4e-7, rel.max()  # elementwise, a few float32 ulp
    u = torch.rand(3, 50) * 0.998 + 0.001
    check_model(GaussianCopula(), (u,), ({0: BATCH},), others=((torch.rand(5, 50) * 0.998 + 0.001,),))


def test_derived_input_dims_two_n_plus_one() -> None:
    class Halve(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(2, 3, 3, stride=2)  # 2n + 1 samples -> n outputs

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    n = Dim("n", min=2, max=20)
    torch.manual_seed(29)
    prog = check_model(Halve(), (torch.randn(1, 2, 11),), ({2: 2 * n + 1},), others=((torch.randn(1, 2, 41),), (torch.randn(1, 2, 5),)))
    header = prog.header()["methods"]["forward"]
    assert header["symbols"] == {"n": {"min": 2, "max": 20}}
    assert header["values"][header["inputs"][0]]["shape"][2] in (["+", 1, ["*", 2, "n"]], ["+", ["*", 2, "n"], 1])
    with pytest.raises(ProgramError, match=r"dim 2 = 12 is not of the exported form"):
        prog.run(np.zeros((1, 2, 12), np.float32))


def test_random_sampling_and_item_are_refused_with_what_to_write() -> None:
    class Reparam(nn.Module):
        def forward(self, mu: torch.Tensor) -> torch.Tensor:
            return mu + torch.randn_like(mu)  # the model's line, named in the error

    with pytest.raises(ExportError, match=r"random sampling \(aten.randn_like(.|\n)*Pass the noise as an input(.|\n)*test_user_models_ops.py:"):
        export(Reparam(), (torch.randn(2, 3),))

    class Item(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * x.max().item()  # the model's line, named in the error

    with pytest.raises(ExportError, match=r"\.item\(\)(.|\n)*keep the value a tensor(.|\n)*test_user_models_ops.py:"):
        export(Item(), (torch.randn(2, 3),))


class Rescale(nn.Module):
    """Resizing by fractional and integer factors on a dynamic height and width."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (F.interpolate(x, scale_factor=1.5, mode="nearest"),
                F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False))


def test_fractional_and_bicubic_resize_on_dynamic_sizes() -> None:
    torch.manual_seed(42)
    h, w = Dim("h", min=4, max=16), Dim("w", min=4, max=16)
    check_model(Rescale(), (torch.randn(1, 2, 8, 8),), ({2: h, 3: w},), others=((torch.randn(1, 2, 13, 5),), (torch.randn(1, 2, 4, 16),)))


class ImageInts(nn.Module):
    """A uint8 image front end and integer bit tricks."""

    def forward(self, img: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = (img.float() / 255 - 0.5) / 0.25
        counts = (img > 128).sum((2, 3), dtype=torch.float32)  # sum with dtype=
        return x, counts, ~img, ~ids, ids.sum(-1, dtype=torch.float32)


def test_uint8_images_reductions_with_dtype_and_bitwise_not() -> None:
    torch.manual_seed(43)

    def inputs(b: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randint(0, 256, (b, 3, 4, 4), dtype=torch.uint8), torch.randint(-50, 50, (b, 5), dtype=torch.int32)

    check_model(ImageInts(), inputs(2), ({0: BATCH}, {0: BATCH}), others=(inputs(5),))


def test_hypot_without_overflow_and_at_zero_and_infinity() -> None:
    a = torch.tensor([3.0, 0.0, 1e30, 1e-30, -5.0, float("inf"), 0.0, 2.5e-39])
    b = torch.tensor([4.0, 0.0, 1e30, 1e-30, 12.0, 1.0, -2.0, 1e-39])
    got = export(Fn(torch.hypot), (a, b)).run(a.numpy(), b.numpy())
    ref = torch.hypot(a.double(), b.double()).float().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=0)
    check_model(Fn(lambda x, y: torch.hypot(x, y)), (torch.randn(3, 4), torch.randn(3, 4)), (({0: BATCH}, {0: BATCH}),),
                others=((torch.randn(6, 4) * 1e3, torch.randn(6, 4)),))
