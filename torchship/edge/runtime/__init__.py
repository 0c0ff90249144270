"""torchship.edge.runtime: run program files with numpy only (no torch import anywhere here).

Example:
    >>> from torchship.edge.runtime import load
    >>> prog = load("model.tsp")  # doctest: +SKIP
    >>> y = prog.run(x)  # doctest: +SKIP
"""

from __future__ import annotations

from torchship.edge.runtime.dims import ProgramError
from torchship.edge.runtime.program import Method, Program, load, loads

__all__ = ["Method", "Program", "ProgramError", "load", "loads"]
