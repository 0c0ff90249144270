"""Triton backend: Tile IR + Config -> readable Triton source -> compiled launcher."""

from __future__ import annotations

from torchship.kernels.backends.triton.codegen import TritonCodegen
from torchship.kernels.backends.triton.launcher import CompiledLaunch, compile_launch

__all__ = ["CompiledLaunch", "TritonCodegen", "compile_launch"]
