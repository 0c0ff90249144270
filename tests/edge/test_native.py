"""Optional native kernels (runtime/native): native == numpy fallback == torch eager (float64),
build on first use, fallback without a compiler, corrupt cache rebuilt, switch-off variable."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from examples.models.zoo import inverted_residual  # noqa: I001
from tests.edge._util import ROOT, rel_err
from tests.edge.test_mbconv import CASES as MBCONV_CASES
from tests.edge.test_mbconv import _block
from torchship.edge import export
from torchship.edge.runtime import loads
from torchship.edge.runtime.native import MAX_TAPS, active, build, depthwise_step
from torchship.edge.runtime.registry import OPS, bind_step


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    build.reset()
    yield
    build.reset()  # later tests look again, with their own environment


def _set_native(monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    monkeypatch.setenv("TORCHSHIP_EDGE_NATIVE", "1" if on else "0")
    build.reset()
    assert active() is on


# (N, C, mult, H, W, kernel, stride, padding, dilation, bias, clamp)
GRID = [
    (1, 16, 1, 14, 14, (3, 3), (1, 1), (1, 1), (1, 1), True, (0.0, 6.0)),
    (2, 3, 1, 7, 9, (3, 3), (1, 1), (0, 0), (1, 1), False, (None, None)),
    (1, 5, 1, 13, 11, (3, 3), (2, 2), (1, 1), (1, 1), True, (0.0, 6.0)),
    (1, 4, 1, 12, 12, (3, 3), (2, 2), (1, 1), (1, 1), False, (None, None)),
    (1, 6, 1, 15, 10, (5, 5), (1, 1), (2, 2), (1, 1), True, (None, 0.5)),
    (2, 3, 1, 11, 13, (5, 5), (2, 2), (2, 2), (1, 1), False, (0.0, None)),
    (1, 4, 1, 16, 17, (3, 3), (1, 1), (2, 2), (2, 2), True, (None, None)),
    (1, 3, 1, 17, 16, (3, 3), (2, 1), (2, 0), (1, 3), True, (-0.5, 0.5)),
    (1, 3, 2, 9, 9, (3, 3), (1, 1), (1, 1), (1, 1), True, (None, None)),
    (1, 2, 3, 10, 7, (1, 3), (1, 3), (0, 1), (1, 1), False, (0.0, 6.0)),
    (1, 3, 1, 9, 10, (2, 4), (3, 2), (1, 2), (2, 1), True, (None, None)),
    (1, 2, 1, 8, 8, (7, 7), (1, 1), (3, 3), (1, 1), True, (None, None)),
    (1, 3, 1, 15, 14, (3, 3), (2, 2), (2, 2), (2, 2), True, (0.0, 6.0)),  # stride == dilation: 2-row path
    (1, 2, 1, 1, 6, (3, 3), (1, 1), (1, 1), (1, 1), True, (None, None)),  # one output row
]


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, a: dict) -> np.ndarray:
    """The conv2d binder's result (native or numpy, as the environment says)."""
    n, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
    oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.full((n, w.shape[0], oh, ow), np.nan, np.float32)
    bind_step(OPS["conv2d"], [x, w] + ([] if b is None else [b]), [out], a)()
    return out


@pytest.mark.parametrize("case", GRID, ids=[f"g{i}" for i in range(len(GRID))])
def test_depthwise_native_equals_numpy_equals_eager(case: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    n, c, mult, h, wd, k, s, p, d, has_bias, (lo, hi) = case
    rng = np.random.default_rng(sum(map(hash, map(str, case))) % 2**32)
    x = rng.standard_normal((n, c, h, wd)).astype(np.float32)
    w = rng.standard_normal((c * mult, 1, *k)).astype(np.float32)
    b = rng.standard_normal(c * mult).astype(np.float32) if has_bias else None
    a = {"stride": list(s), "padding": list(p), "dilation": list(d), "groups": c, "clamp_min": lo, "clamp_max": hi}
    ref = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                     None if b is None else torch.from_numpy(b).double(), s, p, d, c)
    ref = ref.clamp(lo, hi).numpy() if (lo, hi) != (None, None) else ref.numpy()
    _set_native(monkeypatch, False)
    plain = _conv(x, w, b, a)
    _set_native(monkeypatch, True)
    assert depthwise_step(x, w, b, plain.copy(), stride=s, padding=p, dilation=d) is not None
    native = _conv(x, w, b, a)
    assert rel_err(native.astype(np.float64), ref) <= 1e-5
    assert rel_err(plain.astype(np.float64), ref) <= 1e-5
    assert rel_err(native, plain) <= 1e-5


