"""Our pickle machine: every opcode against the stdlib pickler's output, strict FRAME checks,
limits, malformed streams, and that no module named by a stream is ever imported."""

from __future__ import annotations

import collections
import contextlib
import pickle
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.weights.pickle_corpus import glob, stop, tup, ustr
from torchship.weights.pickle import Limits, Machine, PickleVMError, scan
from torchship.weights.pickle.allowlist import resolve
from torchship.weights.pickle.vm import scan_globals_static


def run(data: bytes, **kw: Any) -> Any:
    kw.setdefault("resolve", resolve)
    return Machine(data, **kw).run()


VALUES = [
    {"a": [1, 2.5, "x", b"by", None, True, False, (1,), (1, 2), (1, 2, 3), (), -5, 2**70,
           -(2**300), "ü" * 300, {1, 2}, frozenset({3}), bytearray(b"zz"), 1 + 2j, 255, 65535,
           -1, 2**31, 1e-300, float("inf")]},
    [[]] * 3,
    "x" * 100_000,
    b"y" * 70_000,
    collections.OrderedDict(a=1, b=[2]),
    {(1, "k"): frozenset({"v"})},
]


@pytest.mark.parametrize("protocol", range(6))
def test_round_trip_every_protocol(protocol: int) -> None:
    for value in VALUES:
        assert run(pickle.dumps(value, protocol=protocol)) == value
    shared = [1]
    out = run(pickle.dumps([shared, shared], protocol=protocol))
    assert out[0] is out[1]  # memo keeps identity
    loop: list[Any] = []
    loop.append(loop)
    out = run(pickle.dumps(loop, protocol=protocol))
    assert out[0] is out


@pytest.mark.parametrize("protocol", range(6))
def test_numpy_arrays_rebuilt_without_numpy_unpickling(protocol: int) -> None:
    for a in (np.arange(6, dtype=">i4").reshape(2, 3), np.ones((3, 2), order="F"),
              np.array([True, False]), np.zeros((0, 3), "f2"), np.array(["ab", "c"])):
        got = run(pickle.dumps(a, protocol=protocol)).array
        assert got.dtype == a.dtype and np.array_equal(got, a)
    assert run(pickle.dumps(np.float32(3.5), protocol=protocol)) == 3.5


@settings(max_examples=60, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.binary(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children)
    | st.tuples(children, children),
    max_leaves=30), st.integers(0, 5))
def test_property_round_trip(value: Any, protocol: int) -> None:
    assert run(pickle.dumps(value, protocol=protocol)) == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_only_clean_errors(data: bytes) -> None:
    for body in (data, b"\x80\x04" + data, b"\x80\x02(" + data + b"."):
        with contextlib.suppress(PickleVMError):
            Machine(body, resolve=resolve, strict=False).run()


def test_frame_checks() -> None:
    body = b"K\x01."
    good = b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body
    assert run(good) == 1
    with pytest.raises(PickleVMError, match="runs past the end"):
        run(b"\x80\x04\x95" + struct.pack("<Q", 100) + body)
    # an opcode straddling the end of its frame: BININT2 split by a 2-byte frame
    with pytest.raises(PickleVMError, match="crosses the end of its FRAME"):
        run(b"\x80\x04\x95" + struct.pack("<Q", 2) + b"M\x01\x00.")
    inner = b"\x95" + struct.pack("<Q", 1) + b"N"
    with pytest.raises(PickleVMError, match="before the previous frame ended"):
        run(b"\x80\x04\x95" + struct.pack("<Q", len(inner) + 1) + inner + b".")
    with pytest.raises(PickleVMError, match="STOP inside an unfinished FRAME"):
        run(b"\x80\x04\x95" + struct.pack("<Q", 3) + b"N.N")


def test_limits() -> None:
    with pytest.raises(PickleVMError, match="stack exceeds 10"):
        run(b"N" * 11 + b".", limits=Limits(max_stack=10))
    with pytest.raises(PickleVMError, match="memo exceeds 2"):
        run(b"\x80\x04N\x94N\x94N\x94.", limits=Limits(max_memo=2))
    with pytest.raises(PickleVMError, match="more than 5 nested MARKs"):
        run(b"(" * 6, limits=Limits(max_marks=5))
    with pytest.raises(PickleVMError, match="more than 100 bytes"):
        run(b"\x80\x03B\x40\x00\x00\x00" + b"x" * 64 + b"0B\x40\x00\x00\x00" + b"x" * 64 + b".",
            limits=Limits(max_bytes=100))
    with pytest.raises(PickleVMError, match="exceeds the limit"):
        run(b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b".", limits=Limits(max_bytes=1 << 20))
    with pytest.raises(PickleVMError, match="integer literal of"):
        run(b"I" + b"9" * 5000 + b"\n.")
    with pytest.raises(PickleVMError, match="container items"):
        run(b"](" + b"N" * 20 + b"e.", limits=Limits(max_items=10))


@pytest.mark.parametrize("data, message", [
    (b"\xfe.", "unknown opcode byte 0xfe"),
    (b"N", "stream ends without STOP"),
    (b"h\x05.", "memo key 5 was never stored"),
    (b"NN.", "STOP leaves 1 extra stack items"),
    (b"(N.", "open MARKs"),
    (b"(NNNd.", "odd number"),
    (b"}]Ns.", "unhashable dict key"),
    (b"\x80\x06N.", "unsupported pickle protocol 6"),
    (b"\x80\x05\x97.", "out-of-band"),
    (b"T\xff\xff\xff\xff.", "negative length"),
    (b"X\x05\x00\x00\x00ab.", "stream ends inside an opcode"),
    (b"cos\nsys", "not terminated by a newline"),
    (b"S'abc\n.", "not a quoted literal"),
    (b"a.", "APPEND on an empty stack"),
    (b"N\x85Na.", "APPEND on a tuple"),
    (b"1.", "POP_MARK without a MARK"),
    (b"\x80\x02K\x01K\x02\x93.", "needs two strings"),
])
def test_malformed_streams(data: bytes, message: str) -> None:
    with pytest.raises(PickleVMError, match=message):
        run(data)


