"""The model zoo exported and run by the numpy runtime, against eager PyTorch (float32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.export import Dim

from examples.models.zoo import ZOO, tiny_transformer  # noqa: I001
from tests.edge._util import rel_err
from torchship.edge import ExportError, export
from torchship.edge.runtime import ProgramError, load

STATIC = ["mlp", "small_cnn", "inverted_residual"]


@pytest.mark.parametrize("name", STATIC)
def test_static_zoo_matches_eager(name: str, tmp_path) -> None:
    model, inputs = ZOO[name]()
    prog = export(model, inputs)
    path = prog.save(tmp_path / f"{name}.tsp")
    runtime = load(path)
    with torch.no_grad():
        ref = model(*inputs).numpy()
    assert rel_err(runtime.run(*(x.numpy() for x in inputs)), ref) <= 1e-5
    # a second input through the same arena
    torch.manual_seed(123)
    x2 = torch.randn_like(inputs[0]) * 3
    with torch.no_grad():
        assert rel_err(runtime.run(x2.numpy()), model(x2).numpy()) <= 1e-5
    s = prog.summary()["methods"]["forward"]
    # fused inverted residual: only its input and output remain in the arena (nothing to share)
    assert s["arena_bytes"] < s["tensor_bytes"] or (name == "inverted_residual" and s["arena_bytes"] == s["tensor_bytes"])


def test_batch_norm_folded_into_conv() -> None:
    model, inputs = ZOO["inverted_residual"]()
    ops = export(model, inputs).summary()["methods"]["forward"]["ops"]
    # 3 conv + 3 bn: every bn's mul/add disappears, both relu6 clamps are fused into their convs
    # (clamp_min/clamp_max), and the conv chain with its residual add is one fused_mbconv
    assert ops == {"fused_mbconv": 1}
    q = export(model, inputs, quantize="int8").summary()["methods"]["forward"]["ops"]
    assert q == {"conv2d": 3, "add": 1, "dequantize": 3}  # int8: the unfused chain
    model, inputs = ZOO["small_cnn"]()
    ops = export(model, inputs).summary()["methods"]["forward"]["ops"]
    assert "mul" not in ops and "add" not in ops


@pytest.mark.parametrize("name", STATIC)
def test_int8_accuracy_and_size(name: str) -> None:
    model, inputs = ZOO[name]()
    fp = export(model, inputs)
    q = export(model, inputs, quantize="int8")
    with torch.no_grad():
        ref = model(*inputs).numpy()
    err = rel_err(q.run(*inputs), ref)
    assert 1e-6 < err <= 2e-2, err  # really quantised, and within the documented bound
    assert float(q.metadata["int8_max_rel_err.forward"]) == pytest.approx(err, rel=1e-2)
    assert len(q.to_bytes()) < 0.5 * len(fp.to_bytes())
    assert "dequantize" in q.summary()["methods"]["forward"]["ops"]


@pytest.fixture(scope="module")
def transformer_program():
    model, inputs = tiny_transformer()
    seq = Dim("seq", min=2, max=48)
    dyn = ({1: seq}, {1: seq})
    return model, export(model, inputs, dynamic_shapes=dyn, methods={"encode": (inputs, dyn)})


@pytest.mark.parametrize("length", [2, 5, 16, 48])
def test_tiny_transformer_dynamic_two_methods(transformer_program, length: int) -> None:
    model, prog = transformer_program
    torch.manual_seed(length)
    ids = torch.randint(0, 500, (2, length))
    mask = torch.ones(2, length, dtype=torch.long)
    mask[0, max(1, length - 3) :] = 0
    with torch.no_grad():
        ref_h, ref_e = model(ids, mask).numpy(), model.encode(ids, mask).numpy()
    assert rel_err(prog.run(ids, mask), ref_h) <= 1e-5
    assert rel_err(prog.method("encode")(ids, mask), ref_e) <= 1e-5
    assert prog.summary()["methods"]["encode"]["symbols"] == {"seq": (2, 48)}


def test_dynamic_dim_beyond_bound_is_a_clear_error(transformer_program) -> None:
    _, prog = transformer_program
    ids = np.zeros((2, 49), np.int64)
    with pytest.raises(ProgramError, match=r"outside the planned range \[2, 48\] of 'seq'"):
        prog.run(ids, ids)
    with pytest.raises(ProgramError, match="must be int64"):
        prog.run(ids[:, :4].astype(np.int32), ids[:, :4])
    with pytest.raises(ProgramError, match="symbol 'seq' is already 4"):
        prog.run(ids[:, :4], ids[:, :5])


def test_unsupported_op_names_op_and_source_line() -> None:
    class LogGamma(torch.nn.Module):
        def forward(self, x):
            return torch.lgamma(x)  # the unsupported line

    with pytest.raises(ExportError) as info:
        export(LogGamma(), (torch.randn(3, 2),))
    msg = str(info.value)
    assert "aten.lgamma" in msg and "test_zoo.py" in msg and "torch.lgamma(x)" in msg
    assert "docs/edge-ops.md" in msg


def test_dynamic_dim_without_max_is_rejected() -> None:
    with pytest.raises(ExportError, match="no maximum"):
        export(torch.nn.ReLU(), (torch.randn(4, 3),), dynamic_shapes=({0: Dim("b")},))


def test_tuple_outputs_and_views() -> None:
    class Two(torch.nn.Module):
        def forward(self, x):
            y = x.reshape(2, 6).t()
            return y.flatten(), torch.softmax(x, -1).sum(-1, keepdim=True)

    x = torch.randn(3, 4)
    prog = export(Two(), (x,))
    a, b = prog.run(x)
    ra, rb = Two()(x)
    assert rel_err(a, ra.numpy()) == 0 and rel_err(b, rb.numpy()) <= 1e-6
