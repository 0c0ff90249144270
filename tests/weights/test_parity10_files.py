"""Files larger than 4 GiB, files replaced while they are read, and permission errors, side by
side with safetensors 0.8.

The 4 GiB+ files are sparse (seek, write a few bytes): no real disk use. Permission checks run in
a forked child that drops root to ``nobody`` (root ignores file modes).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import torch

from torchship.weights import numpy as our_np
from torchship.weights import safe_open
from torchship.weights import torch as our_pt
from torchship.weights.format import SafetensorError

peer = pytest.importorskip("safetensors", reason="safetensors is the peer oracle (pip install '.[dev]')")
import safetensors.numpy as peer_np  # noqa: E402

BIG = (1 << 32) + 16
"""Bytes in the big tensor: past what a u32 offset or length can hold."""


@pytest.fixture(scope="module")
def sparse(tmp_path_factory) -> str:
    """head F32 [2] | big U8 [BIG] (zeros but its last 3 bytes) | tail I64 [2]: offsets past 2^32."""
    entries = {
        "__metadata__": {"format": "pt"},
        "head": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "big": {"dtype": "U8", "shape": [BIG], "data_offsets": [8, 8 + BIG]},
        "tail": {"dtype": "I64", "shape": [2], "data_offsets": [8 + BIG, 24 + BIG]},
    }
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path_factory.mktemp("big") / "big.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + np.array([1.5, 2.5], np.float32).tobytes())
        f.seek(8 + len(header) + 8 + BIG - 3)
        f.write(b"\x07\x08\x09" + np.array([-5, 6], np.int64).tobytes())
    if os.stat(path).st_blocks * 512 > 64 << 20:
        pytest.skip("this filesystem has no sparse files")
    return str(path)


def _big_reads(f, framework: str) -> tuple:
    last = f.get_slice("big")[BIG - 4:]
    rows = f.get_slice("big")[:2]
    values = [np.asarray(t).tolist() for t in (f.get_tensor("head"), f.get_tensor("tail"), last, rows)]
    return (*values, f.get_slice("big").get_shape(), f.metadata(), f.offset_keys())


@pytest.mark.parametrize("framework", ["pt", "np"])
def test_files_over_4_gib_read_like_the_peer(sparse, framework) -> None:
    with safe_open(sparse, framework=framework) as f, peer.safe_open(sparse, framework=framework) as g:
        mine = _big_reads(f, framework)
        assert mine == _big_reads(g, framework)
        assert mine[2] == [0, 7, 8, 9] and mine[1] == [-5, 6] and mine[4] == [BIG]
        big = f.get_tensor("big")  # a view of the mapping: nothing is read
        assert big.shape[0] == BIG and np.asarray(big[-3:]).tolist() == [7, 8, 9]


def test_load_file_over_4_gib_maps_without_reading(sparse) -> None:
    start = time.perf_counter()
    loaded = our_pt.load_file(sparse)
    assert loaded["big"][-3:].tolist() == [7, 8, 9] and loaded["tail"].tolist() == [-5, 6]
    assert time.perf_counter() - start < 5, "load_file of a sparse 4 GiB file must not read it"


_VERSION = "lambda k: {'a': np.full(1000 + 3000 * (k % 5), k, np.int64), 'b': np.full(3, -k, np.int32)}"
"""Version ``k`` of the file's tensors (source text: the writer process evaluates it too)."""
_version = eval(_VERSION)


@pytest.mark.parametrize("writer", [our_np, peer_np], ids=["our save_file", "peer save_file"])
def test_handles_opened_before_a_replace_keep_reading_the_old_file(writer, tmp_path) -> None:
    path = str(tmp_path / "m.safetensors")
    our_np.save_file(_version(1), path, metadata={"v": "1"})
    mine, theirs = safe_open(path, framework="np"), peer.safe_open(path, framework="np")
    kept, mine_slice, theirs_slice = mine.get_tensor("a"), mine.get_slice("a"), theirs.get_slice("a")
    writer.save_file(_version(2), path, metadata={"v": "2"})  # rename over the open file
    for handle, sliced in ((mine, mine_slice), (theirs, theirs_slice)):
        assert handle.metadata() == {"v": "1"}
        assert (handle.get_tensor("a") == 1).all() and handle.get_tensor("a").shape == (4000,)
        assert (sliced[-5:] if handle is mine else sliced[3995:]).tolist() == [1] * 5
    assert (kept == 1).all()
    for open_fn in (safe_open, peer.safe_open):
        with open_fn(path, framework="np") as f:
            assert f.metadata() == {"v": "2"} and (f.get_tensor("a") == 2).all()


