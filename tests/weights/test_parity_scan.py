"""The scanner side by side with picklescan and fickling on malicious pickles.

Each payload would create a canary file if unpickled: ``os.system``, ``eval`` through builtins,
``runpy._run_code``, globals named through STACK_GLOBAL (plain, via the memo, inside a FRAME,
nested), at every protocol that can express it, bare and inside a ``torch.save`` zip. All three
tools must flag each one (the peers are the oracle that the payload is real), ``convert`` must
refuse it, and the canary must never appear. Clean pickles are safe for us and for picklescan.
"""

from __future__ import annotations

import io
import os
import pickle
import runpy
import struct
import zipfile

import pytest
import torch

from torchship.weights.pickle import convert, scan
from torchship.weights.pickle.convert import ConvertError

picklescan = pytest.importorskip("picklescan.scanner", reason="picklescan is a peer oracle (pip install '.[dev]')")
fickling = pytest.importorskip("fickling", reason="fickling is a peer oracle (pip install '.[dev]')")


class _Reduce:
    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _reduce_payloads(canary: str) -> dict[str, object]:
    return {
        "os-system": _Reduce(os.system, f"touch {canary}"),
        "builtins-eval": _Reduce(eval, f"open({canary!r}, 'w')"),
        "runpy": _Reduce(runpy._run_code, f"open({canary!r}, 'w')", {}),
    }


def _su(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE


def _stack_global_payloads(canary: str) -> dict[str, bytes]:
    touch = _su(f"touch {canary}")
    framed = _su("builtins") + _su("eval") + b"\x93" + _su(f"open({canary!r}, 'w')") + b"\x85R."
    return {
        "stack-global": b"\x80\x04" + _su("os") + _su("system") + b"\x93" + touch + b"\x85R.",
        # module and name stored in the memo (MEMOIZE), popped, fetched back (BINGET)
        "stack-global-memo": b"\x80\x04" + _su("os") + b"\x94" + _su("system") + b"\x94" + b"00"
                             + b"h\x00h\x01\x93" + touch + b"\x85R.",
        "stack-global-frame": b"\x80\x05\x95" + struct.pack("<Q", len(framed)) + framed,
        # getattr(os.system, ...) nests one STACK_GLOBAL result inside another call
        "stack-global-nested": b"\x80\x04" + _su("builtins") + _su("getattr") + b"\x93"
                               + _su("os") + _su("system") + b"\x93" + _su("__call__") + b"\x86R"
                               + touch + b"\x85R.",
    }


def _cases(tmp_path) -> list[tuple[str, bytes]]:
    canary = str(tmp_path / "CANARY")
    cases = []
    for name, obj in _reduce_payloads(canary).items():
        for proto in range(6):
            cases.append((f"{name}-p{proto}", pickle.dumps({"w": [1, "a"], "x": obj}, protocol=proto)))
    cases += list(_stack_global_payloads(canary).items())
    return cases


def test_bare_pickles_flagged_by_us_and_both_peers(tmp_path) -> None:
    from fickling.analysis import check_safety
    from fickling.fickle import Pickled

    for name, data in _cases(tmp_path):
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(data)
        report = scan([path])[0]
        assert report.verdict == "dangerous", (name, report.globals)
        assert picklescan.scan_file_path(str(path)).infected_files == 1, name
        assert not check_safety(Pickled.load(data)), name
        with pytest.raises(ConvertError, match="refusing"):
            convert(path, tmp_path / f"{name}.safetensors")
    assert not (tmp_path / "CANARY").exists()


@pytest.mark.parametrize("proto", range(2, 6))
def test_payload_inside_a_torch_zip(tmp_path, proto: int) -> None:
    """data.pkl of a real torch.save zip swapped for a payload (fickling cannot open torch zips,
    so picklescan is the oracle here)."""
    canary = tmp_path / "CANARY"
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    path = tmp_path / f"evil_p{proto}.pt"
    with zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                data = pickle.dumps({"w": _reduce_payloads(str(canary))["os-system"]}, protocol=proto)
            out.writestr(info, data)
    assert scan([path])[0].verdict == "dangerous"
    assert picklescan.scan_file_path(str(path)).infected_files == 1
    with pytest.raises(ConvertError, match="refusing to run code"):
        convert(path, tmp_path / "evil.safetensors")
    assert not canary.exists()


@pytest.mark.parametrize("proto", range(6))
def test_clean_pickles_are_safe(tmp_path, proto: int) -> None:
    path = tmp_path / f"clean_p{proto}.pkl"
    path.write_bytes(pickle.dumps({"a": [1, 2.5, "x"], "b": {"c": None}}, protocol=proto))
    assert scan([path])[0].verdict == "safe"
    assert picklescan.scan_file_path(str(path)).infected_files == 0
    zpath = tmp_path / f"clean_p{proto}.pt"
    torch.save({"w": torch.ones(2), "n": 3}, zpath, pickle_protocol=max(proto, 2))
    assert scan([zpath])[0].verdict == "safe"
    assert picklescan.scan_file_path(str(zpath)).infected_files == 0
