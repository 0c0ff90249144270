"""The framework adapters and the ``backend=`` argument, side by side with safetensors 0.8.

jax, mlx, tensorflow and paddle are not installed here: importing an adapter is a clear
``FrameworkMissingError`` (also the ``ModuleNotFoundError`` the peer raises). The flax, mlx and
tensorflow adapters are then exercised with a stand-in framework module whose array type wraps
a numpy copy, which is all the peer's adapters use (``jnp.array``, ``mx.array``,
``tf.convert_to_tensor``, ``np.asarray``, ``.numpy()``).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types

import numpy as np
import pytest
import torch

from torchship.weights import numpy as our_np
from torchship.weights import torch as our_pt
from torchship.weights.format import SafetensorError
from torchship.weights.frameworks import FrameworkMissingError

peer = pytest.importorskip("safetensors", reason="safetensors is the peer oracle (pip install '.[dev]')")
import safetensors.numpy as peer_np  # noqa: E402
import safetensors.torch as peer_pt  # noqa: E402

ADAPTERS = {"flax": ("jax.numpy", "jax"), "mlx": ("mlx.core", "mlx"), "tensorflow": ("tensorflow", "tensorflow")}


def _installed(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("adapter", [*ADAPTERS, "paddle"])
def test_adapter_without_its_framework_is_a_clear_import_error(adapter, monkeypatch) -> None:
    module, install = ADAPTERS.get(adapter, ("paddle", "paddle"))
    if _installed(module):
        pytest.skip(f"{module} is installed")
    monkeypatch.delitem(sys.modules, f"torchship.weights.{adapter}", raising=False)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"safetensors.{adapter}")
    with pytest.raises(FrameworkMissingError) as info:
        importlib.import_module(f"torchship.weights.{adapter}")
    assert isinstance(info.value, SafetensorError) and isinstance(info.value, ModuleNotFoundError)
    message = str(info.value)
    assert f"torchship.weights.{adapter}" in message and "torchship.weights.numpy" in message
    if adapter != "paddle":
        assert f"needs {module}" in message and f"pip install {install}" in message


class _Array:
    """A stand-in framework array: owns a numpy copy; ``np.asarray`` and ``.numpy()`` read it."""

    def __init__(self, value) -> None:
        self.value = np.array(value)

    def __array__(self, dtype=None, copy=None):
        return self.value if dtype is None else self.value.astype(dtype)

    def numpy(self):
        return self.value


def _stand_in(monkeypatch, adapter: str) -> types.ModuleType:
    module, _ = ADAPTERS[adapter]
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        fake = types.ModuleType(".".join(parts[:i]))
        fake.array = fake.convert_to_tensor = _Array
        monkeypatch.setitem(sys.modules, fake.__name__, fake)
        if i > 1:
            setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], fake)
    monkeypatch.delitem(sys.modules, f"torchship.weights.{adapter}", raising=False)
    return importlib.import_module(f"torchship.weights.{adapter}")


def _arrays() -> dict[str, np.ndarray]:
    import ml_dtypes

    rng = np.random.default_rng(0)
    return {"w": rng.standard_normal((3, 4)).astype(np.float32), "ids": np.arange(5, dtype=np.int64),
            "bf": rng.standard_normal(6).astype(ml_dtypes.bfloat16), "flag": np.array(True)}


@pytest.mark.parametrize("adapter", list(ADAPTERS))
def test_adapter_saves_the_numpy_bytes_and_loads_framework_arrays(adapter, tmp_path, monkeypatch) -> None:
    if _installed(ADAPTERS[adapter][0]):
        pytest.skip("the real framework is installed; the stand-in would shadow it")
    ours = _stand_in(monkeypatch, adapter)
    arrays = _arrays()
    framework_dict = {k: _Array(v) for k, v in arrays.items()}
    blob = ours.save(framework_dict, metadata={"format": adapter})
    assert blob == peer_np.save(arrays, metadata={"format": adapter})
    assert all(isinstance(v, _Array) for v in framework_dict.values())  # the caller's dict is untouched
    for loaded in (ours.load(blob), ours.load_file(_write(tmp_path, blob), backend="pread")):
        assert set(loaded) == set(arrays)
        for key, array in arrays.items():
            assert isinstance(loaded[key], _Array)
            np.testing.assert_array_equal(loaded[key].value, array)
            assert loaded[key].value.dtype == array.dtype
    ours.save_file(framework_dict, tmp_path / "f.safetensors")
    assert (tmp_path / "f.safetensors").read_bytes() == peer_np.save(arrays)
    with pytest.raises(SafetensorError, match='backend "MMAP" is invalid'):
        ours.load_file(tmp_path / "f.safetensors", backend="MMAP")


def _write(tmp_path, blob: bytes):
    path = tmp_path / "blob.safetensors"
    path.write_bytes(blob)
    return path


def _backend_calls(module_np, module_pt, open_fn, path: str, backend):
    return {
        "safe_open": lambda: open_fn(path, framework="pt", backend=backend).get_tensor("a"),
        "numpy load_file": lambda: module_np.load_file(path, backend=backend),
        "torch load_file": lambda: module_pt.load_file(path, backend=backend),
        "load_model": lambda: module_pt.load_model(torch.nn.Linear(2, 2, bias=False), path, strict=False, backend=backend),
    }


@pytest.mark.parametrize("backend", ["mmap", "pread", "MMAP", "", None, 1])
def test_backend_argument_like_the_peer(backend, tmp_path) -> None:
    path = str(tmp_path / "a.safetensors")
    peer_pt.save_file({"a": torch.arange(4.0), "weight": torch.ones(2, 2)}, path)
    theirs = _backend_calls(peer_np, peer_pt, peer.safe_open, path, backend)
    mine = _backend_calls(our_np, our_pt, our_pt.safe_open, path, backend)
    for case, call in theirs.items():
        try:
            expected = call()
        except Exception as exc:  # the peer refuses: we refuse with its exception type
            kind = TypeError if isinstance(exc, TypeError) else SafetensorError
            with pytest.raises(kind):
                mine[case]()
            continue
        got = mine[case]()
        if isinstance(expected, dict):
            assert {k: np.asarray(v).tolist() for k, v in got.items()} == \
                {k: np.asarray(v).tolist() for k, v in expected.items()}, case
        elif isinstance(expected, torch.Tensor):
            assert torch.equal(got, expected), case
        else:
            assert sorted(got[0]) == sorted(expected[0]) and sorted(got[1]) == sorted(expected[1]), case


@pytest.mark.parametrize("pair", [(peer_pt, our_pt), (peer_np, our_np)], ids=["torch", "numpy"])
def test_every_peer_parameter_is_accepted_with_its_default(pair) -> None:
    """A call written for the peer (by keyword or position) binds the same way to ours."""
    theirs, mine = pair
    for name in ("save", "save_file", "load", "load_file", "save_model", "load_model"):
        if not hasattr(theirs, name):
            continue
        peer_params = inspect.signature(getattr(theirs, name)).parameters
        our_params = inspect.signature(getattr(mine, name)).parameters
        for i, (pname, p) in enumerate(peer_params.items()):
            assert pname in our_params, (name, pname)
            q = our_params[pname]
            assert q.default == p.default, (name, pname, q.default, p.default)
            assert (q.kind == q.KEYWORD_ONLY) == (p.kind == p.KEYWORD_ONLY), (name, pname)
            if p.kind != p.KEYWORD_ONLY:
                assert list(our_params).index(pname) == i, (name, pname)
    assert set(inspect.signature(peer.safe_open).parameters) <= set(inspect.signature(our_pt.safe_open).parameters)


def test_docstring_examples() -> None:
    import doctest

    from torchship.weights import frameworks

    result = doctest.testmod(frameworks, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
