"""The malicious corpus: every payload refused by convert, flagged by scan, canary untouched.

Also: zero false positives on clean torch.save files, scan of .npy / safetensors / directories,
the CLI's exit codes and JSON.
"""

from __future__ import annotations

import json
import pickletools
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.weights.pickle_corpus import clean, malicious
from torchship.weights.pickle import ConvertError, convert, scan
from torchship.weights.pickle.cli import add_commands


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    tmp = tmp_path_factory.mktemp("malicious")
    canary = tmp / "canary"
    return canary, malicious(tmp, canary)


@pytest.fixture(scope="module")
def clean_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return clean(tmp_path_factory.mktemp("clean"))


def test_corpus_is_large_and_well_formed(corpus: tuple[Path, list]) -> None:
    canary, payloads = corpus
    assert len(payloads) >= 30
    names = {p.name for p in payloads}
    for needed in ("os_system_p0", "posix_system", "nt_system", "subprocess_call", "builtins_exec",
                   "builtins_eval", "getattr_import", "pip_main", "runpy_run_path",
                   "pkgutil_resolve_name", "importlib_import_module", "ctypes_libc",
                   "marshal_function", "pty_spawn", "webbrowser_generic", "shutil_copyfile",
                   "inst_opcode", "obj_opcode", "newobj_ex", "build_setstate", "stack_global_memo",
                   "hidden_behind_pop", "nested_in_state_dict", "broken_after_payload",
                   "zip_duplicate_name", "zip_case_conflict"):
        assert needed in names
    # the raw-opcode payloads are real pickle streams (decoded by the stdlib disassembler,
    # which never executes): the payload opcodes are reached before any error
    for p in payloads:
        if p.path.suffix != ".pkl":
            continue
        ops: list[str] = []
        data = p.path.read_bytes()
        start = 0
        try:
            while start < len(data):  # every stream in the file, one after another
                end = 0
                for op, _arg, pos in pickletools.genops(data[start:]):
                    ops.append(op.name)
                    end = pos
                start += end + 1
        except ValueError:
            assert p.name == "broken_after_payload", p.name
        assert {"GLOBAL", "STACK_GLOBAL", "INST", "EXT1"} & set(ops), p.name
        assert {"REDUCE", "INST", "OBJ", "NEWOBJ_EX", "BUILD", "EXT1"} & set(ops), p.name


def test_every_payload_refused_by_convert(corpus: tuple[Path, list], tmp_path: Path) -> None:
    canary, payloads = corpus
    for p in payloads:
        with pytest.raises(ConvertError) as info:
            convert(p.path, tmp_path / f"{p.name}.safetensors")
        message = str(info.value)
        assert p.path.name in message, (p.name, message)
        assert not (tmp_path / f"{p.name}.safetensors").exists(), p.name
        if p.dangerous and p.path.suffix == ".pkl" and p.name not in ("ext_code",
                                                                      "second_stream_after_stop"):
            assert "opcode at byte" in message and "global" in message, (p.name, message)
    assert not canary.exists()
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_every_payload_flagged_dangerous_by_scan(corpus: tuple[Path, list]) -> None:
    canary, payloads = corpus
    reports = scan([p.path for p in payloads])
    for p, r in zip(payloads, reports):
        assert r.verdict == "dangerous", (p.name, r.to_json())
        bad = [g for g in r.globals if g.verdict == "dangerous"]
        assert bad and all(g.reason for g in bad), p.name
    assert not canary.exists()


def test_scan_names_the_call_and_offset(corpus: tuple[Path, list]) -> None:
    _, payloads = corpus
    by_name = {p.name: p for p in payloads}
    r = scan([by_name["posix_system"].path])[0]
    g = next(g for g in r.globals if g.qualname == "posix.system")
    assert g.offset == 2 and "operating-system" in g.reason
    assert any("call posix.system(\"touch '" in c for c in r.calls), r.calls
    r = scan([by_name["stack_global_memo"].path])[0]
    assert [g.qualname for g in r.globals] == ["os.system"]
    r = scan([by_name["zip_duplicate_name"].path])[0]
    assert any("conflict" in p for p in r.problems)
    r = scan([by_name["broken_after_payload"].path])[0]
    assert any("unknown opcode" in p for p in r.problems)


def test_convert_error_names_global_offset_and_call(corpus: tuple[Path, list], tmp_path: Path) -> None:
    _, payloads = corpus
    p = next(p for p in payloads if p.name == "posix_system")
    with pytest.raises(ConvertError, match=r"opcode at byte \d+: refusing to run code: REDUCE "
                       r"would call posix.system\(\"touch .*global 'posix.system' \(named at "
                       r"byte 2, GLOBAL\)"):
        convert(p.path, tmp_path / "x.safetensors")
    p = next(p for p in payloads if p.name == "nested_in_state_dict")
    with pytest.raises(ConvertError, match=r"data.pkl, opcode at byte \d+: .*posix.system"):
        convert(p.path, tmp_path / "x.safetensors")


def test_zero_false_positives_on_clean_checkpoints(clean_files: dict[str, Path]) -> None:
    reports = scan(list(clean_files.values()))
    for r in reports:
        assert r.verdict == "safe", r.to_json()
        assert r.globals and all(g.verdict == "safe" for g in r.globals)
        assert not r.calls and not r.problems


