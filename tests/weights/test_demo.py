"""The weights demo step runs end to end and reports success."""

from __future__ import annotations

from rich.console import Console

from torchship.weights.demo import run_step


def test_demo_step_passes(tmp_path) -> None:
    console = Console(record=True, width=140)
    assert run_step(console, tmp_path / "w", quick=True) is True
    text = console.export_text()
    assert "FAIL" not in text
    for check in ("save_model", "verify file", "outputs match after reload", "safetensors reads our file", "sharded"):
        assert check in text, check
