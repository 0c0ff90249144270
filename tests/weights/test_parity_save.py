"""Saving side by side with safetensors 0.8: bytes written, what is refused and with which
exception type, ``load(bytes)``, ``save_model``/``load_model``.

Where the peer is deterministic our bytes must be identical. Where the peer writes wrong values
(a negative-bit view) or refuses valid input (non-contiguous tensors), eager torch is the oracle.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from torchship.weights import SafetensorError
from torchship.weights import numpy as ours_np
from torchship.weights import torch as ours

peer = pytest.importorskip("safetensors.torch", reason="safetensors is the oracle (pip install '.[dev]')")
import safetensors.numpy as peer_np  # noqa: E402

DTYPES = ["float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
          "bool", "uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
          "float8_e5m2fnuz", "float8_e8m0fnu", "complex64"]


def _sample(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    n = int(np.prod(shape))
    return ((torch.arange(n) % 5) + 1).to(dtype).reshape(shape)


@pytest.mark.parametrize("name", DTYPES)
def test_every_shared_dtype_is_byte_identical_and_cross_readable(name: str) -> None:
    dtype = getattr(torch, name)
    tensors = {"w": _sample(dtype, (2, 3)), "s": _sample(dtype, ()), "e": _sample(dtype, (0, 4))}
    blob = ours.save(tensors, metadata={"format": "pt"})
    assert blob == peer.save(tensors, metadata={"format": "pt"})
    # safetensors 0.8's torch loader has no F8_E8M0 entry (KeyError); we read it
    readers = [ours.load] + ([peer.load] if name != "float8_e8m0fnu" else [])
    for loaded in (read(blob) for read in readers):
        for key, t in tensors.items():
            assert loaded[key].dtype == dtype and loaded[key].shape == t.shape
            assert torch.equal(loaded[key].reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8))


def test_float4_packed_pairs_are_byte_identical() -> None:
    """torch.float4_e2m1fn_x2 (two F4 values a byte): the header's last dim is doubled by both;
    the peer's torch loader has no F4 entry (KeyError), ours reads it back bit for bit."""
    t = torch.arange(6, dtype=torch.uint8).view(torch.float4_e2m1fn_x2).reshape(2, 3)
    blob = ours.save({"f": t})
    assert blob == peer.save({"f": t}) and b'"shape":[2,6]' in blob
    back = ours.load(blob)["f"]
    assert back.dtype == t.dtype and torch.equal(back.view(torch.uint8), t.view(torch.uint8))


def test_empty_dict_zero_d_and_zero_size_files(tmp_path) -> None:
    cases = [{}, {"s": torch.tensor(1.5)}, {"e": torch.zeros(0, 3), "f": torch.zeros(3, 0, dtype=torch.int8)}]
    for i, tensors in enumerate(cases):
        a, b = tmp_path / f"ours{i}.safetensors", tmp_path / f"peer{i}.safetensors"
        ours.save_file(tensors, a)
        peer.save_file(tensors, str(b))
        assert a.read_bytes() == b.read_bytes()
        assert {k: v.shape for k, v in ours.load_file(a).items()} == {k: v.shape for k, v in tensors.items()}


@pytest.mark.parametrize("data", [bytes, bytearray, memoryview], ids=lambda t: t.__name__)
def test_load_bytes_round_trip(data) -> None:
    tensors = {"x": torch.randn(3, 4), "y": torch.ones(2, dtype=torch.bfloat16)}
    blob = peer.save(tensors, metadata={"k": "v"})
    loaded = ours.load(data(blob))
    assert sorted(loaded) == sorted(tensors)
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert ours.save(loaded, metadata={"k": "v"}) == blob


# ------------------------------------------------------------------------ what is refused

