"""safe_open side by side with safetensors 0.8: framework and device spellings, the header
accessors, and ``get_slice`` with every index form a user writes.

For ``framework="pt"`` safetensors hands the index to torch, so torch eager indexing of the
whole tensor is the oracle (and the peer must agree with it). For ``"np"`` the peer's own
slicer refuses some valid Python slices (negative bounds, stops past the end, empty dims);
there numpy eager indexing is the oracle and the peer is compared where it answers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchship.weights import SafetensorError
from torchship.weights import torch as ours
from torchship.weights.reader import SliceError

peer = pytest.importorskip("safetensors.torch", reason="safetensors is the oracle (pip install '.[dev]')")
from safetensors import SafetensorError as PeerError  # noqa: E402
from safetensors import safe_open as peer_open  # noqa: E402

X = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
TENSORS = {"x": X, "b": torch.tensor([1, -2, 3], dtype=torch.int8), "s": torch.tensor(3.5),
           "e": torch.zeros(0, 2)}


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    p = tmp_path_factory.mktemp("parity") / "a.safetensors"
    peer.save_file(TENSORS, str(p), metadata={"format": "pt", "k": "v"})
    return p


@pytest.mark.parametrize("framework", ["pt", "torch", "np", "numpy"])
def test_framework_spellings_and_header_accessors(path, framework: str) -> None:
    with peer_open(str(path), framework=framework) as g, ours.safe_open(path, framework=framework) as f:
        assert f.keys() == g.keys()
        assert f.offset_keys() == g.offset_keys()
        assert f.metadata() == g.metadata()
        for key in g.keys():  # noqa: SIM118 - safe_open, not a dict
            mine, theirs = f.get_tensor(key), g.get_tensor(key)
            assert type(mine) is type(theirs)
            assert mine.dtype == theirs.dtype and tuple(mine.shape) == tuple(theirs.shape)
            assert (mine == theirs).all()
            assert f.get_slice(key).get_shape() == g.get_slice(key).get_shape()
            assert f.get_slice(key).get_dtype() == g.get_slice(key).get_dtype()


@pytest.mark.parametrize("framework", ["pt", "np"])
def test_device_none_means_cpu(path, framework: str) -> None:
    """safetensors takes ``device=None`` as the CPU (we used to refuse it)."""
    with peer_open(str(path), framework=framework, device=None) as g:
        expected = g.get_tensor("x")
    with ours.safe_open(path, framework=framework, device=None) as f:
        got = f.get_tensor("x")
    assert type(got) is type(expected) and (got == expected).all()
    assert sorted(ours.load_file(path, device=None)) == sorted(peer.load_file(str(path), device=None))


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_cpu_device_forms(path, device) -> None:
    with ours.safe_open(path, framework="pt", device=device) as f:
        assert f.get_tensor("x").device.type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", 0, torch.device("cuda")])
def test_cuda_without_cuda_is_refused_by_both(path, device) -> None:
    with pytest.raises(Exception):  # noqa: B017 - the peer raises RuntimeError or SafetensorError
        peer_open(str(path), framework="pt", device=device).get_tensor("x")
    with pytest.raises(SafetensorError, match="CUDA is not available") as info:
        ours.safe_open(path, framework="pt", device=device)
    assert str(path) in str(info.value)


def test_missing_tensor_and_missing_file(path, tmp_path) -> None:
    with peer_open(str(path), "pt") as g, ours.safe_open(path, "pt") as f:
        with pytest.raises(PeerError):
            g.get_tensor("nope")
        with pytest.raises(SafetensorError, match="no tensor named 'nope'"):
            f.get_tensor("nope")
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(FileNotFoundError):
        peer.load_file(str(missing))
    for call in (lambda: ours.load_file(missing), lambda: ours.safe_open(missing, "np")):
        with pytest.raises(FileNotFoundError, match="missing.safetensors") as info:
            call()
        assert isinstance(info.value, SafetensorError)


# ------------------------------------------------------------------------------- get_slice

BASIC = [
    0, -1, 1, (0, 1), (0, -1, -1), (slice(None),), slice(0, 1), slice(None, None, 2),
    slice(-1, None), slice(None, -1), slice(-5, 5), slice(3, 1), slice(0, 10**20),
    (0, slice(1, 100)), (Ellipsis,), (Ellipsis, 0), (0, Ellipsis), (0, Ellipsis, 1),
    (Ellipsis, slice(1, 3)), (slice(None), slice(None, None, 2), 1), (), np.int64(1),
    torch.tensor(1), (slice(torch.tensor(1), None),), (slice(None), -3), [], (slice(None), []),
    np.int32(-1), (slice(np.int64(1), None),), slice(None, None, np.int64(2)),
]
ADVANCED = [None, (None, 0), True, (Ellipsis, Ellipsis), [0, 1], torch.tensor([1, 0]),
            (slice(None), [2, 0]), X[:, :, 0] > 5, (0, None, slice(1, 3))]


def _peer_slice(path, framework: str, key: str, index):
    with peer_open(str(path), framework=framework) as g:
        return g.get_slice(key)[index]


def _our_slice(path, framework: str, key: str, index):
    with ours.safe_open(path, framework=framework) as f:
        return f.get_slice(key)[index]


@pytest.mark.parametrize("index", BASIC + ADVANCED, ids=repr)
def test_torch_slices_match_peer_and_eager(path, index) -> None:
    expected = X[index]
    theirs = _peer_slice(path, "pt", "x", index)
    mine = _our_slice(path, "pt", "x", index)
    assert torch.equal(theirs, expected)
    assert mine.dtype == expected.dtype and torch.equal(mine, expected)


def _plain(index):
    """The index with 0-d torch tensors as ints (how numpy and the peer read them)."""
    def one(item):
        if isinstance(item, torch.Tensor):
            return int(item)
        if isinstance(item, slice):
            return slice(*(one(p) if p is not None else None for p in (item.start, item.stop, item.step)))
        return item
    return tuple(one(i) for i in index) if isinstance(index, tuple) else one(index)


# Valid Python slices the peer's numpy slicer refuses (OverflowError or "out of bounds"):
# negative slice bounds, a stop past the end, an empty range. We follow eager numpy there.
PEER_NP_GAPS = {repr(i) for i in [slice(-1, None), slice(None, -1), slice(-5, 5), slice(3, 1),
                                  slice(0, 10**20), (0, slice(1, 100)), (slice(None), [])]}


@pytest.mark.parametrize("index", BASIC, ids=repr)
def test_numpy_slices_are_arrays_equal_to_eager(path, index) -> None:
    expected = np.asarray(X.numpy()[_plain(index)])
    mine = _our_slice(path, "np", "x", index)
    assert isinstance(mine, np.ndarray)  # never a numpy scalar: a 0-d array, as the peer returns
    assert mine.shape == expected.shape and np.array_equal(mine, expected)
    if repr(index) in PEER_NP_GAPS:
        with pytest.raises((PeerError, OverflowError)):
            _peer_slice(path, "np", "x", index)
        return
    theirs = _peer_slice(path, "np", "x", index)
    assert type(theirs) is type(mine) and theirs.shape == mine.shape and np.array_equal(theirs, mine)


@pytest.mark.parametrize("framework", ["pt", "np"])
@pytest.mark.parametrize("index", [(), Ellipsis, (Ellipsis,)], ids=repr)
def test_scalar_tensor_slices(path, framework: str, index) -> None:
    theirs = _peer_slice(path, framework, "s", index)
    mine = _our_slice(path, framework, "s", index)
    assert type(mine) is type(theirs) and mine.shape == theirs.shape and float(mine) == float(theirs)


@pytest.mark.parametrize(
    ("framework", "index", "peer_error"),
    [
        ("pt", 2, IndexError), ("pt", -3, IndexError), ("pt", (slice(None), 3), IndexError),
        ("pt", (0, 0, 0, 0), IndexError), ("pt", slice(None, None, -1), ValueError),
        ("pt", slice(0, 2, 0), ValueError), ("pt", 1.0, IndexError),
        ("np", 2, PeerError), ("np", -3, PeerError), ("np", (0, 0, 0, 0), PeerError),
        ("np", slice(None, None, -1), PeerError), ("np", (Ellipsis, Ellipsis), PeerError),
        ("np", None, PeerError), ("np", 1.0, PeerError),
    ],
    ids=repr,
)
def test_bad_indices_raise_what_the_peer_raises(path, framework: str, index, peer_error) -> None:
    """Our SliceError is a SafetensorError, an IndexError and a ValueError, so whatever the
    caller catches for the peer catches ours; the message names the tensor."""
    with pytest.raises(peer_error):
        _peer_slice(path, framework, "x", index)
    with pytest.raises(SafetensorError if peer_error is PeerError else peer_error) as info:
        _our_slice(path, framework, "x", index)
    assert isinstance(info.value, SliceError) and "tensor 'x'" in str(info.value)


@pytest.mark.parametrize("index", [slice(None), (slice(None), 1), slice(1, 5)], ids=repr)
def test_empty_tensor_slices_follow_eager_indexing(path, index) -> None:
    assert torch.equal(_our_slice(path, "pt", "e", index), TENSORS["e"][index])
    assert np.array_equal(_our_slice(path, "np", "e", index), TENSORS["e"].numpy()[index])


@pytest.mark.parametrize(
    "index", [[0, 5], list(range(1000)), torch.ones(5, dtype=torch.bool), (None, slice(None), 9)], ids=repr
)
def test_bad_torch_indices_name_the_tensor_in_a_short_message(path, index) -> None:
    """An index the peer hands to torch fails there; ours says which tensor, with the index
    abbreviated (a 1000-item list is not printed whole)."""
    with pytest.raises(IndexError):
        _peer_slice(path, "pt", "x", index)
    with pytest.raises(SliceError, match="tensor 'x': index ") as info:
        _our_slice(path, "pt", "x", index)
    assert len(str(info.value)) < 300