def test_scan_directory_npy_and_safetensors(tmp_path: Path, clean_files: dict[str, Path]) -> None:
    np.save(tmp_path / "plain.npy", np.arange(5))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "arrays.npz", a=np.ones(3))
    convert(clean_files["mlp_f32"], tmp_path / "m.safetensors")
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    reports = {Path(r.path).name: r for r in scan([tmp_path])}
    assert set(reports) == {"plain.npy", "objects.npy", "arrays.npz", "m.safetensors",
                            "broken.safetensors"}
    assert reports["plain.npy"].verdict == "safe"
    assert reports["arrays.npz"].verdict == "safe"
    assert reports["m.safetensors"].verdict == "safe"
    assert reports["objects.npy"].verdict == "suspicious"  # object data is a pickle, but benign
    assert not any(g.verdict == "dangerous" for g in reports["objects.npy"].globals)
    assert reports["broken.safetensors"].verdict == "suspicious"


def test_scan_program_file_and_spaced_header(tmp_path: Path) -> None:
    # both are valid for safe_open, so scan must not call them "unrecognised" (suspicious)
    import struct

    from torchship.weights import numpy as ours_np
    from torchship.weights.reader import PROGRAM_MAGIC

    blob = ours_np.save({"w": np.eye(2, dtype=np.float32)})
    (tmp_path / "prog.tsp").write_bytes(PROGRAM_MAGIC + struct.pack("<Q", 24) + bytes(8) + blob)
    header = b'  {"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}'
    (tmp_path / "spaced.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"ab")
    bad = PROGRAM_MAGIC + struct.pack("<Q", 24) + bytes(8) + blob + b"\0"
    (tmp_path / "bad.tsp").write_bytes(bad)
    reports = {Path(r.path).name: r for r in scan([tmp_path / n for n in ("prog.tsp", "spaced.safetensors", "bad.tsp")])}
    assert {n: (r.format, r.verdict) for n, r in reports.items()} == {
        "prog.tsp": ("safetensors", "safe"), "spaced.safetensors": ("safetensors", "safe"),
        "bad.tsp": ("safetensors", "suspicious")}
    assert "trailing bytes" in " ".join(reports["bad.tsp"].problems)


def test_model_class_pickle_is_suspicious(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    torch.save(model, tmp_path / "whole_model.pt")  # pickles the class by reference
    r = scan([tmp_path / "whole_model.pt"])[0]
    assert r.verdict == "suspicious"
    assert any(g.qualname == "torch.nn.modules.linear.Linear" for g in r.globals)
    with pytest.raises(ConvertError, match="torch.nn.modules.linear.Linear"):
        convert(tmp_path / "whole_model.pt", tmp_path / "out.safetensors")


def test_torchscript_refused(tmp_path: Path) -> None:
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "ts.pt")
    with pytest.raises(ConvertError, match="TorchScript archive"):
        convert(tmp_path / "ts.pt", tmp_path / "ts.safetensors")
    r = scan([tmp_path / "ts.pt"])[0]
    assert r.verdict != "safe" and any("TorchScript" in p for p in r.problems)


def _cli(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_scan_exit_codes_and_json(corpus: tuple[Path, list], clean_files: dict[str, Path],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    canary, payloads = corpus
    assert _cli(["scan", str(clean_files["mlp_f32"]), str(clean_files["legacy_mlp"])]) == 0
    capsys.readouterr()
    assert _cli(["scan", "--json", str(payloads[0].path), str(clean_files["mlp_f32"])]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [o["verdict"] for o in out] == ["dangerous", "safe"]
    assert out[0]["globals"][0]["global"] == "os.system"
    assert _cli(["convert", str(payloads[1].path), "-o", str(canary.parent / "x.st")]) == 2
    assert "refused" in capsys.readouterr().out
    assert not canary.exists()


def test_mutated_checkpoints_give_clear_errors(tmp_path: Path) -> None:
    """Random byte flips, cuts and insertions in zip and legacy checkpoints: convert either
    succeeds or raises ConvertError naming the file; scan never raises."""
    import io
    import random

    rng = random.Random(7)
    seeds = []
    for legacy in (False, True):
        buf = io.BytesIO()
        torch.save({"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3)[::2], "e": 3}, buf,
                   _use_new_zipfile_serialization=not legacy)
        seeds.append(buf.getvalue())
    for i in range(120):
        blob = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            j = rng.randrange(len(blob))
            r = rng.random()
            if r < 0.7:
                blob[j] = rng.randrange(256)
            elif r < 0.85:
                del blob[j:j + rng.randint(1, 8)]
            else:
                blob[j:j] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        path = tmp_path / f"m{i}.pt"
        path.write_bytes(bytes(blob))
        try:
            convert(path, tmp_path / "out.safetensors")
        except ConvertError as exc:
            assert path.name in str(exc)
        report = scan([path])[0]
        assert report.verdict in ("safe", "suspicious", "dangerous")


def test_docs_comparison_table_is_current(tmp_path: Path) -> None:
    """docs/pickle.md's verdict table matches what scan says today (and what picklescan says,
    when the installed picklescan is the version the table names)."""
    import importlib.metadata
    import re

    from tests.weights.pickle_corpus import _picklescan_verdict

    doc = (Path(__file__).resolve().parents[2] / "docs" / "pickle.md").read_text()
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[2] in ("safe", "suspicious", "dangerous"):
            rows[cells[0]] = (cells[2], cells[3])
    canary = tmp_path / "canary"
    files = {p.name: p.path for p in malicious(tmp_path, canary)}
    files.update({f"clean: {k}": v for k, v in clean(tmp_path).items()})
    assert set(rows) == set(files)
    version = re.search(r"picklescan (\d+\.\d+\.\d+)", doc).group(1)
    check_peer = importlib.metadata.version("picklescan") == version
    for name, path in files.items():
        ours, peer = rows[name]
        assert scan([path])[0].verdict == ours, name
        if check_peer:
            assert _picklescan_verdict(path) == peer, name
    assert not canary.exists()
