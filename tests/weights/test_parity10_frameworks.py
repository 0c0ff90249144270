"""``safe_open(framework="flax"|"jax"|"tf"|"tensorflow"|"mlx"|"paddle")``, side by side with
safetensors 0.8.

None of these frameworks is installed here. Without one, both libraries open the file (keys and
metadata read), and the first tensor read raises a ``ModuleNotFoundError`` (ours: the adapter's
``FrameworkMissingError``, which is one); paddle is refused at open by both. With a stand-in
framework module (an array type wrapping a numpy copy, which is all the peer calls:
``jax.numpy.array``, ``tensorflow.convert_to_tensor``, ``mlx.core.array``) both libraries
return that framework's arrays, with the same values, for ``get_tensor`` and ``get_slice``.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.weights.test_parity8_frameworks import ADAPTERS, _Array, _installed, _stand_in
from torchship.weights import safe_open
from torchship.weights.format import SafetensorError
from torchship.weights.frameworks import FrameworkMissingError

peer = pytest.importorskip("safetensors", reason="safetensors is the peer oracle (pip install '.[dev]')")
import safetensors.numpy as peer_np  # noqa: E402

NAMES = {"flax": "flax", "jax": "flax", "tf": "tensorflow", "tensorflow": "tensorflow", "mlx": "mlx"}
"""``framework=`` spellings the peer accepts -> the torchship adapter that serves them."""


@pytest.fixture
def path(tmp_path) -> str:
    import ml_dtypes

    arrays = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4) / 7, "ids": np.arange(5, dtype=np.int64),
        "bf": (np.arange(6) - 2.5).astype(ml_dtypes.bfloat16).reshape(2, 3), "flag": np.array([True, False]),
        "c": (np.arange(4) + 1j).astype(np.complex64), "s": np.array(3.5, dtype=np.float16),
    }
    file = str(tmp_path / "m.safetensors")
    peer_np.save_file(arrays, file, metadata={"format": "np"})
    return file


def _skip_if_installed(adapter: str) -> None:
    if _installed(ADAPTERS[adapter][0]):
        pytest.skip(f"{ADAPTERS[adapter][0]} is installed; this checks the missing-framework path")


@pytest.mark.parametrize("name", list(NAMES))
def test_without_the_framework_headers_read_and_tensors_raise_module_not_found(name, path, monkeypatch) -> None:
    adapter = NAMES[name]
    _skip_if_installed(adapter)
    monkeypatch.delitem(sys.modules, f"torchship.weights.{adapter}", raising=False)
    theirs, mine = peer.safe_open(path, framework=name), safe_open(path, framework=name)
    assert mine.keys() == sorted(theirs.keys()) and mine.metadata() == theirs.metadata()
    assert mine.get_slice("w").get_shape() == theirs.get_slice("w").get_shape()
    reads = {"get_tensor": lambda f: f.get_tensor("w"), "get_slice": lambda f: f.get_slice("w")[1:]}
    for what, read in reads.items():
        with pytest.raises(ModuleNotFoundError):
            read(theirs)
        with pytest.raises(FrameworkMissingError) as info:
            read(mine)
        assert isinstance(info.value, ModuleNotFoundError) and isinstance(info.value, SafetensorError), what
        assert f"torchship.weights.{adapter} needs {ADAPTERS[adapter][0]}" in str(info.value)
    with pytest.raises(FrameworkMissingError):
        mine.get_tensors()


def test_paddle_is_refused_at_open_by_both(path) -> None:
    if _installed("paddle"):
        pytest.skip("paddle is installed")
    with pytest.raises(ModuleNotFoundError):
        peer.safe_open(path, framework="paddle")
    with pytest.raises(FrameworkMissingError, match="torchship.weights.paddle is not offered"):
        safe_open(path, framework="paddle")


@pytest.mark.parametrize("name", list(NAMES))
def test_with_the_framework_both_return_its_arrays_with_the_same_values(name, path, monkeypatch) -> None:
    adapter = NAMES[name]
    _skip_if_installed(adapter)
    _stand_in(monkeypatch, adapter)
    theirs, mine = peer.safe_open(path, framework=name), safe_open(path, framework=name)
    reference = peer_np.load_file(path)
    indices = {"w": (slice(1, None), slice(None, None, 2)), "ids": -1, "bf": (..., 1), "flag": slice(None),
               "c": slice(1, 3), "s": ()}
    for key in indices:
        expected = {"tensor": theirs.get_tensor(key), "slice": theirs.get_slice(key)[indices[key]]}
        got = {"tensor": mine.get_tensor(key), "slice": mine.get_slice(key)[indices[key]]}
        for what in expected:
            assert isinstance(got[what], _Array) and isinstance(expected[what], _Array), (key, what)
            assert got[what].value.dtype == expected[what].value.dtype, (key, what)
            np.testing.assert_array_equal(got[what].value, expected[what].value)
        np.testing.assert_array_equal(got["tensor"].value, reference[key])  # and the numpy reading
    everything = mine.get_tensors()
    assert sorted(everything) == sorted(reference)
    assert all(isinstance(v, _Array) and np.array_equal(v.value, reference[k]) for k, v in everything.items())


@pytest.mark.parametrize("device", ["cpu", None])
def test_cpu_is_the_only_device_for_these_frameworks(device, path, monkeypatch) -> None:
    _stand_in(monkeypatch, "flax")
    assert isinstance(safe_open(path, framework="jax", device=device).get_tensor("ids"), _Array)
    assert isinstance(peer.safe_open(path, framework="jax", device=device).get_tensor("ids"), _Array)


@pytest.mark.parametrize("name", list(NAMES))
@pytest.mark.parametrize("device", ["cuda", "cuda:1", 0, "npu", "meta", "cpu:0"])
def test_other_devices_are_refused_at_open_by_both(name, device, path) -> None:
    with pytest.raises(peer.SafetensorError):
        peer.safe_open(path, framework=name, device=device)
    with pytest.raises(SafetensorError, match="CPU only"):
        safe_open(path, framework=name, device=device)


@pytest.mark.parametrize("name", ["jnp", "keras", "tensorflow ", "paddlepaddle", ""])
def test_unknown_framework_names_are_refused_by_both(name, path) -> None:
    with pytest.raises(peer.SafetensorError):
        peer.safe_open(path, framework=name)
    with pytest.raises(SafetensorError, match="is not supported"):
        safe_open(path, framework=name)