@pytest.mark.parametrize(
    ("tensors", "metadata", "peer_error", "fragment"),
    [
        ({"x": torch.ones(2)}, {"a": 1}, TypeError, "metadata must map str to str, got 'a': int"),
        ({"x": torch.ones(2)}, {"a": None}, TypeError, "got 'a': NoneType"),
        ({"x": torch.ones(2)}, {1: "a"}, TypeError, "metadata must map str to str"),
        ({"x": torch.ones(2)}, "abc", TypeError, "metadata must be a mapping"),
        ({1: torch.ones(2)}, None, TypeError, "tensor name 1 must be a str"),
        ({"a": np.zeros(3)}, None, ValueError, "tensor 'a': expected a torch.Tensor, got ndarray"),
        ([("a", torch.ones(2))], None, ValueError, "expected a dict of str -> torch.Tensor, got list"),
        ({"s": torch.eye(2).to_sparse()}, None, ValueError, "tensor 's': torch.sparse_coo tensors"),
        ({"c": torch.ones(2, dtype=torch.complex128)}, None, Exception, "torch.complex128 has no safetensors"),
    ],
    ids=["int-value", "none-value", "int-key", "str-metadata", "int-name", "numpy-value", "list",
         "sparse", "complex128"],
)
def test_refusals_raise_the_peers_exception_type(tmp_path, tensors, metadata, peer_error, fragment) -> None:
    """Our errors are SafetensorErrors that are also the builtin type the peer raises, so a
    caller's ``except TypeError`` / ``except ValueError`` keeps working; nothing is written."""
    with pytest.raises(peer_error):
        peer.save(tensors, metadata=metadata)
    target = tmp_path / "x.safetensors"
    for call in (lambda: ours.save(tensors, metadata=metadata), lambda: ours.save_file(tensors, target, metadata)):
        with pytest.raises(peer_error, match=fragment) as info:
            call()
        assert isinstance(info.value, SafetensorError)
    assert list(tmp_path.iterdir()) == []


def test_load_of_a_non_bytes_value_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        peer.load("abc")
    with pytest.raises(TypeError, match="expected bytes, got str"):
        ours.load("abc")


def test_numpy_refusals() -> None:
    with pytest.raises(TypeError):
        peer_np.save({"a": np.ones(2)}, metadata={"a": 1})
    with pytest.raises(TypeError, match="metadata must map str to str"):
        ours_np.save({"a": np.ones(2)}, metadata={"a": 1})
    with pytest.raises(ValueError, match="tensor 'a': expected a numpy.ndarray, got list"):
        ours_np.save({"a": [1, 2]})  # the peer fails with an AttributeError here
    # a numpy scalar is saved as the 0-d array it is (the peer crashes on .ctypes)
    assert ours_np.save({"a": np.float32(2.5)}) == peer_np.save({"a": np.array(2.5, np.float32)})


@pytest.mark.parametrize(
    "make",
    [lambda x: {"a": x, "b": x}, lambda x: {"a": x, "b": x[1]}, lambda x: {"a": x[:2], "b": x.view(-1)[4:9]}],
    ids=["same", "row-view", "overlap"],
)
def test_shared_storage_refused_like_the_peer(make) -> None:
    tensors = make(torch.arange(12.0).reshape(3, 4))
    with pytest.raises(RuntimeError, match="share memory"):
        peer.save(tensors)
    with pytest.raises(RuntimeError, match="share memory"):
        ours.save(tensors)


def test_disjoint_views_of_one_storage_are_saved_by_both() -> None:
    x = torch.arange(12.0).reshape(3, 4)
    tensors = {"a": x[0], "b": x[1]}
    assert ours.save(tensors) == peer.save(tensors)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.arange(8.0)[::4][:1],  # contiguous, but stride 4 on its size-1 dim
        lambda: torch.arange(8.0).reshape(4, 2)[1:2, :1],
        lambda: torch.tensor([1 + 2j], dtype=torch.complex64).conj().imag,  # negative-bit view
        lambda: torch.arange(12.0).reshape(3, 4).t(),
        lambda: torch.arange(12.0).reshape(3, 4)[:, ::2],
        lambda: torch.zeros(1, 3).expand(4, 3),
        lambda: torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64).conj(),
    ],
    ids=["size1-stride4", "size1-2d", "neg-view", "transpose", "step", "expand", "conj"],
)
def test_views_are_saved_with_their_eager_values(make) -> None:
    """The first case used to crash our writer (``view(torch.uint8)`` on stride 4). The peer
    refuses non-contiguous tensors and writes conj/neg views without resolving them."""
    t = make()
    loaded = ours.load(ours.save({"t": t}))["t"]
    assert loaded.shape == t.shape and torch.equal(loaded, t.resolve_conj().resolve_neg())
    assert ours.save({"t": t}) == peer.save({"t": t.resolve_conj().resolve_neg().contiguous()})


