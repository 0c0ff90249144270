"""The autotune cache: round trips, atomicity under concurrent writers, corrupt entries,
export/import bundles, and how tune() uses it (hits, forced re-tunes, nearby-shape seeds)."""

from __future__ import annotations

import json
import multiprocessing as mp
import warnings
from pathlib import Path

import pytest
import torch

from tests.kernels.test_autotune_fakes import FakeBound, FakeConfig, FakeSpace, cost
from torchship.kernels.autotune import AutotuneCache, CacheWarning, ModelTimer, autotune
from torchship.kernels.autotune.cache import default_cache_dir

KEY = {"source_hash": "feedbeefcafe0001", "args": [["torch.float16", [64, 64], [64, 1]]]}


def test_put_get_round_trip_and_key_mismatch(tmp_path):
    cache = AutotuneCache(tmp_path)
    assert cache.get(KEY) is None
    path = cache.put(KEY, {"block": 128}, time_ms=0.5, meta={"effort": "quick"})
    assert path.parent.parent == tmp_path / "kernels"
    entry = cache.get(KEY)
    assert entry["config"] == {"block": 128} and entry["time_ms"] == 0.5
    other = dict(KEY, args=[["torch.float16", [64, 65], [65, 1]]])
    assert cache.get(other) is None
    # a file whose stored key differs from the one asked for (hash collision, hand edit)
    cache.path_for(other).write_text(path.read_text())
    with pytest.warns(CacheWarning, match="different key"):
        assert cache.get(other) is None


def test_default_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHSHIP_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("TORCHSHIP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "torchship"


@pytest.mark.parametrize("content", ["{not json", "", '{"format": "other"}', "[1, 2]",
                                     '{"format": "torchship-autotune-cache", "key": {}, "config": 3}'])
def test_corrupt_entry_is_ignored_with_a_warning(tmp_path, content):
    cache = AutotuneCache(tmp_path)
    path = cache.put(KEY, {"block": 128})
    path.write_text(content)
    with pytest.warns(CacheWarning, match=str(path.name)):
        assert cache.get(KEY) is None


def _hammer(root: str, worker: int, n: int) -> None:
    cache = AutotuneCache(root)
    for i in range(n):
        cache.put(KEY, {"block": 16 * (i % 8 + 1), "writer": worker, "pad": "x" * 4000},
                  time_ms=float(i))
        cache.put({"source_hash": "feedbeefcafe0001", "w": worker, "i": i % 5}, {"i": i})
        entry = cache.get(KEY)  # readers never see half a file
        assert entry is not None and entry["config"]["pad"] == "x" * 4000


def test_two_processes_writing_the_same_key_never_corrupt_it(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), w, 60)) for w in range(2)]
    for p in procs:
        p.start()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        cache = AutotuneCache(tmp_path)
        reads = 0
        while any(p.is_alive() for p in procs):
            entry = cache.get(KEY)
            if entry is not None:
                assert entry["config"]["pad"] == "x" * 4000
                reads += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert reads > 0
    files = list((tmp_path / "kernels").rglob("*"))
    assert not [f for f in files if f.name.endswith(".tmp")], "temporary files left behind"
    assert len([f for f in files if f.suffix == ".json"]) == 1 + 2 * 5
    for f in files:
        if f.suffix == ".json":
            json.loads(f.read_text())


def test_export_import_clear(tmp_path):
    src = AutotuneCache(tmp_path / "a")
    src.put(KEY, {"block": 64}, time_ms=1.0)
    src.put(dict(KEY, source_hash="0123456789abcdef"), {"block": 32})
    bundle = tmp_path / "bundle.json"
    assert src.export(bundle) == 2
    dst = AutotuneCache(tmp_path / "b")
    assert dst.import_bundle(bundle) == 2
    assert dst.get(KEY)["config"] == {"block": 64}
    assert sorted(e["config"]["block"] for _, e in dst.entries()) == [32, 64]
    assert dst.clear("0123456789abcdef") == 1
    assert len(list(dst.entries())) == 1
    assert dst.clear() == 1 and list(dst.entries()) == []


def test_import_rejects_malformed_bundles_before_writing(tmp_path):
    dst = AutotuneCache(tmp_path / "b")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "torchship-autotune-cache-bundle", "version": 1,
                               "entries": [{"format": "torchship-autotune-cache", "key": KEY,
                                            "config": {"block": 1}}, {"key": "x"}]}))
    with pytest.raises(ValueError, match=r"bad.json: entry 1: format must be"):
        dst.import_bundle(bad)
    assert list(dst.entries()) == []  # the valid first entry was not written either
    bad.write_text("garbage")
    with pytest.raises(ValueError, match="not a torchship autotune cache bundle"):
        dst.import_bundle(bad)


def _tune(tmp_path, x, **kw):
    opts = dict(effort="quick", cache=AutotuneCache(tmp_path), timer=ModelTimer(cost),
                isolate=False, progress=False, patience=0, max_evals=20)
    opts.update(kw)
    return autotune(FakeBound(x), (x,), **opts)


def test_tune_uses_and_refreshes_the_cache(tmp_path, monkeypatch):
    x = torch.randn(100)
    first = _tune(tmp_path, x)
    assert not first.from_cache and len(first.results) == 20
    second = _tune(tmp_path, x)
    assert second.from_cache and second.results == [] and second.config == first.config
    # a different shape is a different key
    assert not _tune(tmp_path, torch.randn(200), max_evals=3).from_cache
    # forced re-tune (argument and environment variable)
    assert not _tune(tmp_path, x, force=True, max_evals=2).from_cache
    monkeypatch.setenv("TORCHSHIP_FORCE_AUTOTUNE", "1")
    assert not _tune(tmp_path, x, max_evals=2).from_cache
    monkeypatch.delenv("TORCHSHIP_FORCE_AUTOTUNE")
    # the log of every candidate was written next to the cache
    log = json.loads(Path(first.log_path).read_text())
    assert len(log["candidates"]) == 20 and log["best_ms"] == first.best_ms


def test_corrupt_cache_entry_is_retuned_and_rewritten(tmp_path):
    x = torch.randn(100)
    rep = _tune(tmp_path, x, max_evals=5)
    path = AutotuneCache(tmp_path).path_for(rep.key)
    path.write_text("{truncated")
    with pytest.warns(CacheWarning, match="unreadable"):
        again = _tune(tmp_path, x, max_evals=5)
    assert not again.from_cache
    assert json.loads(path.read_text())["config"] == again.config.to_dict()


def test_winners_of_nearby_shapes_seed_the_search(tmp_path):
    x1, x2 = torch.randn(1000), torch.randn(1200)
    cache = AutotuneCache(tmp_path)
    # pretend an earlier run tuned shape 1000 to an unusual config
    planted = FakeConfig(16, 16, 5)
    key1 = _tune(tmp_path, x1, max_evals=1).key
    cache.put(key1, planted.to_dict(), time_ms=0.1)
    rep = _tune(tmp_path, x2, strategy="random", max_evals=4, batch=4)
    assert [r.config for r in rep.results[:2]] == [FakeSpace().default(), planted]
