"""``torchship weights convert`` / ``scan`` on the paths a user types: a missing file, an
output directory, a file that is already safetensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchship.cli import main
from torchship.weights.torch import load_file


def test_scan_of_a_missing_file_is_an_error(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "scan", str(tmp_path / "nope.bin")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_convert_into_an_existing_directory(tmp_path: Path) -> None:
    src = tmp_path / "ckpt.bin"
    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    torch.save(weights, src)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["weights", "convert", str(src), "-o", str(out)]) == 0
    got = load_file(str(out / "ckpt.safetensors"))
    assert torch.equal(got["w"], weights["w"])


def test_convert_refuses_missing_and_safetensors_inputs(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "convert", str(tmp_path / "nope.bin")]) == 2
    assert "no such file or directory" in capsys.readouterr().out
    st = tmp_path / "m.safetensors"
    st.write_bytes(b"")
    assert main(["weights", "convert", str(st)]) == 2
    assert "already a safetensors file" in capsys.readouterr().out