def test_strict_raises_at_the_call_observe_continues() -> None:
    data = stop(glob("os", "system") + tup(ustr("id")) + b"R0" + b"}")
    with pytest.raises(PickleVMError) as info:
        run(data)
    assert info.value.offset == len(b"\x80\x02cos\nsystem\n(X\x02\x00\x00\x00idt")
    assert "REDUCE would call os.system('id')" in str(info.value)
    m = Machine(data, resolve=resolve, strict=False)
    assert m.run() == {}
    assert [(r.qualname, ok) for r, ok in m.trace.globals] == [("os.system", False)]
    assert [e.action for e in m.trace.events] == ["call"]
    # merely naming a forbidden global (no call) is refused at STOP in strict mode
    with pytest.raises(PickleVMError, match="refusing global 'os.system'"):
        run(stop(b"]" + glob("os", "system") + b"a"))


def test_allowlisted_constructors_validate_arguments() -> None:
    bad_view = stop(glob("torch._utils", "_rebuild_tensor_v2") + tup(b"N", b"K\x00", b")", b")",
                                                                    b"\x89", b"}") + b"R")
    with pytest.raises(PickleVMError, match="expected a storage, got NoneType"):
        run(bad_view)
    with pytest.raises(PickleVMError, match="_codecs.encode is allowed only"):
        run(stop(glob("_codecs", "encode") + tup(ustr("x"), ustr("rot13")) + b"R"))
    with pytest.raises(PickleVMError, match="numpy dtype 'O,i4'"):
        run(stop(glob("numpy", "dtype") + tup(ustr("O,i4"), b"\x89", b"\x88") + b"R"))


def test_named_modules_are_never_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = tmp_path / "imported"
    (tmp_path / "evil_module_xyz.py").write_text(f"open({str(canary)!r}, 'w').close()\nx = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = stop(glob("evil_module_xyz", "x") + b")R")
    (tmp_path / "f.pkl").write_bytes(data)
    with pytest.raises(PickleVMError):
        run(data)
    report = scan([tmp_path / "f.pkl"])[0]
    assert report.verdict == "suspicious"
    assert report.globals[0].qualname == "evil_module_xyz.x"
    assert "evil_module_xyz" not in sys.modules and not canary.exists()


def test_static_scan_after_error() -> None:
    refs, _, err = scan_globals_static(b"N" + glob("os", "system") + b"\xff", 0)
    assert [r.qualname for r in refs] == ["os.system"] and "unknown opcode" in err


@pytest.mark.parametrize("module, name, verdict", [
    ("torch._utils", "_rebuild_tensor_v2", "safe"),
    ("collections", "OrderedDict", "safe"),
    ("torch", "bfloat16", "safe"),
    ("torch", "float8_e4m3fn", "safe"),
    ("numpy.core.multiarray", "_reconstruct", "safe"),
    ("builtins", "set", "safe"),
    ("builtins", "getattr", "dangerous"),
    ("builtins", "__import__", "dangerous"),
    ("__builtin__", "eval", "dangerous"),
    ("os", "system", "dangerous"),
    ("os.path", "join", "dangerous"),
    ("subprocess", "Popen", "dangerous"),
    ("pip._internal.cli.main", "main", "dangerous"),
    ("torch.hub", "load", "dangerous"),
    ("torch.serialization", "load", "dangerous"),
    ("copyreg", "extension[7]", "dangerous"),
    ("mypkg.models", "Net", "suspicious"),
    ("__main__", "Model", "suspicious"),
    ("copyreg", "_reconstructor", "suspicious"),
    ("torch._utils", "_rebuild_qtensor", "suspicious"),
    ("builtins", "dict", "suspicious"),
])
def test_scan_policy(module: str, name: str, verdict: str) -> None:
    from torchship.weights.pickle.allowlist import classify

    got, why = classify(module, name)
    assert got == verdict and why


@pytest.mark.parametrize("body, opcode", [
    (b"}N" + b"\x85" * 200_000 + b"Ns", "unhashable dict key"),  # SETITEM with a deep tuple key
    (b"(N" + b"\x85" * 200_000 + b"\x91", "FROZENSET"),
    (b"\x8f(N" + b"\x85" * 200_000 + b"\x90", "ADDITEMS"),
    (b"cbuiltins\nset\n]N" + b"\x85" * 200_000 + b"a\x85R", "builtins.set"),
])
def test_deep_tuple_keys_refused_not_crashing(body: bytes, opcode: str) -> None:
    # CPython hashes nested tuples recursively in C; a million levels would crash the process
    with pytest.raises(PickleVMError, match=f"{opcode}.*nests more than 100 tuples"):
        run(b"\x80\x04" + body + b".")


def test_deep_nesting_in_checkpoint_gives_clear_error(tmp_path: Path) -> None:
    from torchship.weights.pickle import ConvertError, convert

    deep = b"\x80\x02}X\x01\x00\x00\x00a" + b"]" * 50_000 + b"a" * 49_999 + b"s."
    (tmp_path / "deep.pkl").write_bytes(deep)
    with pytest.raises(ConvertError, match="nests deeper than 200 levels"):
        convert(tmp_path / "deep.pkl", tmp_path / "deep.safetensors")
    assert scan([tmp_path / "deep.pkl"])[0].verdict == "safe"  # deep, but runs nothing