_WRITER = f"""
import sys, numpy as np
if sys.argv[2] == "ours":
    from torchship.weights.numpy import save_file
else:
    from safetensors.numpy import save_file
version = {_VERSION}
k = 2
while True:
    save_file(version(k), sys.argv[1], metadata={{"v": str(k)}})
    k += 1
"""


@pytest.mark.parametrize("writer", ["ours", "peer"])
def test_reading_while_another_process_replaces_the_file_sees_whole_versions(writer, tmp_path) -> None:
    path = str(tmp_path / "m.safetensors")
    our_np.save_file(_version(1), path, metadata={"v": "1"})
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, path, writer], cwd=os.getcwd())
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and peer.safe_open(path, framework="np").metadata() == {"v": "1"}:
            time.sleep(0.01)  # the writer starts
        seen: dict[str, set[int]] = {"ours": set(), "peer": set()}
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            for reader, open_fn in (("ours", safe_open), ("peer", peer.safe_open)):
                with open_fn(path, framework="np") as f:
                    k = int(f.metadata()["v"])
                    a, b = f.get_tensor("a"), f.get_slice("b")[:]
                assert a.shape == _version(k)["a"].shape and (a == k).all() and (b == -k).all(), (reader, k)
                seen[reader].add(k)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode is not None and all(len(v) >= 2 for v in seen.values()), seen


def _as_nobody(checks) -> list:
    """Run ``checks()`` as the user nobody (in a forked child when we are root); its result."""
    if os.geteuid() != 0:
        return checks()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        try:
            os.setgid(65534)
            os.setuid(65534)
            payload = json.dumps(checks())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            payload = json.dumps(repr(exc))
        os.write(write_fd, payload.encode())
        os._exit(0)
    os.close(write_fd)
    data = b""
    while chunk := os.read(read_fd, 1 << 16):
        data += chunk
    os.close(read_fd)
    os.waitpid(pid, 0)
    result = json.loads(data)
    assert isinstance(result, list), result
    return result


def _outcome(call) -> list:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the outcome is compared
        return [type(exc).__name__, isinstance(exc, SafetensorError), isinstance(exc, OSError),
                isinstance(exc, PermissionError), str(exc)]
    return ["ok"]


@pytest.fixture
def locked() -> str:
    """A world-writable folder (pytest's own is root-only) with an unreadable file, a folder
    without search permission and a read-only folder."""
    root = tempfile.mkdtemp(prefix="torchship-perm-")
    os.chmod(root, 0o777)
    for sub in ("noexec", "readonly"):
        os.mkdir(os.path.join(root, sub))
    for path in ("unreadable.safetensors", "noexec/x.safetensors"):
        our_np.save_file({"a": np.ones(2)}, os.path.join(root, path))
    os.chmod(os.path.join(root, "unreadable.safetensors"), 0o200)
    os.chmod(os.path.join(root, "noexec"), 0o666)
    os.chmod(os.path.join(root, "readonly"), 0o555)
    yield root
    os.chmod(os.path.join(root, "noexec"), 0o777)
    shutil.rmtree(root)


def test_permission_errors(locked) -> None:
    unreadable, hidden = os.path.join(locked, "unreadable.safetensors"), os.path.join(locked, "noexec/x.safetensors")
    target = os.path.join(locked, "readonly/out.safetensors")

    def checks() -> list:
        results = []
        for path in (unreadable, hidden):
            results += [_outcome(lambda p=path: peer.safe_open(p, framework="np")),
                        _outcome(lambda p=path: safe_open(p, framework="np")),
                        _outcome(lambda p=path: our_np.load_file(p)), _outcome(lambda p=path: our_pt.load_file(p))]
        arrays = {"a": np.ones(2)}
        results += [_outcome(lambda: peer_np.save_file(arrays, target)), _outcome(lambda: our_np.save_file(arrays, target)),
                    _outcome(lambda: our_pt.save_file({"a": torch.ones(2)}, target))]
        return results

    results = _as_nobody(checks)
    for i in (0, 4):  # the peer: an OSError (FileNotFoundError, "No such file or directory")
        assert results[i][2], results[i]
        for mine in results[i + 1 : i + 4]:  # ours: a PermissionError and a SafetensorError naming the file
            assert mine[1:4] == [True, True, True] and "Permission denied" in mine[4], mine
            assert mine[4].startswith(unreadable if i == 0 else hidden), mine
    assert results[8][0] == "SafetensorError" and "Permission denied" in results[8][4]
    for mine in results[9:]:
        assert mine[1:4] == [True, True, True] and target in mine[4], mine
    assert os.listdir(os.path.join(locked, "readonly")) == []
