"""Search logic of the autotuner, in-process with a model timer (no worker processes).

The fake space's cost surface has a known optimum (found by exhaustive enumeration here), so
the tests check against an independent reference: the true best config.
"""

from __future__ import annotations

import math
import random
import statistics

import pytest
import torch

from tests.kernels.test_autotune_fakes import (
    FakeBound,
    FakeConfig,
    FakeSpace,
    cost,
    flat_cost,
    slow_cost,
)
from torchship.kernels.autotune import (
    ExhaustiveSearch,
    GuidedSearch,
    ListSearch,
    ModelTimer,
    RandomSearch,
    autotune,
    tune,
)
from torchship.kernels.autotune.records import resolve_effort
from torchship.kernels.autotune.search import Surrogate, make_strategy

OPT = min(cost(c) for c in FakeSpace().enumerate())


def _run(strategy, seed=0, **kw):
    x = torch.randn(100)
    opts = dict(effort="quick", cache=False, timer=ModelTimer(cost), isolate=False, seed=seed,
                progress=False)
    opts.update(kw)
    return autotune(FakeBound(x), (x,), strategy=strategy, **opts)


def _evals_to_within(report, factor=1.02):
    for i, r in enumerate(report.results, 1):
        if r.ok and r.time_ms <= OPT * factor:
            return i
    return math.inf


def test_guided_finds_the_optimum_faster_than_random():
    guided = [_evals_to_within(_run("guided", s, patience=0, budget_s=60)) for s in range(6)]
    rand = [_evals_to_within(_run("random", s, patience=0, budget_s=60)) for s in range(6)]
    # the guided search reaches within 2% of the true optimum within the quick budget
    assert max(guided) <= 40, guided
    assert statistics.median(guided) < statistics.median(rand), (guided, rand)


def test_guided_result_is_the_best_evaluated_and_valid():
    rep = _run(None, seed=3)
    assert rep.strategy == "guided"  # 175 configs > quick cap of 64
    best = min(r.time_ms for r in rep.results if r.ok)
    assert rep.best_ms == best == cost(rep.config)
    FakeSpace().validate(rep.config)
    # the default config is always evaluated first, and recorded as the baseline
    assert rep.results[0].config == FakeSpace().default()
    assert rep.default_ms == cost(FakeSpace().default())
    # no config is evaluated twice
    ids = [r.config for r in rep.results]
    assert len(ids) == len(set(ids))


def test_exhaustive_visits_every_config_once_and_finds_the_optimum():
    rep = _run("exhaustive", max_evals=10_000, patience=0, budget_s=60)
    seen = [r.config for r in rep.results]
    assert len(seen) == FakeSpace().size() == len(set(seen))
    assert rep.best_ms == OPT
    assert rep.stop_reason == "search space exhausted"


def test_auto_strategy_is_exhaustive_for_small_spaces():
    assert make_strategy(None, FakeSpace(), cap=10_000).name == "exhaustive"
    assert make_strategy(None, FakeSpace(), cap=10).name == "guided"
    with pytest.raises(ValueError, match="unknown autotune strategy 'nope'"):
        make_strategy("nope", FakeSpace(), 10)


def test_list_strategy_evaluates_exactly_the_list_after_the_default():
    configs = [FakeConfig(512, 8, 1), FakeConfig(256, 4, 3), FakeConfig(16, 1, 1)]
    rep = _run(configs, patience=0)
    assert [r.config for r in rep.results] == [FakeSpace().default(), *configs]
    assert rep.config == FakeConfig(256, 4, 3)


def test_random_strategy_samples_without_repeats():
    s = RandomSearch()
    s.start(FakeSpace(), [FakeSpace().default()], random.Random(0))
    got = s.ask(40) + s.ask(40)
    assert got[0] == FakeSpace().default()
    assert len(got) == len(set(got)) == 80


def test_early_stop_when_progress_stalls():
    rep = _run("random", timer=ModelTimer(flat_cost), patience=10, budget_s=60, batch=1)
    # first candidate sets the best; ten more without a 1% gain stop the run
    assert len(rep.results) == 11
    assert "no 1% improvement" in rep.stop_reason


def test_time_budget_is_respected():
    rep = _run("random", timer=ModelTimer(slow_cost), budget_s=0.6, patience=0, batch=2,
               confirm=0)  # the re-timing of the top candidates comes after the budget
    # each candidate takes 50 ms: the budget allows about 12, checked between batches of 2
    assert 6 <= len(rep.results) <= 16, len(rep.results)
    assert "time budget" in rep.stop_reason
    assert rep.elapsed_s < 0.6 + 1.0


def test_effort_levels(monkeypatch):
    assert resolve_effort("quick").max_evals < resolve_effort("full").max_evals
    rep = _run("random", effort="none")
    assert rep.results == [] and rep.config == FakeSpace().default()
    monkeypatch.setenv("TORCHSHIP_AUTOTUNE_EFFORT", "none")
    x = torch.randn(10)
    assert tune(FakeBound(x), (x,), cache=False, isolate=False) == FakeSpace().default()
    monkeypatch.setenv("TORCHSHIP_AUTOTUNE_EFFORT", "bogus")
    with pytest.raises(ValueError, match="none\\|quick\\|full"):
        tune(FakeBound(x), (x,), cache=False, isolate=False)
    monkeypatch.delenv("TORCHSHIP_AUTOTUNE_EFFORT")
    rep = _run("random", effort="quick", patience=0, budget_s=60)
    assert len(rep.results) == resolve_effort("quick").max_evals