@pytest.mark.parametrize("shape,k,affine", [((2, 16, 64), 1, "wb"), ((3, 5, 7), 2, "wb"),
                                             ((4, 33), 1, "w"), ((6, 10), 1, ""), ((1, 1), 1, "wb")])
def test_layer_norm_native_equals_numpy_equals_eager(shape: tuple, k: int, affine: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(len(shape) * 7 + k)
    x = (rng.standard_normal(shape) * 3 + 1.5).astype(np.float32)
    norm = shape[len(shape) - k:]
    w = rng.standard_normal(norm).astype(np.float32) if "w" in affine else None
    b = rng.standard_normal(norm).astype(np.float32) if "b" in affine else None
    ref = torch.nn.functional.layer_norm(
        torch.from_numpy(x).double(), norm, None if w is None else torch.from_numpy(w).double(),
        None if b is None else torch.from_numpy(b).double(), 1e-5).numpy()
    got = {}
    for on in (False, True):
        _set_native(monkeypatch, on)
        out = np.full(shape, np.nan, np.float32)
        ins = [x] + [t for t in (w, b) if t is not None]
        bind_step(OPS["layer_norm"], ins, [out], {"normalized_ndim": k, "eps": 1e-5})()
        got[on] = out
        err = float(np.abs(out - ref).max() / np.abs(ref).max())
        assert err <= 1e-6, (on, err)
    assert rel_err(got[True], got[False]) <= 1e-6


def test_gelu_native_equals_numpy_equals_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.standard_normal(5000) * 3, np.linspace(-12, 12, 2001),
                        [0.0, -0.0, 1e-30, -1e-30, 40.0, -40.0, 1e30, -1e30]]).astype(np.float32)
    ref = torch.nn.functional.gelu(torch.from_numpy(x).double()).numpy()
    got = {}
    for on in (False, True):
        _set_native(monkeypatch, on)
        out = np.full_like(x, np.nan)
        bind_step(OPS["gelu"], [x], [out], {"approximate": "none"})()
        got[on] = out
        # per element: within 3e-7 of the largest input's scale, and exact signs/zeros/infs
        assert np.abs(out - ref)[np.abs(x) < 1e4].max() <= 3e-7 * 12, on
        np.testing.assert_array_equal(np.signbit(out[ref != 0]), np.signbit(ref[ref != 0]))
        np.testing.assert_allclose(out[np.abs(x) >= 40], ref[np.abs(x) >= 40], rtol=1e-7)
    special = np.array([np.nan, np.inf, -np.inf], np.float32)  # torch gives NaN for all three
    for on in (False, True):
        _set_native(monkeypatch, on)
        out = np.zeros_like(special)
        with np.errstate(all="ignore"):
            bind_step(OPS["gelu"], [special], [out], {"approximate": "none"})()
        assert np.isnan(out).all(), (on, out)
    assert np.abs(got[True] - got[False]).max() <= 1e-6 * np.abs(x[np.abs(x) < 1e4]).max()


def test_native_declines_what_it_does_not_cover(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_native(monkeypatch, True)
    kw = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1)}
    x, w = np.ones((1, 2, 5, 5)), np.ones((2, 1, 3, 3))
    assert depthwise_step(x, w, None, np.empty((1, 2, 5, 5)), **kw) is None  # float64
    x32, w32 = np.ones((1, 2, 5, 5), np.float32), np.ones((2, 1, 3, 3), np.float32)
    assert depthwise_step(x32[:, :, :, ::1].transpose(0, 1, 3, 2), w32, None, np.empty((1, 2, 5, 5), np.float32), **kw) is None
    side = int(MAX_TAPS**0.5) + 1
    big = np.ones((2, 1, side, side), np.float32)
    assert depthwise_step(np.ones((1, 2, side, side), np.float32), big, None, np.empty((1, 2, 1, 1), np.float32),
                          stride=(1, 1), padding=(0, 0), dilation=(1, 1)) is None
    got = np.empty((1, 2, 5, 5), np.float32)
    depthwise_step(x32, w32, None, got, **kw)()
    assert got[0, 0, 2, 2] == 9.0 and got[0, 1, 0, 0] == 4.0


