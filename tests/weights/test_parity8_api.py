"""Remaining ``safe_open`` differences found by calling both libraries the same way: a slice
outlives its handle, and bad argument types, directories and closed handles raise what the
peer raises (ours also a ``SafetensorError``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchship.weights import torch as ours
from torchship.weights.format import SafetensorError

peer_pt = pytest.importorskip("safetensors.torch", reason="safetensors is the peer oracle (pip install '.[dev]')")
import safetensors  # noqa: E402


@pytest.fixture
def path(tmp_path) -> str:
    p = str(tmp_path / "a.safetensors")
    peer_pt.save_file({"a": torch.arange(12.0).reshape(3, 4), "b": torch.zeros(0)}, p, {"k": "v"})
    return p


@pytest.mark.parametrize("framework", ["pt", "np"])
def test_a_slice_keeps_reading_after_its_handle_closes(path, framework) -> None:
    slices = []
    for module in (safetensors, ours):
        with module.safe_open(path, framework) as f:
            s = f.get_slice("a")
        slices.append(s)
    for index in (slice(1, None), (slice(None), 2), 0, Ellipsis):
        theirs, mine = (np.asarray(s[index]) for s in slices)
        np.testing.assert_array_equal(mine, theirs)


def _calls(module, path: str, directory: str) -> dict:
    return {
        "framework None": lambda: module.safe_open(path, None),
        "framework an int": lambda: module.safe_open(path, 1),
        "tensor name an int": lambda: module.safe_open(path, "pt").get_tensor(1),
        "slice name an int": lambda: module.safe_open(path, "pt").get_slice(1),
        "a directory": lambda: module.safe_open(directory, "pt"),
        "missing file": lambda: module.safe_open(directory + "/missing.safetensors", "pt"),
        "tensor after close": lambda: _closed(module, path).get_tensor("a"),
        "tensors after close": lambda: _closed(module, path).get_tensors(),
        "slice after close": lambda: _closed(module, path).get_slice("a"),
    }


def _closed(module, path: str):
    f = module.safe_open(path, "pt")
    f.__enter__()
    f.__exit__(None, None, None)
    return f


def test_bad_calls_raise_the_peers_exception_type(path, tmp_path) -> None:
    theirs = _calls(safetensors, path, str(tmp_path))
    mine = _calls(ours, path, str(tmp_path))
    for case, call in theirs.items():
        with pytest.raises(Exception) as peer_exc:
            call()
        with pytest.raises(SafetensorError) as our_exc:
            mine[case]()
        kind = type(peer_exc.value)
        if kind is not safetensors.SafetensorError:  # a builtin: ours is that type too
            assert isinstance(our_exc.value, kind), (case, kind, our_exc.value)


def test_header_stays_readable_after_close(path) -> None:
    """Deliberate: keys() and metadata() read the parsed header, not the file; the peer raises."""
    with pytest.raises(safetensors.SafetensorError, match="closed"):
        _closed(safetensors, path).keys()
    f = _closed(ours, path)
    assert f.keys() == ["a", "b"] and f.metadata() == {"k": "v"} and f.offset_keys() == ["a", "b"]