def test_failures_never_win_and_search_continues():
    # candidates that fail (raise) are recorded and the search still returns a working config
    configs = [FakeConfig(256, 4, 3, mode="raise"), FakeConfig(256, 4, 3, mode="wrong"),
               FakeConfig(512, 4, 3)]
    rep = _run(configs, patience=0)
    statuses = [r.status for r in rep.results]
    assert statuses == ["ok", "runtime_error", "wrong", "ok"]
    assert rep.config == FakeConfig(512, 4, 3)
    assert "mismatch" in rep.results[2].error


def test_surrogate_ranks_by_a_learned_surface():
    rng = random.Random(0)
    space = FakeSpace()
    train = [space.sample(rng) for _ in range(30)]
    s = Surrogate(random.Random(1))
    s.fit([space.encode(c) for c in train], [cost(c) for c in train])
    test = [space.sample(rng) for _ in range(40)]
    mean, _ = s.predict([space.encode(c) for c in test])
    true = [math.log(cost(c)) for c in test]
    # rank correlation between prediction and truth is strong
    pr = sorted(range(40), key=lambda i: mean[i])
    tr = sorted(range(40), key=lambda i: true[i])
    rank_p = {i: r for r, i in enumerate(pr)}
    rank_t = {i: r for r, i in enumerate(tr)}
    d2 = sum((rank_p[i] - rank_t[i]) ** 2 for i in range(40))
    spearman = 1 - 6 * d2 / (40 * (40**2 - 1))
    assert spearman > 0.8, spearman


def test_strategy_instances_are_accepted():
    for strat in (GuidedSearch(), RandomSearch(), ExhaustiveSearch(), ListSearch([FakeConfig()])):
        rep = _run(strat, max_evals=5, patience=0)
        assert rep.strategy == strat.name
        assert 1 <= len(rep.results) <= 5


def test_confirmation_rounds_reject_a_lucky_measurement():
    from tests.kernels.test_autotune_fakes import LuckyTimer

    lucky = FakeConfig(16, 1, 1)
    configs = [lucky, FakeConfig(256, 4, 3), FakeConfig(512, 4, 3)]
    fooled = _run(configs, timer=LuckyTimer(lucky), patience=0, confirm=0)
    assert fooled.config == lucky  # one measurement alone picks the fluke
    rep = _run(configs, timer=LuckyTimer(lucky), patience=0)
    assert rep.config == FakeConfig(256, 4, 3)
    assert rep.confirmed[0]["config"] == FakeConfig(256, 4, 3).to_dict()
    assert rep.confirmed[-1]["times_ms"][1:] == [10.0, 10.0]


@pytest.mark.parametrize("isolate", [False, True])
def test_confirmation_rounds_rank_finalists_under_sustained_load(isolate):
    from tests.kernels.test_autotune_fakes import BoostTimer, FakeTarget

    boosted, steady = FakeConfig(256, 4, 3), FakeConfig(256, 2, 3)
    assert cost(boosted) < cost(steady) < 2 * cost(boosted)
    configs = [boosted, steady, FakeConfig(1024, 16, 1)]
    timer = BoostTimer([boosted])
    target = FakeTarget(100) if isolate else None
    fooled = _run(configs, timer=timer, patience=0, confirm=0, isolate=isolate, target=target)
    assert fooled.config == boosted  # the burst timing of the search alone
    rep = _run(configs, timer=timer, patience=0, isolate=isolate, target=target)
    assert rep.config == steady and rep.best_ms == pytest.approx(cost(steady))
    first = rep.confirmed[0]
    assert first["sustained"] and first["config"] == steady.to_dict()
    # only the two sustained rounds count, not the search's burst figure
    assert first["times_ms"] == [pytest.approx(cost(steady))] * 2
    assert first["search_ms"] == pytest.approx(cost(steady))
    by_config = {tuple(c["config"].values()): c for c in rep.confirmed}
    assert by_config[tuple(boosted.to_dict().values())]["times_ms"] == [
        pytest.approx(2 * cost(boosted))] * 2
    assert rep.default_ms == pytest.approx(cost(FakeConfig(64, 4, 2)))


def test_a_candidate_failing_a_confirmation_round_cannot_win():
    from tests.kernels.test_autotune_fakes import FlakyTimer

    flaky, steady = FakeConfig(256, 4, 3), FakeConfig(256, 2, 3)
    rep = _run([flaky, steady], timer=FlakyTimer(flaky), patience=0)
    assert rep.config == steady
    last = rep.confirmed[-1]
    assert last["config"] == flaky.to_dict() and last["times_ms"][1:] == [math.inf] * 2
    assert all("flaky" in f and f.startswith("runtime_error") for f in last["failures"])
    assert "failures" not in rep.confirmed[0]


def test_progress_bar_shows_count_best_and_elapsed(capsys):
    rep = _run("random", max_evals=6, patience=0, progress=True, confirm=0)
    out = capsys.readouterr().out
    assert "autotune fake_double" in out and "6/6" in out
    assert f"best {rep.best_ms * 1e3:.1f} µs" in out  # the best of the six, in µs
    assert "0:00:0" in out  # elapsed