@pytest.mark.parametrize("on", [True, False], ids=["native", "numpy"])
def test_inverted_residual_native_on_and_off(on: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    model, inputs = inverted_residual()
    data = export(model, inputs).to_bytes()
    _set_native(monkeypatch, on)
    got = loads(data).run(inputs[0].numpy())
    with torch.no_grad():
        ref = model.double()(inputs[0].double()).numpy()
    assert rel_err(got.astype(np.float64), ref) <= 1e-5


@pytest.mark.parametrize("name", list(MBCONV_CASES))
def test_fused_mbconv_native_equals_numpy_equals_eager(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    c, hidden, out, k, stride, act, residual, bias, n, h, w = MBCONV_CASES[name]
    model = _block(len(name), c, hidden, out, k, stride, act, residual, bias)
    x = torch.randn(n, c, h, w)
    data = export(model, (x,)).to_bytes()
    with torch.no_grad():
        ref = model.double()(x.double()).numpy()
    got = {}
    for on in (False, True):
        _set_native(monkeypatch, on)
        got[on] = loads(data).run(x.numpy())
        assert rel_err(got[on].astype(np.float64), ref) <= 1e-5
    assert rel_err(got[True], got[False]) <= 1e-5


def test_no_compiler_falls_back_to_numpy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TORCHSHIP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.delenv("TORCHSHIP_EDGE_NATIVE", raising=False)
    with caplog.at_level("DEBUG", logger="torchship.edge.native"):
        assert build.library() is None and not active()
    assert len(caplog.records) == 1 and "numpy" in caplog.records[0].getMessage()
    assert not (tmp_path / "edge-native").exists() or not list((tmp_path / "edge-native").iterdir())
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((3, 1, 3, 3)).astype(np.float32)
    a = {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 3, "clamp_min": None, "clamp_max": None}
    ref = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), padding=1, groups=3).numpy()
    assert rel_err(_conv(x, w, None, a).astype(np.float64), ref) <= 1e-5


def test_failing_compiler_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake-cc"
    fake.write_text("#!/bin/sh\necho broken >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("TORCHSHIP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.delenv("TORCHSHIP_EDGE_NATIVE", raising=False)
    assert build.library() is None
    assert not list((tmp_path / "cache" / "edge-native").glob("*"))  # no temp file left behind


def test_disabled_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHSHIP_EDGE_NATIVE", "0")
    assert build.library() is None
    x, w = np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 3, 3), np.float32)
    assert depthwise_step(x, w, None, np.empty((1, 1, 1, 1), np.float32), stride=(1, 1), padding=(0, 0), dilation=(1, 1)) is None


_PROBE = "from torchship.edge.runtime.native import build; lib = build.library(); print(lib is not None and lib.ts_native_abi() == build.ABI)"


def _probe(cache: Path) -> bool:
    """library() in a fresh process (dlopen there has not mapped the file yet)."""
    env = {**os.environ, "TORCHSHIP_CACHE_DIR": str(cache)}
    env.pop("TORCHSHIP_EDGE_NATIVE", None)
    env.pop("CC", None)
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip() == "True"


def test_build_cache_and_corrupt_library_rebuilt(tmp_path: Path) -> None:
    assert _probe(tmp_path)  # built on first use
    (so,) = (tmp_path / "edge-native").glob("*.so")
    mtime = so.stat().st_mtime_ns
    assert _probe(tmp_path) and so.stat().st_mtime_ns == mtime  # reused, not rebuilt
    bad = tmp_path / "bad.so"
    bad.write_bytes(b"\x7fELF garbage" * 100)
    os.replace(bad, so)  # replaced, not written in place: a loaded library stays mapped
    assert _probe(tmp_path)
    assert so.read_bytes()[:4] == b"\x7fELF" and b"garbage" not in so.read_bytes()
    assert [p.name for p in (tmp_path / "edge-native").iterdir()] == [so.name]


_TORCHFREE_CHILD = """
import sys
import numpy as np
from torchship.edge.runtime import load
from torchship.edge.runtime.native import active
out = load(sys.argv[1]).run(np.load(sys.argv[2]))
np.save(sys.argv[3], out)
assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
print("native" if active() else "numpy")
"""


def test_native_in_torch_free_venv(tmp_path: Path) -> None:
    from tests.edge.test_torchfree import _fresh_venv

    model, inputs = inverted_residual()
    path = export(model, inputs).save(tmp_path / "ir.tsp")
    np.save(tmp_path / "x.npy", inputs[0].numpy())
    py = _fresh_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHSHIP_EDGE_NATIVE", "CC")}
    env["TORCHSHIP_CACHE_DIR"] = str(tmp_path / "cache")
    proc = subprocess.run([str(py), "-I", "-c", _TORCHFREE_CHILD, str(path), str(tmp_path / "x.npy"), str(tmp_path / "out.npy")],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "native"
    with torch.no_grad():
        ref = model.double()(inputs[0].double()).numpy()
    assert rel_err(np.load(tmp_path / "out.npy").astype(np.float64), ref) <= 1e-5


def test_source_is_package_data() -> None:
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = pyproject["tool"]["setuptools"]["package-data"]
    assert "*.c" in data["torchship.edge.runtime.native"] and all(src.exists() for src in build.SOURCES)
