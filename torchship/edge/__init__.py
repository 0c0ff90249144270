"""torchship.edge: export a PyTorch model to one program file and run it with numpy only.

``export`` and ``Program`` need torch and are imported lazily, so ``import
torchship.edge.runtime`` works on a machine without torch.

Example:
    >>> from torchship.edge import export  # doctest: +SKIP
    >>> export(model, (x,)).save("model.tsp")  # doctest: +SKIP
    >>> from torchship.edge.runtime import load
    >>> load("model.tsp").run(x.numpy())  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["ExportError", "Program", "export"]


def __getattr__(name: str) -> Any:
    if name in ("export", "ExportError"):
        import importlib

        return getattr(importlib.import_module("torchship.edge.exporter"), name)
    if name == "Program":
        from torchship.edge.program import Program

        return Program
    raise AttributeError(f"module 'torchship.edge' has no attribute {name!r}")
