"""``metadata()`` and headers as other tools write them, and headers near the 100 MB limit, side
by side with safetensors 0.8.

Headers are built byte by byte the way the writers produce them: transformers/diffusers
(``{"format": "pt"}`` first, space padding), mlx (nlohmann JSON: keys sorted, ``__metadata__``
after upper-case names, no padding, so the data starts unaligned), Python's ``json.dumps``
(``ensure_ascii`` escapes, ``indent``), kohya/sd-scripts (JSON inside metadata strings). Both
libraries must accept the same headers with the same metadata, names and values, and refuse the
same ones.
"""

from __future__ import annotations

import gc
import json
import struct

import numpy as np
import pytest

from torchship.weights import safe_open
from torchship.weights.format import MAX_HEADER_SIZE, SafetensorError

peer = pytest.importorskip("safetensors", reason="safetensors is the peer oracle (pip install '.[dev]')")

W = '"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'
DATA = np.array([1.5, -2.0], np.float32).tobytes()
_W_ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}

ACCEPTED = {
    "transformers": '{"__metadata__":{"format":"pt"},' + W + "}    ",
    "mlx, sorted keys, unpadded": '{"W":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"format":"mlx"}}',
    "json.dumps indent": json.dumps({"__metadata__": {"format": "pt", "x": "é"}, "w": _W_ENTRY}, indent=2),
    "ensure_ascii escapes": '{"__metadata__":{"n\\u00e9":"\\u00e9\\/\\ud83d\\ude00\\n\\t\\"\\\\"},' + W + "}",
    "metadata null": '{"__metadata__":null,' + W + "}",
    "metadata empty": '{"__metadata__":{},' + W + "}",
    "metadata last": "{" + W + ',"__metadata__":{"format":"pt"}}',
    "newline padding": '{"__metadata__":{"format":"pt"},' + W + "}\n",
    "leading whitespace": ' \n\t{"__metadata__":{"format":"pt"},' + W + "}",
    "empty metadata key": '{"__metadata__":{"":""},' + W + "}",
    "DEL and U+2028 in a value": '{"__metadata__":{"a":"x\x7fy\u2028z"},' + W + "}",
    "kohya JSON in a string": '{"__metadata__":{"ss_tag_frequency":' + json.dumps(json.dumps({"a": {"b": 1}}))
    + "}," + W + "}",
    "escaped tensor name": '{"__metadata__":{"format":"pt"},"\\u0077":' + W[4:] + "}",
    "escaped __metadata__": '{"\\u005f_metadata__":{"format":"pt"},' + W + "}",
    "non-BMP key": '{"__metadata__":{"\U0001f600":"v"},' + W + "}",
    "empty tensor name": '{"__metadata__":{"format":"pt"},"":' + W[4:] + "}",
    "10,000 metadata keys": '{"__metadata__":{' + ",".join(f'"k{i}":"{i}"' for i in range(10_000)) + "}," + W + "}",
}
REFUSED = {
    "lone high surrogate": '{"__metadata__":{"a":"\\ud800"},' + W + "}",
    "lone low surrogate": '{"__metadata__":{"a":"\\udc00x"},' + W + "}",
    "integer value": '{"__metadata__":{"a":1},' + W + "}",
    "nested value": '{"__metadata__":{"a":{"b":"c"}},' + W + "}",
    "null value": '{"__metadata__":{"a":null},' + W + "}",
    "list value": '{"__metadata__":{"a":["x"]},' + W + "}",
    "string metadata": '{"__metadata__":"x",' + W + "}",
    "NUL padding": '{"__metadata__":{"format":"pt"},' + W + "}\x00\x00\x00",
    "form feed padding": '{"__metadata__":{"format":"pt"},' + W + "}  \x0c ",
    "vertical tab before": '\x0b{"__metadata__":{"format":"pt"},' + W + "}",
    "no-break space before": '\xa0{"__metadata__":{"format":"pt"},' + W + "}",
    "U+2028 after": '{"__metadata__":{"format":"pt"},' + W + "}\u2028",
    "raw control character": '{"__metadata__":{"a":"x\x01y"},' + W + "}",
    "raw newline in a string": '{"__metadata__":{"a":"x\ny"},' + W + "}",
}


def _write(tmp_path, header: bytes, data: bytes = DATA, name: str = "h.safetensors") -> str:
    path = tmp_path / name
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return str(path)


