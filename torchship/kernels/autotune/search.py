"""Search strategies over a kernel's ConfigSpace, behind one ask/tell interface.

A strategy proposes batches of configs (``ask``), is told their results (``tell``) and says
when it has nothing more to offer (``ask`` returns ``[]``). The tuner owns the budget, the
early stop and the harness; strategies only decide *what* to try next.

- :class:`GuidedSearch` (default, ``"guided"``): heuristic seeds (the space's default and the
  cached winners of nearby shapes), a little random exploration, then rounds of local search
  over ``space.neighbors`` of the best configs so far, ranked by a surrogate model fitted on
  ``space.encode`` features (ridge regression ensemble on log-time, lower-confidence-bound pick).
- :class:`RandomSearch` (``"random"``), :class:`ListSearch` (``"list"``: a finite list) and
  :class:`ExhaustiveSearch` (``"exhaustive"``: ``space.enumerate()``, for small spaces).

Example:
    >>> import random
    >>> s = ListSearch([{"a": 1}, {"a": 2}])
    >>> s.start(space=None, seeds=[], rng=random.Random(0))
    >>> s.ask(8)
    [{'a': 1}, {'a': 2}]
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from torchship.kernels.autotune.records import Result, config_id


class Strategy:
    """Base class: subclasses implement :meth:`ask`; :meth:`tell` records results.

    Example:
        >>> Strategy().name
        'base'
    """

    name = "base"

    def __init__(self) -> None:
        self.space: Any = None
        self.rng = random.Random(0)
        self.seen: set[str] = set()
        self.results: list[Result] = []

    def start(self, space: Any, seeds: Sequence[Any], rng: random.Random) -> None:
        """Begin a search of ``space``; ``seeds`` are configs worth trying first."""
        self.space, self.rng = space, rng
        self.seeds = list(seeds)

    def ask(self, n: int) -> list[Any]:  # pragma: no cover - abstract
        """Return up to ``n`` new configs to evaluate; ``[]`` means the search is finished."""
        raise NotImplementedError

    def tell(self, results: Iterable[Result]) -> None:
        """Record evaluated results."""
        for r in results:
            self.seen.add(config_id(r.config))
            self.results.append(r)

    def _take_new(self, source: Iterable[Any], n: int) -> list[Any]:
        out: list[Any] = []
        for cfg in source:
            cid = config_id(cfg)
            if cid in self.seen:
                continue
            self.seen.add(cid)
            out.append(cfg)
            if len(out) >= n:
                break
        return out


class ListSearch(Strategy):
    """Try a finite list of configs in order (seeds first).

    Example:
        >>> s = ListSearch([{"x": 1}]); s.start(None, [{"x": 0}], random.Random(0)); s.ask(4)
        [{'x': 0}, {'x': 1}]
    """

    name = "list"

    def __init__(self, configs: Sequence[Any]) -> None:
        super().__init__()
        self.configs = list(configs)

    def start(self, space: Any, seeds: Sequence[Any], rng: random.Random) -> None:
        super().start(space, seeds, rng)
        self._it: Iterator[Any] = itertools.chain(self.seeds, self.configs)

    def ask(self, n: int) -> list[Any]:
        return self._take_new(self._it, n)


class ExhaustiveSearch(ListSearch):
    """Every config of ``space.enumerate()`` (seeds first); for small spaces.

    Example:
        >>> ExhaustiveSearch().name
        'exhaustive'
    """

    name = "exhaustive"

    def __init__(self) -> None:
        super().__init__([])

    def start(self, space: Any, seeds: Sequence[Any], rng: random.Random) -> None:
        Strategy.start(self, space, seeds, rng)
        self._it = itertools.chain(self.seeds, space.enumerate())


class RandomSearch(Strategy):
    """Uniform random samples from the space (seeds first), without repeats.

    Example:
        >>> RandomSearch().name
        'random'
    """

    name = "random"

    def __init__(self, max_tries: int = 50) -> None:
        super().__init__()
        self.max_tries = max_tries

    def start(self, space: Any, seeds: Sequence[Any], rng: random.Random) -> None:
        super().start(space, seeds, rng)
        self._seed_it = iter(self.seeds)

    def ask(self, n: int) -> list[Any]:
        out = self._take_new(self._seed_it, n)
        misses = 0
        while len(out) < n and misses < self.max_tries * max(n, 1):
            got = self._take_new([self.space.sample(self.rng)], 1)
            if got:
                out.extend(got)
            else:
                misses += 1
        return out


class Surrogate:
    """Bootstrap ensemble of ridge regressions on quadratic features, predicting log-time.

    Example:
        >>> s = Surrogate(random.Random(0))
        >>> X = [[float(i), float(i % 3)] for i in range(12)]
        >>> s.fit(X, [abs(x[0] - 5) + 1.0 for x in X])
        >>> mean, std = s.predict([[5.0, 2.0], [11.0, 2.0]])
        >>> bool(mean[0] < mean[1])
        True
    """

    def __init__(self, rng: random.Random, n_models: int = 8, alpha: float = 1e-1) -> None:
        self.rng, self.n_models, self.alpha = rng, n_models, alpha
        self.models: list[np.ndarray] = []

    @staticmethod
    def _features(X: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
        Z = (X - mu) / sd
        n, d = Z.shape
        cols = [np.ones((n, 1)), Z, Z * Z]
        if d <= 12:
            cols += [Z[:, [i]] * Z[:, [j]] for i in range(d) for j in range(i + 1, d)]
        return np.concatenate(cols, axis=1)

    def fit(self, X: Sequence[Sequence[float]], times: Sequence[float]) -> None:
        """Fit on feature rows ``X`` and measured times (ms)."""
        Xa = np.asarray(X, dtype=np.float64)
        y = np.log(np.maximum(np.asarray(times, dtype=np.float64), 1e-9))
        self.mu = Xa.mean(axis=0)
        self.sd = Xa.std(axis=0) + 1e-6
        F = self._features(Xa, self.mu, self.sd)
        self.y_mean = float(y.mean())
        self.models = []
        n = len(y)
        for m in range(self.n_models):
            idx = np.arange(n) if m == 0 else np.array([self.rng.randrange(n) for _ in range(n)])
            A, b = F[idx], y[idx] - self.y_mean
            reg = self.alpha * np.eye(A.shape[1])
            reg[0, 0] = 1e-8
            self.models.append(np.linalg.solve(A.T @ A + reg, A.T @ b))

    def predict(self, X: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
        """Return (mean, std) of predicted log-time for each row of ``X``."""
        F = self._features(np.asarray(X, dtype=np.float64), self.mu, self.sd)
        preds = np.stack([F @ w for w in self.models]) + self.y_mean
        return preds.mean(axis=0), preds.std(axis=0)


class GuidedSearch(Strategy):
    """The default: seeds, a little exploration, then surrogate-ranked local search.

    Each round builds a pool from ``space.neighbors`` of the ``top_k`` best configs plus a few
    random samples, ranks it with :class:`Surrogate` by a lower confidence bound
    (``mean - kappa * std`` of log-time) and proposes the best unseen ones. Before enough
    points exist to fit the surrogate, pool order is used (neighbours of the best first).

    Example:
        >>> GuidedSearch().name
        'guided'
    """

    name = "guided"

    def __init__(
        self,
        n_random: int = 4,
        top_k: int = 4,
        neighbors_per_config: int = 12,
        kappa: float = 0.5,
        min_fit: int = 6,
    ) -> None:
        super().__init__()
        self.n_random, self.top_k = n_random, top_k
        self.neighbors_per_config, self.kappa, self.min_fit = neighbors_per_config, kappa, min_fit
        self._stale_rounds = 0

    def start(self, space: Any, seeds: Sequence[Any], rng: random.Random) -> None:
        super().start(space, seeds, rng)
        self._initial = list(self.seeds)
        self._random_left = self.n_random
        self.surrogate = Surrogate(rng)

    def _ok(self) -> list[Result]:
        return sorted((r for r in self.results if r.ok), key=lambda r: r.time_ms)

    def _pool(self) -> list[Any]:
        best = self._ok()[: self.top_k]
        pool: list[Any] = []
        for r in best:
            pool.extend(self.space.neighbors(r.config, self.rng, n=self.neighbors_per_config))
        pool.extend(self.space.sample(self.rng) for _ in range(max(4, len(pool) // 4)))
        uniq: dict[str, Any] = {}
        for cfg in pool:
            cid = config_id(cfg)
            if cid not in self.seen and cid not in uniq:
                uniq[cid] = cfg
        return list(uniq.values())

    def ask(self, n: int) -> list[Any]:
        out = self._take_new(self._initial, n)
        self._initial = self._initial[len(out) :] if out else []
        # initial exploration: a few random samples (diversity for the surrogate) ...
        while len(out) < n and self._random_left > 0:
            self._random_left -= 1
            out.extend(self._take_new([self.space.sample(self.rng)], 1))
        if len(out) < n and not self.results and self.seeds:
            # ... and, before any result is back, the neighbourhood of the heuristic seeds
            pool = []
            for seed in self.seeds:
                pool.extend(self.space.neighbors(seed, self.rng, n=self.neighbors_per_config))
            out.extend(self._take_new(pool, n - len(out)))
        if len(out) >= n:
            return out
        if not self._ok():
            # nothing works yet: keep sampling at random until something does
            extra = [self.space.sample(self.rng) for _ in range(4 * n)]
            return out + self._take_new(extra, n - len(out))
        pool = self._pool()
        if not pool:
            self._stale_rounds += 1
            if self._stale_rounds > 3:
                return out
            return out + self._take_new([self.space.sample(self.rng) for _ in range(4 * n)], n)
        self._stale_rounds = 0
        ok = [r for r in self.results if r.ok]
        if len(ok) >= self.min_fit:
            self.surrogate.fit([self.space.encode(r.config) for r in ok], [r.time_ms for r in ok])
            mean, std = self.surrogate.predict([self.space.encode(c) for c in pool])
            score = mean - self.kappa * std
            order = [int(i) for i in np.argsort(score, kind="stable")]
            pool = [pool[i] for i in order]
        return out + self._take_new(pool, n - len(out))


STRATEGIES = {
    "guided": GuidedSearch,
    "random": RandomSearch,
    "exhaustive": ExhaustiveSearch,
}


def make_strategy(strategy: str | Strategy | Sequence[Any] | None, space: Any, cap: int) -> Strategy:
    """Turn a name, an instance, a list of configs or None into a :class:`Strategy`.

    ``None`` picks ``exhaustive`` when the whole space fits in ``cap`` evaluations, else
    ``guided``.

    Example:
        >>> make_strategy([{"a": 1}], None, 10).name
        'list'
    """
    if isinstance(strategy, Strategy):
        return strategy
    if strategy is None:
        try:
            size = int(space.size())
        except Exception:
            size = math.inf  # type: ignore[assignment]
        return ExhaustiveSearch() if size <= cap else GuidedSearch()
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise ValueError(
                f"unknown autotune strategy {strategy!r}; choose one of {sorted(STRATEGIES)} "
                "or pass a list of configs"
            )
        return STRATEGIES[strategy]()
    return ListSearch(list(strategy))
