"""The docstring examples of the weights modules run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["format", "writer", "reader", "numpy", "torch", "shards"] + [
    f"pickle.{m}" for m in ("allowlist", "vm", "containers", "zipcontainer", "rebuild", "convert", "scan", "values", "decoder")
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(f"torchship.weights.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module.__name__}"
    assert result.attempted > 0
