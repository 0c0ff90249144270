"""float16 and bfloat16 programs: ``model.half()`` / ``model.to(torch.bfloat16)`` exported and
run by the numpy runtime, weights stored as their 2 bytes, bf16 values crossing the API as
``ml_dtypes.bfloat16`` arrays, each op computed in float32 and rounded (to nearest even) to
the model's dtype as torch does on CPU; also a float32 model with a bf16 buffer.

Tolerance: the program and eager torch round the same float32 results once per op, so they
differ only where torch computes an op another way (a fused kernel, another summation order):
one rounding, 2^-8 relative for bf16 and 2^-11 for f16, carried along by later ops. We allow 4
such units of the output's scale against eager in the same dtype, and require the error
against float64 to be no worse than eager's own plus one unit."""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from tests.edge._util import split_program
from tests.edge.test_user_models_ops import TopKRouter
from tests.edge.test_user_models_seq import HiFiGANish
from torchship.edge import ExportError, export
from torchship.edge.runtime import ProgramError, loads

#: one rounding, relative (float32 outputs: a few float32 roundings)
UNIT = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-20}
HALVES = [torch.float16, torch.bfloat16]


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor as the runtime takes it: bf16 as ``ml_dtypes.bfloat16`` (exact via float32)."""
    return t.float().numpy().astype(ml_dtypes.bfloat16) if t.dtype is torch.bfloat16 else t.numpy()


def check_half(model: nn.Module, inputs: tuple[torch.Tensor, ...], dynamic_shapes=None,
               others: tuple[tuple[torch.Tensor, ...], ...] = ()) -> bytes:
    """Export ``model`` (already in its dtype), reload the file, run it on ``inputs`` and each of
    ``others``, and compare every output with eager torch in the output's dtype and in float64
    (the model is converted to float64 in place at the end: old-style ``weight_norm`` modules
    cannot be copied). Returns the program file."""
    model = model.eval()
    data = export(model, inputs, dynamic_shapes=dynamic_shapes).to_bytes()
    prog = loads(data)
    calls = (inputs, *others)
    with torch.no_grad():
        refs_all = [model(*xs) for xs in calls]
        model.double()
        refs64_all = [model(*(x.double() if x.is_floating_point() else x for x in xs)) for xs in calls]
    for xs, ref, ref64 in zip(calls, refs_all, refs64_all):
        got = prog.run(*(to_numpy(x) for x in xs))
        gots = got if isinstance(got, tuple) else (got,)
        refs, refs64 = (r if isinstance(r, tuple) else (r,) for r in (ref, ref64))
        assert len(gots) == len(refs)
        for g, r, r64 in zip(gots, refs, refs64):
            assert g.dtype == to_numpy(r).dtype and g.shape == tuple(r.shape)
            if not r.is_floating_point():
                np.testing.assert_array_equal(g, r.numpy())
                continue
            unit = UNIT[r.dtype] * np.abs(r64.numpy()).max()
            g, r, r64 = g.astype(np.float64), r.double().numpy(), r64.numpy()
            assert np.abs(g - r).max() <= 4 * unit
            assert np.abs(g - r64).max() <= np.abs(r - r64).max() + unit
    return data


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, groups=2)
        self.fc = nn.Linear(8, 5)
        self.bn.running_mean.normal_()
        self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.c1(x)))
        x = F.max_pool2d(F.silu(self.c2(x)), 2)
        return self.fc(x.mean((2, 3))).softmax(-1)


@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_half_convnet_with_batch_norm_and_two_byte_weights(dtype: torch.dtype) -> None:
    torch.manual_seed(87)
    model = ConvNet().to(dtype)
    batch = Dim("batch", min=1, max=4)
    data = check_half(model, (torch.randn(2, 3, 8, 8).to(dtype),), ({0: batch},),
                      others=((torch.randn(3, 3, 8, 8).to(dtype),),))
    _, blob = split_program(data)  # the weights: a safetensors blob (u64 length, JSON header)
    tensors = json.loads(blob[8 : 8 + struct.unpack_from("<Q", blob)[0]])
    kinds = {k: t["dtype"] for k, t in tensors.items() if k != "__metadata__"}
    assert {kinds[f"{m}.weight"] for m in ("c1", "c2", "fc")} == {"F16" if dtype is torch.float16 else "BF16"}
    assert all(k.endswith((".scale", ".shift")) for k, v in kinds.items() if v == "F32")  # batch norm, computed in F32


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(self.emb(ids)).mean(1))


def test_bf16_transformer_encoder_over_a_dynamic_length() -> None:
    torch.manual_seed(88)
    seq = Dim("seq", min=2, max=16)
    check_half(Encoder().to(torch.bfloat16), (torch.randint(0, 20, (2, 5)),), ({1: seq},),
               others=((torch.randint(0, 20, (2, 11)),),))


@pytest.mark.parametrize("dtype", HALVES, ids=str)
@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated")
@pytest.mark.filterwarnings("ignore:The tensor attribute self")  # old-style weight_norm sets .weight in forward
def test_half_vocoder_with_weight_norm_and_transposed_convs(dtype: torch.dtype) -> None:
    torch.manual_seed(90)  # weight_norm's norm in float32 (vector_norm dtype=), the weight read through casts
    check_half(HiFiGANish().to(dtype), (torch.randn(2, 4, 10).to(dtype),))


def test_bf16_mixture_of_experts_router_with_integer_outputs() -> None:
    torch.manual_seed(91)  # top-k indices and expert loads (int64) next to the bf16 mixture
    check_half(TopKRouter().to(torch.bfloat16), (torch.randn(6, 8).to(torch.bfloat16),), ({0: Dim("tokens", min=1, max=16)},),
               others=((torch.randn(3, 8).to(torch.bfloat16),),))


class MixedBuffer(nn.Module):
    """A float32 model with a bfloat16 buffer: float32 math where torch promotes, a bf16 result
    where the model asks for one."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("scale", torch.randn(4).to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.lin(x)
        return h * self.scale, (h.to(torch.bfloat16) * self.scale).sum(-1), h.half() + 1


