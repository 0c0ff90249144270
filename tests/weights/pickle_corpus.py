"""Test corpus for the pickle converter/scanner, built by the tests themselves.

``malicious(tmp, canary)`` writes one file per payload; every payload, if it were loaded by
real pickle / torch.load, would create or touch ``canary``. Payloads are written as raw opcode
bytes by hand (a few use ``pickle.dumps``/``torch.save`` of a ``__reduce__`` object, which
only *writes* the payload). ``clean(tmp)`` writes genuine ``torch.save`` checkpoints.

Nothing in this module ever loads a payload.

Run ``python -m tests.weights.pickle_corpus`` to print the scan-verdict comparison with
picklescan used in docs/pickle.md.

Example:
    >>> from pathlib import Path; import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> len(malicious(d, d / "canary")) >= 30
    True
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------- opcode helpers


def glob(module: str, name: str) -> bytes:
    """GLOBAL opcode. Example: ``glob('os', 'system') == b'cos\\nsystem\\n'``."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def ustr(text: str) -> bytes:
    """BINUNICODE opcode. Example: ``ustr('a') == b'X\\x01\\x00\\x00\\x00a'``."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def tup(*items: bytes) -> bytes:
    """MARK items TUPLE. Example: ``tup() == b'(t'``."""
    return b"(" + b"".join(items) + b"t"


def lst(*items: bytes) -> bytes:
    """MARK items LIST. Example: ``lst() == b'(l'``."""
    return b"(" + b"".join(items) + b"l"


def call(func: bytes, *args: bytes) -> bytes:
    """func(*args) via REDUCE. Example: ``call(glob('a', 'b')).endswith(b'R')``."""
    return func + tup(*args) + b"R"


def attr(obj: bytes, name: str) -> bytes:
    """getattr(obj, name) via builtins.getattr. Example: ``attr(b'N', 'x')[:1] == b'c'``."""
    return call(glob("builtins", "getattr"), obj, ustr(name))


def stop(body: bytes, proto: int = 2) -> bytes:
    """PROTO + body + STOP. Example: ``stop(b'N') == b'\\x80\\x02N.'``."""
    return bytes([0x80, proto]) + body + b"."


# ---------------------------------------------------------------- payloads


@dataclass
class Payload:
    """One malicious file: name, what it does, the file written, and whether a dangerous
    global is reachable by name (False for tricks only a structural check can catch)."""

    name: str
    description: str
    path: Path
    dangerous: bool = True


class _Reduce:
    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def _clean_torch_zip(extra: dict[str, Any] | None = None) -> bytes:
    import torch

    buf = io.BytesIO()
    sd: dict[str, Any] = {"layer.weight": torch.arange(6.0).reshape(2, 3), "layer.bias": torch.ones(2)}
    sd.update(extra or {})
    torch.save(sd, buf)
    return buf.getvalue()


def _rezip(blob: bytes, edit: Callable[[list[tuple[zipfile.ZipInfo, bytes]]], list[tuple[zipfile.ZipInfo, bytes]]]) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(blob))
    members = [(info, src.read(info.filename)) for info in src.infolist()]
    members = edit(members)
    out = io.BytesIO()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point of some payloads
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            for info, data in members:
                z.writestr(info, data)
    return out.getvalue()


def malicious(tmp: Path, canary: Path) -> list[Payload]:
    """Write every payload into ``tmp``; each would create ``canary`` if loaded.

    Example: see module docstring.
    """
    c = str(canary)
    sh = f"touch '{c}'"
    py = f"open({c!r}, 'w').close()"
    out: list[Payload] = []

    def add(name: str, description: str, data: bytes, suffix: str = ".pkl",
            dangerous: bool = True) -> None:
        path = tmp / f"{len(out):02d}_{name}{suffix}"
        path.write_bytes(data)
        out.append(Payload(name, description, path, dangerous))

    add("os_system_p0", "os.system via GLOBAL, protocol 0", glob("os", "system") + tup(ustr(sh)) + b"R.")
    add("posix_system", "posix.system", stop(call(glob("posix", "system"), ustr(sh))))
    add("nt_system", "nt.system (Windows)", stop(call(glob("nt", "system"), ustr(sh))))
    add("subprocess_call", "subprocess.call([...])",
        stop(call(glob("subprocess", "call"), lst(ustr("touch"), ustr(c)))))
    add("subprocess_popen", "subprocess.Popen via NEWOBJ-free REDUCE",
        stop(call(glob("subprocess", "Popen"), lst(ustr("touch"), ustr(c)))))
    add("subprocess_check_output", "subprocess.check_output",
        stop(call(glob("subprocess", "check_output"), lst(ustr("touch"), ustr(c)))))
    add("builtins_exec", "builtins.exec(source)", stop(call(glob("builtins", "exec"), ustr(py))))
    add("builtins_eval", "builtins.eval(source)", stop(call(glob("builtins", "eval"), ustr(py))))
    add("py2_builtin_eval", "__builtin__.eval (Python 2 name)",
        stop(call(glob("__builtin__", "eval"), ustr(py))))
    add("getattr_import", "getattr(__import__('os'), 'system')(cmd)",
        stop(call(attr(call(glob("builtins", "__import__"), ustr("os")), "system"), ustr(sh))))
    add("pip_main", "pip.main(['install', ...])",
        stop(call(glob("pip", "main"), lst(ustr("install"), ustr("--target"), ustr(c), ustr("x")))))
    add("runpy_run_path", "runpy._run_code(compiled source)",
        stop(call(glob("runpy", "_run_code"), call(glob("builtins", "compile"), ustr(py),
                                                   ustr("<x>"), ustr("exec")), b"}")))
    add("pkgutil_resolve_name", "pkgutil.resolve_name('os:system')(cmd)",
        stop(call(call(glob("pkgutil", "resolve_name"), ustr("os:system")), ustr(sh))))
    add("importlib_import_module", "importlib.import_module('os').system",
        stop(call(attr(call(glob("importlib", "import_module"), ustr("os")), "system"), ustr(sh))))
    add("ctypes_libc", "ctypes.CDLL(None).system(cmd)",
        stop(call(attr(call(glob("ctypes", "CDLL"), b"N"), "system"), b"C" + bytes([len(sh)]) + sh.encode(), )))
    code = compile(py, "<x>", "exec")
    import marshal

    mar = marshal.dumps(code)
    add("marshal_function", "types.FunctionType(marshal.loads(code), {})()",
        stop(call(call(glob("types", "FunctionType"),
                       call(glob("marshal", "loads"), b"B" + struct.pack("<I", len(mar)) + mar),
                       b"}"))), )
    add("pty_spawn", "pty.spawn(['touch', canary])",
        stop(call(glob("pty", "spawn"), lst(ustr("touch"), ustr(c)))))
    add("webbrowser_generic", "webbrowser.GenericBrowser(['touch', canary]).open(url)",
        stop(call(attr(call(glob("webbrowser", "GenericBrowser"), lst(ustr("touch"), ustr(c))), "open"),
                  ustr("x"))))
    seed = tmp / "seed.txt"
    seed.write_text("x")
    add("shutil_copyfile", "shutil.copyfile(existing, canary)",
        stop(call(glob("shutil", "copyfile"), ustr(str(seed)), ustr(c))))
    add("inst_opcode", "INST os system (class-call through INST)",
        b"(" + ustr(sh) + b"ios\nsystem\n.")
    add("obj_opcode", "OBJ with os.system as the 'class'",
        stop(b"(" + glob("os", "system") + ustr(sh) + b"o"))
    add("newobj_ex", "NEWOBJ_EX types.FunctionType(code, {}) then call it",
        stop(glob("types", "FunctionType") + tup(call(glob("marshal", "loads"),
                                                      b"B" + struct.pack("<I", len(mar)) + mar), b"}")
             + b"}" + b"\x92" + b")R", proto=4))
    add("build_setstate", "BUILD puts __setstate__=os.system on an object, a 2nd BUILD calls it",
        stop(glob("types", "SimpleNamespace") + b")\x81"
             + b"N(" + ustr("__setstate__") + glob("os", "system") + b"d\x86b"
             + ustr(sh) + b"b"))
    add("stack_global_memo", "STACK_GLOBAL with names stored in the memo first",
        stop(b"\x8c\x02os\x94" + b"\x8c\x06system\x94" + b"0" + b"0" + b"h\x00h\x01\x93"
             + ustr(sh) + b"\x85R", proto=4))
    add("stack_global_popen", "STACK_GLOBAL os.popen in a protocol-5 FRAME",
        _framed(b"\x8c\x02os\x8c\x05popen\x93" + ustr(sh) + b"\x85R"))
    add("hidden_behind_pop", "payload result discarded by POP, then a clean dict",
        stop(call(glob("os", "system"), ustr(sh)) + b"0" + b"}" + ustr("w") + b"K\x01s"))
    add("broken_after_payload", "payload runs, then the stream breaks (unknown opcode)",
        b"\x80\x02" + call(glob("os", "system"), ustr(sh)) + b"\xff\xff")
    add("nested_pickle_loads", "_pickle.loads(inner payload)",
        stop(call(glob("_pickle", "loads"),
                  b"C" + bytes([len(x := stop(call(glob("os", "system"), ustr(sh))))]) + x)))
    add("timeit", "timeit.timeit(source, number=1)",
        stop(call(glob("timeit", "timeit"), ustr(py), b"N", b"N", b"K\x01")))
    add("numpy_runstring", "numpy.testing._private.utils.runstring(source, {})",
        stop(call(glob("numpy.testing._private.utils", "runstring"), ustr(py), b"}")))
    add("operator_methodcaller", "operator.methodcaller('system', cmd)(__import__('os'))",
        stop(call(call(glob("operator", "methodcaller"), ustr("system"), ustr(sh)),
                  call(glob("builtins", "__import__"), ustr("os")))))
    add("ext_code", "EXT1 extension code (resolves to any registered global)",
        stop(b"\x82\x01" + tup(ustr(sh)) + b"R"))
    add("second_stream_after_stop", "a clean pickle, then a payload pickle after STOP",
        stop(b"}") + stop(call(glob("os", "system"), ustr(sh))))

    # inside torch containers
    import torch

    buf = io.BytesIO()
    torch.save({"model": {"w": torch.ones(3)}, "hyper_parameters": {"lr": _Reduce(os.system, (sh,))}},
               buf)
    add("nested_in_state_dict", "payload inside a valid Lightning-style checkpoint",
        buf.getvalue(), ".ckpt")
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2), "x": _Reduce(os.system, (sh,))}, buf,
               _use_new_zipfile_serialization=False)
    add("legacy_stream", "payload in a legacy (non-zip) torch file", buf.getvalue(), ".bin")
    bad_pkl = pickle.dumps({"w": _Reduce(os.system, (sh,))}, protocol=2)

    def extra_copy(rename: Callable[[str], str]) -> Callable[[list[tuple[zipfile.ZipInfo, bytes]]], list[tuple[zipfile.ZipInfo, bytes]]]:
        """A zip edit that appends the payload under ``rename(<root>/data.pkl)``."""

        def edit(members: list[tuple[zipfile.ZipInfo, bytes]]) -> list[tuple[zipfile.ZipInfo, bytes]]:
            data_info = next(i for i, _ in members if i.filename.endswith("/data.pkl"))
            return members + [(zipfile.ZipInfo(rename(data_info.filename)), bad_pkl)]

        return edit

    add("zip_duplicate_name", "second data.pkl with the same name in the zip",
        _rezip(_clean_torch_zip(), extra_copy(lambda n: n)), ".pt")
    add("zip_case_conflict", "data.pkl and DATA.pkl (conflict on case-insensitive systems)",
        _rezip(_clean_torch_zip(), extra_copy(lambda n: n.replace("data.pkl", "DATA.pkl"))), ".pt")

    def second_root(members: list[tuple[zipfile.ZipInfo, bytes]]) -> list[tuple[zipfile.ZipInfo, bytes]]:
        return [(zipfile.ZipInfo("evil/data.pkl"), bad_pkl)] + members

    add("zip_second_root", "a second root folder whose data.pkl comes first",
        _rezip(_clean_torch_zip(), second_root), ".pt")

    add("zip_pickle_without_pkl_suffix", "payload pickle in a member not named *.pkl",
        _rezip(_clean_torch_zip(), extra_copy(lambda n: n.replace("data.pkl", "extra"))), ".pt")
    blob = bytearray(_rezip(_clean_torch_zip(), lambda m: [(i, bad_pkl if i.filename.endswith("data.pkl") else d) for i, d in m]))
    _set_flag(blob, "data.pkl", 0x0001)
    add("zip_encrypted_flag", "data.pkl flagged encrypted (zip flag trick)", bytes(blob), ".pt")
    blob = bytearray(_rezip(_clean_torch_zip(), lambda m: [(i, bad_pkl if i.filename.endswith("data.pkl") else d) for i, d in m]))
    _rename_local(blob, "data.pkl", "data.pkx")
    add("zip_local_name_mismatch", "local header names data.pkl differently from the directory",
        bytes(blob), ".pt")
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header = header + " " * (63 - len(header) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
    add("npy_object_array", ".npy object array whose pickle calls os.system",
        npy + stop(lst(call(glob("os", "system"), ustr(sh)))), ".npy")
    return out


def _framed(body: bytes) -> bytes:
    framed = body + b"."
    return b"\x80\x05\x95" + struct.pack("<Q", len(framed)) + framed


def _central_and_local(blob: bytearray, suffix: str) -> tuple[int, int]:
    z = zipfile.ZipFile(io.BytesIO(bytes(blob)))
    info = next(i for i in z.infolist() if i.filename.endswith(suffix))
    cd = -1
    pos = blob.find(b"PK\x01\x02")
    while pos >= 0:
        name_len = struct.unpack_from("<H", blob, pos + 28)[0]
        name = bytes(blob[pos + 46:pos + 46 + name_len]).decode()
        if name == info.filename:
            cd = pos
            break
        pos = blob.find(b"PK\x01\x02", pos + 4)
    return cd, info.header_offset


def _set_flag(blob: bytearray, suffix: str, flag: int) -> None:
    cd, local = _central_and_local(blob, suffix)
    struct.pack_into("<H", blob, cd + 8, struct.unpack_from("<H", blob, cd + 8)[0] | flag)
    struct.pack_into("<H", blob, local + 6, struct.unpack_from("<H", blob, local + 6)[0] | flag)


def _rename_local(blob: bytearray, suffix: str, new_suffix: str) -> None:
    _, local = _central_and_local(blob, suffix)
    name_len = struct.unpack_from("<H", blob, local + 26)[0]
    name = bytes(blob[local + 30:local + 30 + name_len])
    new = name.replace(suffix.encode(), new_suffix.encode())
    assert len(new) == len(name)
    blob[local + 30:local + 30 + name_len] = new


# ---------------------------------------------------------------- clean checkpoints


def clean_objects() -> dict[str, tuple[Any, dict[str, Any]]]:
    """Named clean checkpoints: (object to torch.save, extra torch.save kwargs).

    Example:
        >>> "mlp_f32" in clean_objects()
        True
    """
    import torch
    from torch import nn

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.LayerNorm(16), nn.Linear(16, 4))
    conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1))

    class TiedLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(32, 8)
            self.block = nn.Linear(8, 8)
            self.lm_head = nn.Linear(8, 32, bias=False)
            self.lm_head.weight = self.embed.weight

    base = torch.arange(40, dtype=torch.float32)
    views = {"a": base[2:10], "b": base[5:15].view(2, 5), "c": base.view(8, 5).t(),
             "d": base[::3], "e": base.view(5, 8)[1:4, 2:7], "whole": base}
    dtypes = {str(d).removeprefix("torch."): (torch.randn(3, 5) * 4).to(d) for d in (
        torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.int16, torch.int32,
        torch.int64, torch.uint8, torch.bool, torch.complex64)}
    fp8 = {"e4m3": torch.randn(4, 4).to(torch.float8_e4m3fn),
           "e5m2": torch.randn(4, 4).to(torch.float8_e5m2),
           "u16": torch.arange(7).to(torch.uint16), "u32": torch.arange(7).to(torch.uint32)}
    opt = torch.optim.Adam(mlp.parameters())
    mlp(torch.randn(2, 8)).sum().backward()
    opt.step()
    return {
        "mlp_f32": (mlp.state_dict(), {}),
        "conv_bn": (conv.state_dict(), {}),
        "tied_lm": (TiedLM().state_dict(), {}),
        "views_shared_storage": (views, {}),
        "dtypes": (dtypes, {}),
        "float8_uint": (fp8, {}),
        "half_model": ({k: v.half() for k, v in mlp.state_dict().items()}, {}),
        "bf16_model": ({k: v.bfloat16() for k, v in conv.state_dict().items()}, {}),
        "lightning_style": ({"state_dict": mlp.state_dict(), "optimizer_states": [opt.state_dict()],
                             "epoch": 3, "global_step": 120, "lr": 1e-3, "name": "run-1",
                             "hyper_parameters": {"layers": [8, 16, 4], "dropout": None}}, {}),
        "model_key": ({"model": conv.state_dict(), "step": 7}, {}),
        "parameters": ({"p": nn.Parameter(torch.randn(3, 3)), "q": torch.zeros(0, 4),
                        "scalar": torch.tensor(2.5)}, {}),
        "legacy_mlp": (mlp.state_dict(), {"_use_new_zipfile_serialization": False}),
        "legacy_views": (views, {"_use_new_zipfile_serialization": False}),
        "legacy_tied": (TiedLM().state_dict(), {"_use_new_zipfile_serialization": False}),
        "protocol4": (conv.state_dict(), {"pickle_protocol": 4}),
        "protocol5": (views, {"pickle_protocol": 5}),
    }


def clean(tmp: Path) -> dict[str, Path]:
    """Write every clean checkpoint with ``torch.save`` (plus one big-endian rewrite).

    Example: ``clean(Path(tempfile.mkdtemp()))['mlp_f32'].suffix == '.pt'``.
    """
    import torch

    paths: dict[str, Path] = {}
    for name, (obj, kwargs) in clean_objects().items():
        path = tmp / f"{name}.pt"
        torch.save(obj, path, **kwargs)
        paths[name] = path
    paths["big_endian"] = big_endian_copy(paths["dtypes"], tmp / "big_endian.pt")
    return paths


def big_endian_copy(src: Path, dst: Path) -> Path:
    """Rewrite a torch zip as a big-endian machine would have written it (byteorder 'big' and
    every storage byte-swapped per element), using the element size from a clean load of the
    same file (the file is our own, so the oracle may load it).

    Example: ``big_endian_copy(Path('m.pt'), Path('be.pt'))``.
    """
    import torch

    sd = torch.load(src, weights_only=True)  # one storage per tensor, keys in dict order
    z = zipfile.ZipFile(src)
    with z:
        names = z.namelist()
        root = names[0].split("/")[0]
        keys = sorted((n for n in names if "/data/" in n), key=lambda n: int(n.rsplit("/", 1)[1]))
        order = [t for t in sd.values()]
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as w:
            for n in names:
                data = z.read(n)
                if n == f"{root}/byteorder":
                    data = b"big"
                elif n in keys:
                    size = order[keys.index(n)].element_size()
                    if order[keys.index(n)].is_complex():
                        size //= 2
                    if size > 1:
                        import numpy as np

                        data = np.frombuffer(data, dtype=f"<u{size}").byteswap().tobytes()
                w.writestr(n, data)
    dst.write_bytes(out.getvalue())
    return dst


def _picklescan_verdict(path: Path) -> str:
    from picklescan.scanner import scan_file_path

    try:
        result = scan_file_path(str(path))
    except Exception as exc:  # picklescan itself failing counts as "error"
        return f"error ({type(exc).__name__})"
    if result.scan_err:
        return "error" if not result.infected_files else "dangerous"
    if result.infected_files:
        return "dangerous"
    if any(g.safety.name == "Suspicious" for g in result.globals):
        return "suspicious"
    return "safe"


def comparison_rows(tmp: Path) -> list[tuple[str, str, str, str]]:
    """(payload, description, torchship verdict, picklescan verdict) for the whole corpus.

    Example: ``comparison_rows(Path(tempfile.mkdtemp()))[0][2] == 'dangerous'``.
    """
    from torchship.weights.pickle import scan

    rows = []
    for p in malicious(tmp, tmp / "canary"):
        rows.append((p.name, p.description, scan([p.path])[0].verdict, _picklescan_verdict(p.path)))
    for name, path in clean(tmp).items():
        rows.append((f"clean: {name}", "torch.save checkpoint", scan([path])[0].verdict,
                     _picklescan_verdict(path)))
    return rows


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        rows = comparison_rows(Path(d))
        print("| file | what it does | torchship | picklescan |")
        print("|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        assert not (Path(d) / "canary").exists()
