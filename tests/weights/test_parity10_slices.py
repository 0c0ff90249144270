"""``safe_open(...).get_slice(name)[index]`` on every dtype, side by side with safetensors 0.8
and checked against eager indexing of the tensor that was saved.

torch (``framework="pt"``): every dtype matches the peer bit for bit and torch's own indexing,
except F4 (``float4_e2m1fn_x2``), where the peer fails ("shape '[4, 5, 12]' is invalid") and we
return what torch's indexing of the saved tensor returns. numpy (``framework="np"``): the peer
fails on the float8 dtypes and F4 (numpy has no such attribute) and on slice bounds past the end
or negative starts; we return what numpy's indexing returns (F4 unpacked to ``float4_e2m1fn``,
two values per byte, the low nibble first).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch

from torchship.weights import safe_open

peer = pytest.importorskip("safetensors", reason="safetensors is the peer oracle (pip install '.[dev]')")
import safetensors.torch as peer_pt  # noqa: E402

DTYPES = [
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.uint16, torch.float16, torch.bfloat16, torch.int32,
    torch.uint32, torch.float32, torch.complex64, torch.float64, torch.int64, torch.uint64, torch.float8_e4m3fn,
    torch.float8_e5m2, torch.float8_e8m0fnu, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz, torch.float4_e2m1fn_x2,
]
INDICES = [
    (), 0, -1, slice(1, 3), (slice(None), 2), (..., -1), (1, slice(None, None, 2), slice(1, None)), (0, 0, 0),
    (slice(0, 0),), (slice(2, 9),), (slice(-3, None),), (Ellipsis,), (-1, ..., slice(4, None)),
]
E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
"""float4_e2m1fn values of the nibbles 0..7 (8..15: the same, negated), from the OCP MX spec."""


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(10)
    out = {}
    for dtype in DTYPES:
        if dtype == torch.bool:
            value = torch.randint(0, 2, (120,), generator=gen).bool()
        elif dtype.itemsize == 1:  # float8/float4 and the 8-bit ints: every bit pattern
            value = torch.randint(0, 256, (120,), dtype=torch.uint8, generator=gen).view(dtype)
        elif dtype.is_floating_point or dtype.is_complex:
            value = (torch.randn(120, generator=gen, dtype=torch.float64) * 50).to(dtype)
        else:
            value = torch.randint(0, 1000, (120,), generator=gen).to(dtype)
        out[_name(dtype)] = value.reshape(4, 5, 6)
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[str, dict[str, torch.Tensor]]:
    tensors = _tensors()
    path = str(tmp_path_factory.mktemp("slices") / "all.safetensors")
    peer_pt.save_file(tensors, path)
    return path, tensors


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def _same_torch(a: torch.Tensor, b: torch.Tensor) -> bool:
    return type(a) is type(b) is torch.Tensor and a.dtype == b.dtype and a.shape == b.shape and \
        torch.equal(_bits(a), _bits(b))


@pytest.mark.parametrize("dtype", DTYPES, ids=_name)
def test_torch_slices_match_the_peer_and_eager_indexing(saved, dtype) -> None:
    path, tensors = saved
    key = _name(dtype)
    with peer.safe_open(path, framework="pt") as theirs, safe_open(path, framework="pt") as mine:
        for index in INDICES:
            got = mine.get_slice(key)[index]
            assert _same_torch(got, tensors[key][index]), (key, index)
            try:
                expected = theirs.get_slice(key)[index]
            except RuntimeError as exc:  # the peer's F4 bug: it views the packed bytes unhalved
                assert dtype == torch.float4_e2m1fn_x2 and "is invalid for input of size" in str(exc)
                continue
            assert _same_torch(got, expected), (key, index)
        assert _same_torch(mine.get_tensor(key), tensors[key])


def _numpy_reference(tensor: torch.Tensor) -> np.ndarray:
    """The saved tensor as numpy reads it: the same bytes as the ml_dtypes type (F4 decoded to
    values through the E2M1 table, independently of the reader's nibble unpacking)."""
    raw = _bits(tensor).numpy()
    if tensor.dtype == torch.float4_e2m1fn_x2:
        nibbles = np.stack([raw & 0x0F, raw >> 4], axis=-1).reshape(*tensor.shape[:-1], -1)
        values = np.where(nibbles & 8, -1.0, 1.0) * np.array(E2M1)[nibbles & 7]
        return values.astype(ml_dtypes.float4_e2m1fn)
    name = _name(tensor.dtype)
    dtype = np.dtype(getattr(ml_dtypes, name)) if hasattr(ml_dtypes, name) else np.dtype(name)
    return raw.view(dtype).reshape(tensor.shape)


def _peer_may_fail(dtype: torch.dtype, index) -> bool:
    """The peer's numpy reader fails on float8/float4 (no such numpy attribute) and on slice
    bounds past the end or negative (documented in docs/format.md)."""
    items = index if isinstance(index, tuple) else (index,)
    out_of_range = any(isinstance(i, slice) and (i.stop or 0) > 5 or isinstance(i, slice) and (i.start or 0) < 0
                       for i in items)
    return dtype.itemsize == 1 and dtype.is_floating_point or out_of_range


@pytest.mark.parametrize("dtype", DTYPES, ids=_name)
def test_numpy_slices_match_the_peer_and_numpy_indexing(saved, dtype) -> None:
    path, tensors = saved
    key = _name(dtype)
    reference = _numpy_reference(tensors[key])
    with peer.safe_open(path, framework="np") as theirs, safe_open(path, framework="np") as mine:
        for index in INDICES:
            got = mine.get_slice(key)[index]
            want = np.asarray(reference[index])
            assert type(got) is np.ndarray and got.dtype == want.dtype and got.shape == want.shape, (key, index)
            assert got.tobytes() == want.tobytes(), (key, index)
            try:
                expected = theirs.get_slice(key)[index]
            except Exception:
                assert _peer_may_fail(dtype, index), (key, index)
                continue
            assert type(expected) is np.ndarray and expected.dtype == got.dtype, (key, index)
            assert expected.tobytes() == got.tobytes() and expected.shape == got.shape, (key, index)
        whole = mine.get_tensor(key)
        assert whole.dtype == reference.dtype and whole.tobytes() == reference.tobytes()
