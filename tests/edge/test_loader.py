"""Adversarial and fuzz tests for the program loader: every malformed file is a ProgramError."""

from __future__ import annotations

import contextlib
import copy
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.models.zoo import small_cnn  # noqa: I001
from tests.edge._util import build_program, split_program
from torchship.edge import export
from torchship.edge.runtime import ProgramError, loads


@pytest.fixture(scope="module")
def good() -> tuple[bytes, np.ndarray, np.ndarray]:
    model, (x,) = small_cnn()
    data = export(model, (x,)).to_bytes()
    with torch.no_grad():
        return data, x.numpy(), model(x).numpy()


def test_independent_rebuild_runs(good) -> None:
    data, x, ref = good
    header, weights = split_program(data)
    out = loads(build_program(header, weights, align=4096)).run(x)
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()


def test_weights_section_is_plain_safetensors(good) -> None:
    from safetensors.numpy import load as st_load

    data, _, _ = good
    _, weights = split_program(data)
    tensors = st_load(weights)  # the reference safetensors library reads it
    assert len(tensors) > 5 and all(t.dtype == np.float32 for t in tensors.values())


def _mutate(good, fn) -> bytes:
    data, _, _ = good
    header, weights = split_program(data)
    h = copy.deepcopy(header)
    fn(h["methods"]["forward"])
    return build_program(h, weights)


CASES = {
    "unknown op": (lambda m: m["instructions"][0].update(op="fft"), "unknown op 'fft'"),
    "value id out of range": (lambda m: m["instructions"][0]["inputs"].__setitem__(0, 10**6), "out of range"),
    "negative value id": (lambda m: m["instructions"][0]["inputs"].__setitem__(0, -1), "out of range"),
    "bool value id": (lambda m: m["instructions"][0]["inputs"].__setitem__(0, True), "out of range"),
    "use before def": (lambda m: m["instructions"].reverse(), "before it is defined|must be a not-yet-defined"),
    "shape mismatch": (lambda m: m["values"][m["instructions"][0]["outputs"][0]].update(shape=[1, 2, 3, 4]), "produces|hold"),
    "dtype mismatch": (lambda m: m["values"][m["instructions"][0]["outputs"][0]].update(dtype="I64"), "produces|hold"),
    "bad dtype": (lambda m: m["values"][0].update(dtype="F16X"), "not supported"),
    "arena overflow": (lambda m: m.update(arena_size=64), "inside the arena"),
    "huge arena": (lambda m: m.update(arena_size=1 << 60), "out of range"),
    "unaligned slot": (lambda m: next(v for v in m["values"] if v["kind"] == "arena").update(offset=3), "aligned"),
    "overlapping live tensors": (
        lambda m: [v.update(offset=0) for v in m["values"] if v["kind"] in ("arena", "input")],
        "live at the same time",
    ),
    "missing weight": (lambda m: next(v for v in m["values"] if v["kind"] == "weight").update(weight="nope"), "not in the weights"),
    "weight shape lie": (lambda m: next(v for v in m["values"] if v["kind"] == "weight").update(shape=[1]), "weights section"),
    "bad attr": (lambda m: next(i for i in m["instructions"] if i["op"] == "conv2d")["attrs"].update(stride="x"), "expected ints"),
    "unknown attr": (lambda m: next(i for i in m["instructions"] if i["op"] == "conv2d")["attrs"].update(bogus=1), "no attribute"),
    "bad kind": (lambda m: m["values"][0].update(kind="mmio"), "kind"),
    "unbound symbol": (lambda m: m["symbols"].update(n={"min": 1, "max": 4}), "not bound"),
    "bad symbol range": (lambda m: m["symbols"].update(n={"min": 5, "max": 4}), "range"),
    "unknown symbol in shape": (lambda m: m["values"][0].update(shape=[1, "q", 32, 32]), "unknown symbol"),
    "bad dim expr": (lambda m: m["values"][0].update(shape=[1, ["//", 3, 0], 32, 32]), "divisor"),
    "deep dim expr": (lambda m: m["values"][0].update(shape=[1, ["+"] * 1 + [["+", ["+", ["+", ["+", ["+", ["+", ["+", ["+", ["+", ["+", ["+", ["+", ["+", ["+", ["+", ["+", ["+", 1]]]]]]]]]]]]]]]]]], 32, 32]), "deeper"),
    "no outputs": (lambda m: m.update(outputs=[]), "no outputs"),
    "wrong arity": (lambda m: m["instructions"][0]["inputs"].clear(), "takes"),
    "input not input kind": (lambda m: m["inputs"].append(m["instructions"][0]["outputs"][0]), "kind 'input'"),
    "missing field": (lambda m: m.pop("values"), "missing field 'values'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_header_is_rejected(good, case: str) -> None:
    fn, match = CASES[case]
    with pytest.raises(ProgramError, match=match):
        loads(_mutate(good, fn))


def test_preamble_errors(good) -> None:
    data, _, _ = good
    header, weights = split_program(data)
    with pytest.raises(ProgramError, match="bad magic"):
        loads(build_program(header, weights, magic=b"TSHPPROX"))
    with pytest.raises(ProgramError, match="version 2"):
        loads(build_program(header, weights, version=2))
    with pytest.raises(ProgramError, match="flags"):
        loads(build_program(header, weights, flags=1))
    with pytest.raises(ProgramError, match="shorter than"):
        loads(data[:20])
    with pytest.raises(ProgramError, match="weights section"):
        loads(data[:-1])  # truncated weights
    with pytest.raises(ProgramError, match="multiple of 64"):
        loads(data[:8] + struct.pack("<Q", 4097) + data[16:])
    with pytest.raises(ProgramError, match="multiple of 64|inside the file"):
        loads(data[:8] + struct.pack("<Q", len(data) + 64) + data[16:])
    with pytest.raises(ProgramError, match="does not fit"):
        loads(data[:24] + struct.pack("<Q", 1 << 40) + data[32:])
    bad = bytearray(data)
    bad[32] = ord("[")
    with pytest.raises(ProgramError, match="JSON|object"):
        loads(bytes(bad))


def test_embedding_index_out_of_range_is_an_error_not_a_read() -> None:
    emb = torch.nn.Embedding(10, 4).eval()
    prog = export(emb, (torch.tensor([[1, 2]]),))
    runtime = loads(prog.to_bytes())
    for bad in ([[1, 10]], [[-1, 0]], [[2, -(2**62)]]):  # the message names the failing instruction
        with pytest.raises(ProgramError, match=r"embedding.*index out of range"):
            runtime.run(np.array(bad))
    assert runtime.run(np.array([[9, 0]])).shape == (1, 2, 4)  # and the method still runs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_corruption_never_crashes(good, data) -> None:
    raw, x, _ = good
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 8))):
        region = data.draw(st.sampled_from(["preamble", "header", "anywhere"]))
        hi = {"preamble": 32, "header": 32 + struct.unpack_from("<Q", raw, 24)[0], "anywhere": len(raw)}[region]
        pos = data.draw(st.integers(0, hi - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        buf = buf[: data.draw(st.integers(0, len(buf)))]
    try:
        prog = loads(bytes(buf))
    except ProgramError:
        return
    with contextlib.suppress(ProgramError):  # it validated: running must work or fail cleanly
        prog.run(x)
