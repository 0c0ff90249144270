"""Property test: random byte mutations of a valid file only ever raise SafetensorError.

A mutated blob is either rejected with SafetensorError, or accepted and then every tensor loads
(numpy and torch). Whatever we accept, safetensors 0.8 accepts too (we are never looser).
"""

from __future__ import annotations

import numpy as np
import safetensors
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchship.weights import numpy as ours_np
from torchship.weights import torch as ours_pt
from torchship.weights.format import SafetensorError, parse_header

VALID = ours_np.save(
    {
        "embed.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
        "bias": np.arange(3, dtype=np.int16),
        "flag": np.array(True),
        "empty": np.zeros((0, 2), np.float64),
    },
    metadata={"format": "np"},
)
HEADER_END = 8 + int.from_bytes(VALID[:8], "little")

mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, len(VALID) - 1), st.integers(0, 255)),
    st.tuples(st.just("set_header"), st.integers(0, HEADER_END - 1), st.sampled_from(b'{}[]",:0123456789-e.+ \\"aZ\x00\xff')),
    st.tuples(st.just("insert"), st.integers(0, len(VALID)), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, len(VALID) - 1), st.just(0)),
    st.tuples(st.just("truncate"), st.integers(0, len(VALID) - 1), st.just(0)),
)


def _apply(blob: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(blob)
    for kind, pos, value in mutations:
        pos = min(pos, len(data))
        if kind in ("set", "set_header") and pos < len(data):
            data[pos] = value
        elif kind == "insert":
            data.insert(pos, value)
        elif kind == "delete" and pos < len(data):
            del data[pos]
        elif kind == "truncate":
            del data[pos:]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, min_size=1, max_size=4))
def test_mutations_only_raise_safetensor_error(mutations) -> None:
    blob = _apply(VALID, mutations)
    try:
        header = parse_header(blob, name="fuzz")
    except SafetensorError as exc:
        assert str(exc).startswith("fuzz: ")
        return
    # accepted: everything must load, and the peer must accept it too
    arrays = ours_np.load(blob)
    assert set(arrays) == set(header.tensors)
    for key, info in header.tensors.items():
        assert arrays[key].shape == info.shape
    tensors = ours_pt.load(blob)
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    peer = dict(safetensors.deserialize(blob))
    assert set(peer) == set(header.tensors)