def _read(open_fn, path: str) -> tuple:
    with open_fn(path, framework="np") as f:
        keys = list(f.keys())
        return f.metadata(), keys, [f.get_tensor(k).tolist() for k in keys], [f.get_slice(k)[1:].tolist() for k in keys]


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_headers_other_tools_write_read_the_same(case, tmp_path) -> None:
    path = _write(tmp_path, ACCEPTED[case].encode("utf-8"))
    assert _read(safe_open, path) == _read(peer.safe_open, path)


@pytest.mark.parametrize("case", [*REFUSED, "overlong UTF-8"])
def test_headers_the_peer_refuses_we_refuse(case, tmp_path) -> None:
    if case == "overlong UTF-8":
        header = b'{"__metadata__":{"a":"\xc0\xaf"},' + W.encode() + b"}"
    else:
        header = REFUSED[case].encode("utf-8", "surrogatepass")
    path = _write(tmp_path, header)
    with pytest.raises(peer.SafetensorError):
        _read(peer.safe_open, path)
    with pytest.raises(SafetensorError, match="h.safetensors"):
        _read(safe_open, path)


def test_torch_reads_an_unaligned_mlx_file_like_the_peer(tmp_path) -> None:
    header = b'{"__metadata__":{"format":"mlx"},"a":{"dtype":"F64","shape":[3],"data_offsets":[0,24]}}'
    assert len(header) % 8  # the data buffer starts unaligned
    path = _write(tmp_path, header, np.array([1.0, -2.0, 3.0]).tobytes())
    with safe_open(path, framework="pt") as f, peer.safe_open(path, framework="pt") as g:
        assert f.get_tensor("a").tolist() == g.get_tensor("a").tolist() == [1.0, -2.0, 3.0]
        assert f.get_slice("a")[1:].tolist() == g.get_slice("a")[1:].tolist()


@pytest.fixture(scope="module")
def limit_file(tmp_path_factory) -> str:
    """A header of exactly MAX_HEADER_SIZE bytes: one 100 MB metadata value."""
    base = json.dumps({"__metadata__": {"a": ""}, "w": _W_ENTRY}, separators=(",", ":")).encode()
    header = base.replace(b'"a":""', b'"a":"' + b"x" * (MAX_HEADER_SIZE - len(base)) + b'"')
    assert len(header) == MAX_HEADER_SIZE == 100_000_000
    return _write(tmp_path_factory.mktemp("limit"), header)


@pytest.mark.parametrize("framework", ["np", "pt"])
def test_a_header_of_exactly_the_limit_reads_like_the_peer(limit_file, framework) -> None:
    with safe_open(limit_file, framework=framework) as f, peer.safe_open(limit_file, framework=framework) as g:
        assert f.metadata() == g.metadata() and MAX_HEADER_SIZE - 100 < len(f.metadata()["a"]) < MAX_HEADER_SIZE
        assert f.get_tensor("w").tolist() == g.get_tensor("w").tolist() == [1.5, -2.0]


def test_one_byte_over_the_limit_is_refused_by_both(tmp_path) -> None:
    header = (W.join("{}") + " " * MAX_HEADER_SIZE).encode()[: MAX_HEADER_SIZE + 1]
    path = _write(tmp_path, header)
    with pytest.raises(peer.SafetensorError, match="header too large"):
        peer.safe_open(path, framework="np")
    with pytest.raises(SafetensorError, match="header length 100000001 exceeds the limit of 100000000"):
        safe_open(path, framework="np")


def test_many_tensor_headers_read_like_the_peer_and_leave_the_gc_as_it_was(tmp_path) -> None:
    n = 20_000
    entries = {f"t{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(n)}
    path = _write(tmp_path, json.dumps(entries).encode(), bytes(range(256)) * (n // 256) + bytes(range(n % 256)))
    assert gc.isenabled()
    with safe_open(path, framework="np") as f, peer.safe_open(path, framework="np") as g:
        assert f.keys() == sorted(g.keys()) and f.offset_keys() == g.offset_keys()
        assert [f.get_tensor(k).tolist() for k in ("t0", "t257", f"t{n - 1}")] == \
            [g.get_tensor(k).tolist() for k in ("t0", "t257", f"t{n - 1}")]
    assert gc.isenabled()
    entries["t0"]["dtype"] = "X"  # a failing parse restores the collector too
    with pytest.raises(SafetensorError, match="unknown dtype"):
        safe_open(_write(tmp_path, json.dumps(entries).encode(), bytes(n), "bad.safetensors"), framework="np")
    assert gc.isenabled()
    gc.disable()
    try:  # and leaves a paused collector paused
        safe_open(path, framework="np")
        assert not gc.isenabled()
    finally:
        gc.enable()