# ------------------------------------------------------------------- save_model / load_model

class Tied(nn.Module):
    def __init__(self, extra: bool = False, tie: bool = True) -> None:
        super().__init__()
        self.a = nn.Linear(2, 3)
        self.b = nn.Linear(2, 3)
        if tie:
            self.b.weight = self.a.weight
        if extra:
            self.c = nn.Linear(3, 1)
        self.register_buffer("buf", torch.ones(2))


def test_save_model_matches_the_peer(tmp_path) -> None:
    """Same tensors, same metadata (tied name -> kept name); the bytes differ only in the order
    of the metadata keys, which the peer writes in hash-map order (see docs/format.md)."""
    model = Tied()
    ours.save_model(model, tmp_path / "o.safetensors", metadata={"x": "y"})
    peer.save_model(model, str(tmp_path / "p.safetensors"), metadata={"x": "y"})
    with ours.safe_open(tmp_path / "o.safetensors", "pt") as f, ours.safe_open(tmp_path / "p.safetensors", "pt") as g:
        assert f.keys() == g.keys() and f.metadata() == g.metadata() == {"x": "y", "b.weight": "a.weight"}
        assert all(torch.equal(f.get_tensor(k), g.get_tensor(k)) for k in f.keys())  # noqa: SIM118


@pytest.mark.parametrize(
    "make", [Tied, lambda: Tied(tie=False), lambda: Tied(extra=True), lambda: nn.Linear(2, 3)],
    ids=["same", "untied", "extra", "other"],
)
@pytest.mark.parametrize("strict", [True, False])
def test_load_model_missing_and_unexpected_like_the_peer(tmp_path, make, strict: bool) -> None:
    path = tmp_path / "m.safetensors"
    peer.save_model(Tied(), str(path))
    try:
        theirs = peer.load_model(make(), str(path), strict=strict)
    except RuntimeError:
        with pytest.raises(RuntimeError, match="Error\\(s\\) in loading state_dict"):
            ours.load_model(make(), path, strict=strict)
        return
    missing, unexpected = ours.load_model(make(), path, strict=strict)
    assert sorted(missing) == sorted(theirs[0]) and sorted(unexpected) == sorted(theirs[1])


def test_public_names_of_the_peer_modules() -> None:
    """Every public function of safetensors.torch / safetensors.numpy that code imports by name
    exists here, except the low-level dict-of-bytes API (serialize/deserialize), see the docs."""
    low_level = {"serialize", "serialize_file", "deserialize", "TensorSpec"}
    for theirs, mine in ((peer, ours), (peer_np, ours_np)):
        names = {n for n, v in vars(theirs).items()
                 if not n.startswith("_") and callable(v) and getattr(v, "__module__", "").startswith("safetensors")}
        assert names - low_level <= set(dir(mine)), names - low_level - set(dir(mine))


@pytest.mark.parametrize("make", [lambda: torch.zeros(4), lambda: torch.zeros(4)[2:], lambda: torch.empty(3, device="meta"),
                                  lambda: torch.zeros(0), lambda: torch.zeros(2, 3).t()])
def test_storage_ptr_and_size_match_the_peer(make) -> None:
    t = make()
    assert ours.storage_size(t) == peer.storage_size(t)
    assert (ours.storage_ptr(t) == 0) == (peer.storage_ptr(t) == 0)
    assert ours.storage_ptr(t) == t.untyped_storage().data_ptr()
