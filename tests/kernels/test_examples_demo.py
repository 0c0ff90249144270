"""The kernels step of ``torchship demo`` runs, matches torch, and shows generated Triton."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from torchship.kernels.demo import run_step


def test_kernels_demo_step_passes_and_prints_code(tmp_path: Path) -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=160, color_system=None)
    assert run_step(console, tmp_path, quick=True), buf.getvalue()
    text = buf.getvalue()
    for name in ("softmax", "layer_norm", "matmul", "ref", "interpreter", "67x129"):
        assert name in text
    assert "MISMATCH" not in text and "Error" not in text
    code = (tmp_path / "softmax_triton.py").read_text()
    assert "tl.load" in code and "softmax.py:" in code  # points back at the user's lines
