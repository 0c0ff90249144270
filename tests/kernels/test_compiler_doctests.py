"""The docstring examples of the compiler's modules run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "torchship.kernels.config", "torchship.kernels.ir", "torchship.kernels.errors",
    "torchship.kernels.ops", "torchship.kernels.ops.pointwise", "torchship.kernels.ops.reduce",
    "torchship.kernels.ops.matmul", "torchship.kernels.ops.memory",
    "torchship.kernels.ops.create", "torchship.kernels.frontend.host",
    "torchship.kernels.frontend.captures", "torchship.kernels.frontend.calls",
    "torchship.kernels.frontend.funcs", "torchship.kernels.frontend.analysis",
    "torchship.kernels.frontend.compose",
    "torchship.kernels.frontend.device", "torchship.kernels.ops.scan", "torchship.kernels.specs",
    "torchship.kernels.backends.triton.indexing",
    "torchship.kernels.backends.triton.codegen", "torchship.kernels.backends.triton.launcher",
    "torchship.kernels.backends.triton.dispatch",
    "torchship.kernels.backends.triton.reductions",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
