"""Header rules: one adversarial test per rule, each checked against safetensors 0.8 too.

Where safetensors also rejects the input, both must reject; where it accepts something unsafe
(duplicate keys), we reject and the test records the differential.
"""

from __future__ import annotations

import json
import struct

import pytest
import safetensors

from tests.weights._util import raw_blob, tensor
from torchship.weights.format import (
    DTYPES,
    MAX_HEADER_SIZE,
    SafetensorError,
    TensorInfo,
    parse_header,
    plan_layout,
    serialize_header,
    tensor_nbytes,
)

F32_1 = tensor("F32", [1], 0, 4)

# (id, blob, message fragment, does safetensors 0.8 reject it too?)
BAD: list[tuple[str, bytes, str, bool]] = [
    ("empty file", b"", "shorter than the 8-byte", True),
    ("truncated prefix", b"\x10\x00\x00", "shorter than the 8-byte", True),
    ("header too large", struct.pack("<Q", MAX_HEADER_SIZE + 1) + b"{}", "exceeds the limit", True),
    ("header length past end", raw_blob(b"{}", length=64), "runs past the end", True),
    ("non-utf8", raw_blob(b'{"\xff":1}'), "not valid UTF-8", True),
    ("utf8 BOM", raw_blob(b"\xef\xbb\xbf{}"), "byte order mark", True),
    ("not json", raw_blob(b"{nope}"), "not valid JSON", True),
    ("trailing comma", raw_blob(b'{"a":' + json.dumps(F32_1).encode() + b",}", b"\0" * 4), "not valid JSON", True),
    ("trailing garbage", raw_blob(json.dumps({"a": F32_1}).encode() + b"\0", b"\0" * 4), "not valid JSON", True),
    ("top level array", raw_blob(b"[]"), "must be a JSON object", True),
    ("entry not object", raw_blob({"a": [1]}), "entry must be a JSON object", True),
    ("missing dtype", raw_blob({"a": {"shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "missing field 'dtype'", True),
    ("unknown dtype", raw_blob({"a": tensor("F128", [1], 0, 16)}, b"\0" * 16), "unknown dtype", True),
    ("lowercase dtype", raw_blob({"a": tensor("f32", [1], 0, 4)}, b"\0" * 4), "case-sensitive", True),
    ("negative dim", raw_blob({"a": tensor("F32", [-1], 0, 4)}, b"\0" * 4), "non-negative integers", True),
    ("float dim", raw_blob('{"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}', b"\0" * 4), "non-negative integers", True),
    ("bool dim", raw_blob('{"a":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}', b"\0" * 4), "non-negative integers", True),
    ("NaN dim", raw_blob('{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,4]}}', b"\0" * 4), "not valid JSON", True),
    ("dim past u64", raw_blob({"a": tensor("U8", [2**64], 0, 1)}, b"\0"), "non-negative integers", True),
    ("shape overflow", raw_blob({"a": tensor("U8", [2**32, 2**32], 0, 1)}, b"\0"), "overflows the element count", True),
    ("bit count overflow", raw_blob({"a": tensor("F64", [2**61], 0, 8)}, b"\0" * 8), "overflows the bit count", True),
    ("sub-byte remainder", raw_blob({"a": tensor("F4", [3], 0, 2)}, b"\0" * 2), "not a whole number of bytes", True),
    ("three offsets", raw_blob('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,4]}}', b"\0" * 4), "two non-negative", True),
    ("negative offset", raw_blob({"a": tensor("F32", [1], -4, 0)}, b""), "two non-negative", True),
    ("end before start", raw_blob({"a": tensor("F32", [0], 4, 0)}, b"\0" * 4), "end before they start", True),
    ("size mismatch", raw_blob({"a": tensor("F32", [2], 0, 4)}, b"\0" * 4), "needs 8", True),
    ("hole", raw_blob({"a": tensor("F32", [1], 4, 8)}, b"\0" * 8), "hole", True),
    ("overlap", raw_blob({"a": F32_1, "b": tensor("F32", [1], 0, 4)}, b"\0" * 4), "overlapping", True),
    ("trailing bytes (polyglot)", raw_blob({"a": F32_1}, b"\0" * 5), "trailing bytes", True),
    ("truncated data", raw_blob({"a": F32_1}, b"\0" * 3), "truncated", True),
    ("nested metadata", raw_blob({"__metadata__": {"k": {"x": "y"}}}), "nested metadata", True),
    ("int metadata value", raw_blob({"__metadata__": {"k": 1}}), "must be a string", True),
    ("metadata not a map", raw_blob({"__metadata__": "x"}), "map of string to string", True),
    ("lone surrogate name", raw_blob('{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4), "surrogate", True),
    ("deep nesting", raw_blob("[" * 100_000 + "]" * 100_000), "nested too deeply", True),
    # stricter than safetensors 0.8 (it silently keeps the last duplicate):
    ("duplicate tensor name", raw_blob('{"a":' + json.dumps(tensor("U8", [4], 0, 4)) + ',"a":' + json.dumps(tensor("U8", [4], 0, 4)) + "}", b"\0" * 4), "duplicate key 'a'", False),
    ("duplicate metadata key", raw_blob('{"__metadata__":{"k":"1","k":"2"}}'), "duplicate key 'k'", False),
]


@pytest.mark.parametrize(("blob", "fragment", "peer_rejects"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_adversarial_header_rejected(blob: bytes, fragment: str, peer_rejects: bool) -> None:
    with pytest.raises(SafetensorError, match=None) as info:
        parse_header(blob, name="bad.safetensors")
    message = str(info.value)
    assert message.startswith("bad.safetensors: "), message
    assert fragment in message, message
    if peer_rejects:
        with pytest.raises(Exception):  # noqa: B017 - the peer's error types vary
            safetensors.deserialize(blob)
    else:
        safetensors.deserialize(blob)  # the differential: the peer accepts it


def test_error_names_the_tensor() -> None:
    blob = raw_blob({"good": F32_1, "layer.7.weight": tensor("F16", [3], 4, 8)}, b"\0" * 8)
    with pytest.raises(SafetensorError, match=r"tensor 'layer\.7\.weight'.*needs 6"):
        parse_header(blob, name="m.safetensors")


@pytest.mark.parametrize(
    "blob",
    [
        raw_blob(b'  \n{"a":' + json.dumps(F32_1).encode() + b"}\t\r ", b"\0" * 4),  # JSON whitespace
        raw_blob({"__metadata__": None, "a": F32_1}, b"\0" * 4),  # null metadata
        raw_blob({"s": tensor("F32", [], 0, 4), "z": tensor("F32", [0, 5], 4, 4)}, b"\0" * 4),  # scalar, zero-size
        raw_blob({"z": tensor("I64", [0], 0, 0), "a": F32_1}, b"\0" * 4),  # zero-size at 0 next to a tensor
        raw_blob(b"{}"),  # no tensors at all
        raw_blob({"a": {**F32_1, "extra": 1}}, b"\0" * 4),  # unknown fields are ignored, as safetensors does
        raw_blob({"q": tensor("F4", [4], 0, 2), "h": tensor("F6_E2M3", [4], 2, 5)}, b"\0" * 5),  # sub-byte
    ],
    ids=["whitespace", "null-metadata", "scalar-and-zero-size", "zero-size-at-0", "empty", "extra-field", "sub-byte"],
)
def test_valid_edge_cases_accepted_like_safetensors(blob: bytes) -> None:
    header = parse_header(blob)
    theirs = {k: (v["dtype"], list(v["shape"])) for k, v in safetensors.deserialize(blob)}
    assert {k: (i.dtype, list(i.shape)) for k, i in header.tensors.items()} == theirs


def test_header_fields_and_base_offset() -> None:
    inner = serialize_header([("w", TensorInfo("I16", (2, 3), 0, 12))], {"format": "np"}) + bytes(range(12))
    prefix = b"X" * 40
    header = parse_header(prefix + inner, name="p", base=40)
    assert header.tensors == {"w": TensorInfo("I16", (2, 3), 0, 12)}
    assert header.metadata == {"format": "np"}
    assert header.data_start == 40 + len(inner) - 12
    assert header.data_len == 12
    with pytest.raises(SafetensorError, match="outside the file"):
        parse_header(inner, base=len(inner) + 1)


def test_dtype_table_matches_safetensors_enum_order() -> None:
    expected = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"]
    assert list(DTYPES) == expected
    bits = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "C64": 64, "BF16": 16, "F8_E8M0": 8}
    for name, b in bits.items():
        assert DTYPES[name].bits == b
    for d in DTYPES.values():
        if d.numpy is not None:
            assert d.numpy.itemsize * 8 == d.bits, d.name


def test_tensor_nbytes_hand_computed() -> None:
    assert tensor_nbytes("F4", (6,)) == 3
    assert tensor_nbytes("F6_E3M2", (4, 2)) == 6
    assert tensor_nbytes("C64", (3,)) == 24
    assert tensor_nbytes("F32", ()) == 4
    assert tensor_nbytes("BF16", (0, 7)) == 0
    with pytest.raises(SafetensorError, match="not a whole number"):
        tensor_nbytes("F6_E2M3", (3,))


def test_serialize_header_pads_and_sorts_metadata() -> None:
    blob = serialize_header([], {"b": "2", "a": "1"})
    (n,) = struct.unpack("<Q", blob[:8])
    assert n % 8 == 0 and len(blob) == 8 + n
    assert blob[8:].rstrip(b" ") == b'{"__metadata__":{"a":"1","b":"2"}}'


@pytest.mark.parametrize("metadata", [{"a": 1}, {1: "x"}, {1: "a", "b": "c"}, {"a": None}])
def test_serialize_header_refuses_non_string_metadata(metadata) -> None:
    # {1: "a", "b": "c"} used to escape as a TypeError from sorting the keys
    with pytest.raises(SafetensorError, match="metadata must map str to str"):
        serialize_header([], metadata)


def test_plan_layout_refuses_reserved_name() -> None:
    with pytest.raises(SafetensorError, match="reserved"):
        plan_layout({"__metadata__": ("F32", (1,))})


def test_parse_accepts_memoryview_and_mmap(tmp_path) -> None:
    import mmap

    blob = serialize_header([("w", TensorInfo("U8", (3,), 0, 3))], None) + b"abc"
    assert parse_header(memoryview(blob)).tensors["w"].end == 3
    path = tmp_path / "x.safetensors"
    path.write_bytes(blob)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert parse_header(mm).data_len == 3
