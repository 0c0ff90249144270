"""export() runs the runtime's load-time checks before returning, so a program the loader
would refuse is never handed out or written (an int64 input into a float layer)."""

from __future__ import annotations

import pytest
import torch

from torchship.edge import ExportError, export


def test_a_program_the_loader_refuses_is_an_export_error() -> None:
    model = torch.nn.Linear(8, 4)
    with pytest.raises(ExportError, match="inputs must share one dtype") as info:
        export(model, (torch.ones(2, 8, dtype=torch.int64),))
    assert "linear" in str(info.value) and "cast it" in str(info.value)


def test_a_valid_program_still_exports_and_runs() -> None:
    model = torch.nn.Linear(8, 4).eval()
    x = torch.randn(2, 8)
    prog = export(model, (x,))
    with torch.no_grad():
        want = model.double()(x.double()).numpy()
    assert abs(prog.run(x.numpy()) - want).max() < 1e-5