def test_float32_model_with_a_bf16_buffer_and_casts() -> None:
    torch.manual_seed(89)
    check_half(MixedBuffer(), (torch.randn(3, 4),))


class Autocast(nn.Module):
    """A float32 model with a ``torch.autocast`` region: torch.export writes its casts out."""

    def __init__(self) -> None:
        super().__init__()
        self.inner, self.outer = nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = self.inner(x)
        return self.outer(h.float().relu())


def test_float32_model_with_an_autocast_region() -> None:
    torch.manual_seed(92)  # (a float64 copy cannot run the region: compared with eager only)
    model, x = Autocast().eval(), torch.randn(3, 8)
    got = loads(export(model, (x,)).to_bytes()).run(x.numpy())
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(got - ref).max() <= UNIT[torch.float32] * np.abs(ref).max()


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # 3e38 -> float16 inf, as torch
def test_casts_round_to_nearest_even_like_torch() -> None:
    tiny = float(np.float32(1e-40))  # a float32 subnormal
    x = torch.tensor([1.00390625, 1.01171875, -1.00390625, 65520.0, 3.0e38, tiny, -0.0, 2.0**-25,
                      float("nan"), float("inf"), float("-inf"), 0.1])

    class Casts(nn.Module):
        def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return t.to(torch.bfloat16), t.half(), t.to(torch.bfloat16).half()

    got = loads(export(Casts(), (x,)).to_bytes()).run(x.numpy())
    for g, r in zip(got, Casts()(x)):
        bits = r.view(torch.int16).numpy().view(np.uint16)
        nan = torch.isnan(r).numpy()
        np.testing.assert_array_equal(np.isnan(g.astype(np.float32)), nan)  # (any NaN payload)
        np.testing.assert_array_equal(g.view(np.uint16)[~nan], bits[~nan])


def test_bf16_inputs_must_be_ml_dtypes_bfloat16() -> None:
    model = nn.Linear(3, 2).to(torch.bfloat16).eval()
    prog = export(model, (torch.randn(1, 3).to(torch.bfloat16),))
    with pytest.raises(ProgramError, match="must be bfloat16 .an ml_dtypes.bfloat16 array"):
        prog.run(np.zeros((1, 3), np.float32))


def test_int8_quantisation_of_a_half_model_is_refused() -> None:
    model = nn.Linear(3, 2).half().eval()
    with pytest.raises(ExportError, match="quantize='int8' applies to float32 weights; this model holds torch.float16"):
        export(model, (torch.randn(1, 3).half(),), quantize="int8")


FACTORY = """
import torch


def make():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    return model.to(torch.bfloat16).eval(), (torch.randn(2, 8).to(torch.bfloat16),)
"""


def test_cli_exports_and_runs_a_bf16_model(tmp_path) -> None:
    from torchship.cli import main

    (tmp_path / "factory.py").write_text(FACTORY)
    out = tmp_path / "m.tsp"
    assert main(["edge", "export", f"{tmp_path}/factory.py:make", "-o", str(out), "--input", "3,8:bf16"]) == 0
    x = torch.randn(3, 8).to(torch.bfloat16)
    np.save(tmp_path / "x.npy", to_numpy(x))  # saved as raw 2-byte records, read back as bf16
    assert main(["edge", "run", str(out), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")]) == 0
    got = np.load(tmp_path / "y.npy").view(ml_dtypes.bfloat16).astype(np.float32)
    namespace: dict = {}
    exec(FACTORY, namespace)
    with torch.no_grad():
        ref = namespace["make"]()[0](x).float().numpy()
    assert np.abs(got - ref).max() <= 4 * UNIT[torch.bfloat16] * np.abs(ref).max()


class Moves(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([x.reshape(4, 3).t().relu(), -x.reshape(3, 4).flip(0)], 0)
        return torch.maximum(y, y.amax(0, keepdim=True) * 0.5)  # the * 0.5 rounds; the rest is exact


def test_exact_ops_on_bf16_values_need_no_rounding() -> None:
    x = torch.randn(2, 6).to(torch.bfloat16)
    prog = export(Moves(), (x,))
    ops = prog.summary()["methods"]["forward"]["ops"]
    assert ops["cast"] == 4  # the input up, the mul's result down and up, the output down
    got = prog.run(to_numpy(x))
    np.testing.assert_array_equal(got.view(np.uint16), Moves()(x).view(torch.int16).numpy().view(np.uint16))
