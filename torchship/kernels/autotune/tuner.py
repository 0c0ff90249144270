"""``tune()``: cache lookup, search loop, budget, early stop, progress bar, log, cache write.

Example:
    >>> from torchship.kernels.autotune.tuner import effort_from_env
    >>> effort_from_env(None, default="none").name
    'none'
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import statistics
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchship.kernels.autotune.cache import AutotuneCache, atomic_write_json, key_hash
from torchship.kernels.autotune.harness import Harness
from torchship.kernels.autotune.records import (
    Effort,
    Result,
    config_dict,
    config_id,
    resolve_effort,
)
from torchship.kernels.autotune.search import Strategy, make_strategy
from torchship.kernels.autotune.target import KernelTarget, LocalTarget, Target, TargetError
from torchship.kernels.autotune.timing import Timer


@dataclass
class TuneReport:
    """Everything one tuning run produced.

    Example:
        >>> TuneReport(config={"a": 1}).from_cache
        False
    """

    config: Any
    best_ms: float | None = None
    default_ms: float | None = None
    results: list[Result] = field(default_factory=list)
    elapsed_s: float = 0.0
    setup_s: float = 0.0  # of elapsed_s: starting the workers and the reference run
    setup: dict[str, Any] = field(default_factory=dict)  # the bench worker's own setup timings
    from_cache: bool = False
    stop_reason: str = ""
    strategy: str = ""
    effort: str = ""
    key: dict[str, Any] = field(default_factory=dict)
    log_path: str | None = None
    confirmed: list[dict[str, Any]] = field(default_factory=list)

    def best_curve(self) -> list[tuple[int, float]]:
        """(candidates evaluated, best time so far in ms) after each ok candidate."""
        best, curve = math.inf, []
        for i, r in enumerate(self.results, 1):
            if r.ok and r.time_ms < best:
                best = r.time_ms
            if math.isfinite(best):
                curve.append((i, best))
        return curve

    def top(self, n: int = 5) -> list[Result]:
        """The ``n`` fastest correct candidates."""
        return sorted((r for r in self.results if r.ok), key=lambda r: r.time_ms)[:n]

    def to_json(self) -> dict[str, Any]:
        """JSON-able summary plus every candidate."""
        return {
            "config": config_dict(self.config),
            "best_ms": self.best_ms,
            "default_ms": self.default_ms,
            "elapsed_s": round(self.elapsed_s, 3),
            "setup_s": round(self.setup_s, 3),
            "setup": self.setup,
            "from_cache": self.from_cache,
            "stop_reason": self.stop_reason,
            "strategy": self.strategy,
            "effort": self.effort,
            "key": self.key,
            "confirmed": self.confirmed,
            "candidates": [r.to_json() for r in self.results],
        }


def effort_from_env(effort: str | Effort | None, default: str = "quick") -> Effort:
    """``effort`` if given, else ``$TORCHSHIP_AUTOTUNE_EFFORT``, else ``default``.

    Example:
        >>> effort_from_env("full").name
        'full'
    """
    if effort is None:
        effort = os.environ.get("TORCHSHIP_AUTOTUNE_EFFORT") or default
    return resolve_effort(effort)


def _force_from_env() -> bool:
    return os.environ.get("TORCHSHIP_FORCE_AUTOTUNE", "").strip().lower() in ("1", "true", "yes")


def _versions() -> dict[str, str]:
    import torch
    import triton

    import torchship

    return {"torch": torch.__version__, "triton": triton.__version__, "torchship": torchship.__version__}


def device_info(args: tuple[Any, ...]) -> dict[str, Any]:
    """Name and compute capability of the device the tensors live on.

    Example:
        >>> import torch
        >>> device_info((torch.ones(1),))["type"]
        'cpu'
    """
    import torch

    dev = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        return {"type": "cuda", "name": props.name, "capability": [props.major, props.minor]}
    return {"type": dev.type, "name": f"{dev.type}-interpreter-{platform.machine()}"}


def arg_signature(args: tuple[Any, ...]) -> list[Any]:
    """dtype, shape and strides of each tensor argument; type and value of small scalars.

    Example:
        >>> import torch
        >>> arg_signature((torch.ones(2, 3), 1.5))
        [['torch.float32', [2, 3], [3, 1]], ['float', 1.5]]
    """
    import torch

    sig: list[Any] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            sig.append([str(a.dtype), list(a.shape), list(a.stride())])
        elif isinstance(a, (bool, int, float, str)) or a is None:
            sig.append([type(a).__name__, a])
        else:
            sig.append([type(a).__name__])
    return sig


def cache_key(bound: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The cache key: source hash, specialisation, argument signature, device, versions.

    Example:
        >>> # cache_key(kernel.bind(args), args) -> {"source_hash": ..., "args": ..., ...}
    """
    kwargs = kwargs or {}
    flat = tuple(args) + tuple(kwargs[k] for k in sorted(kwargs))
    spec = bound.key_dict() if hasattr(bound, "key_dict") else repr(getattr(bound, "key", ""))
    return {
        "kernel": _kernel_name(bound),
        "source_hash": str(getattr(bound, "source_hash", "unknown")),
        "spec": spec,
        "args": arg_signature(flat),
        "kwargs": sorted(kwargs),
        "device": device_info(flat),
        "versions": _versions(),
    }


def _kernel_name(bound: Any) -> str:
    for obj in (bound, getattr(bound, "kernel", None), getattr(bound, "fn", None)):
        name = getattr(obj, "__name__", None) or getattr(obj, "name", None)
        if isinstance(name, str):
            return name
    return type(bound).__name__


def _shape_distance(a: list[Any], b: list[Any]) -> float:
    """log2 distance between two argument signatures; inf when dtypes/ranks differ."""
    if len(a) != len(b):
        return math.inf
    d = 0.0
    for x, y in zip(a, b):
        if x[0] != y[0] or (len(x) == 3) != (len(y) == 3):
            return math.inf
        if len(x) == 3:
            if len(x[1]) != len(y[1]):
                return math.inf
            d += sum(abs(math.log2(max(p, 1)) - math.log2(max(q, 1))) for p, q in zip(x[1], y[1]))
    return d


def nearby_winners(cache: AutotuneCache, key: dict[str, Any], space: Any, n: int = 3) -> list[Any]:
    """Configs that won for other shapes of the same kernel on the same device (valid here).

    Example:
        >>> # nearby_winners(AutotuneCache(), key, bound.config_space) -> [Config, ...]
    """
    scored = []
    for _, entry in cache.entries(key["source_hash"]):
        k = entry["key"]
        if k.get("device") != key.get("device") or k.get("spec") == key.get("spec") and k.get(
            "args"
        ) == key.get("args"):
            continue
        dist = _shape_distance(k.get("args", []), key.get("args", []))
        if math.isfinite(dist):
            scored.append((dist, entry["config"]))
    scored.sort(key=lambda t: t[0])
    out = []
    for _, cfg_dict in scored:
        cfg = _config_from_dict(space, cfg_dict)
        if cfg is not None:
            out.append(cfg)
        if len(out) >= n:
            break
    return out


def _config_from_dict(space: Any, data: dict[str, Any]) -> Any:
    """Rebuild a Config from a cached dict and validate it against ``space``; None if invalid."""
    cls = type(space.default())
    try:
        cfg = cls.from_dict(data) if hasattr(cls, "from_dict") else data
        if hasattr(space, "validate"):
            space.validate(cfg)
        return cfg
    except Exception:
        return None


def make_target(bound: Any, args: tuple[Any, ...], kwargs: dict[str, Any], kernel: Any,
                isolate: bool, reference: str = "default") -> Target:
    """A re-importable :class:`KernelTarget` when possible, else an in-process target."""
    kernel = kernel if kernel is not None else getattr(bound, "kernel", None)
    if isolate and kernel is not None:
        try:
            return KernelTarget(kernel, args, kwargs, reference=reference)
        except TargetError as exc:
            warnings.warn(f"{exc}; tuning in-process without crash isolation", stacklevel=3)
    return LocalTarget(bound, args, kwargs)


def autotune(
    bound: Any,
    args: tuple[Any, ...],
    effort: str | Effort | None = None,
    budget_s: float | None = None,
    strategy: str | Strategy | list[Any] | None = None,
    *,
    kwargs: dict[str, Any] | None = None,
    kernel: Any = None,
    target: Target | None = None,
    cache: AutotuneCache | bool | None = None,
    timer: Timer | None = None,
    isolate: bool = True,
    force: bool | None = None,
    max_evals: int | None = None,
    patience: int | None = None,
    batch: int | None = None,
    seed: int = 0,
    compile_workers: int | None = None,
    progress: bool | None = None,
    log_path: str | os.PathLike[str] | None = None,
    keep_workers: bool = False,
    confirm: int = 3,
    seeds: list[Any] | None = None,
    reference: str = "default",
) -> TuneReport:
    """Tune ``bound`` on ``args`` and return a :class:`TuneReport` (see :func:`tune`).

    ``seeds`` are configs worth trying first (after the default), e.g. hand-picked ones;
    ``confirm`` re-times that many of the fastest candidates before choosing;
    ``keep_workers`` keeps the worker processes for the next call (see ``prewarm``);
    ``reference="ref"`` checks candidates against the eager reference mode instead of the
    default config (independent, slower: use it on small inputs).

    Example:
        >>> # report = autotune(kernel.bind(args), args, effort="quick"); report.best_ms
    """
    t_start = time.perf_counter()
    kwargs = dict(kwargs or {})
    eff = effort_from_env(effort)
    force = _force_from_env() if force is None else force
    space = bound.config_space
    store = AutotuneCache() if cache is None or cache is True else (cache or None)
    key = cache_key(bound, args, kwargs)
    if store is not None and not force:
        entry = store.get(key)
        if entry is not None:
            cfg = _config_from_dict(space, entry["config"])
            if cfg is not None:
                return TuneReport(config=cfg, best_ms=entry.get("time_ms"), from_cache=True,
                                  key=key, effort=eff.name, stop_reason="cache hit",
                                  elapsed_s=time.perf_counter() - t_start)
            warnings.warn(f"cached config for {key['kernel']} is no longer valid; re-tuning",
                          stacklevel=2)
    default = space.default()
    if eff.name == "none" and max_evals is None:
        return TuneReport(config=default, key=key, effort="none", stop_reason="effort none")
    cap = eff.max_evals if max_evals is None else max_evals
    budget = eff.budget_s if budget_s is None else budget_s
    patience = eff.patience if patience is None else patience
    user_configs = getattr(getattr(bound, "kernel", None), "configs", None)
    if strategy is None and user_configs:
        # @ts.kernel(configs=[...]): choose among the user's configs only
        complete = getattr(space, "complete", lambda c: c)  # fill knobs a user left out
        strat: Strategy = make_strategy([complete(c) for c in user_configs], space, cap)
        seeds: list[Any] = []
    else:
        strat = make_strategy(strategy, space, cap)
        seeds = [default, *(seeds or []), *dot_seeds(space, default), *loop_seeds(space, default),
                 *(nearby_winners(store, key, space) if store is not None else [])]
    strat.start(space, seeds, random.Random(seed))
    tgt = target or make_target(bound, args, kwargs, kernel, isolate, reference)
    # a hung candidate must not eat the whole budget: per-candidate timeouts follow it
    harness = Harness(tgt, timer=timer, isolate=isolate, compile_workers=compile_workers,
                      keep_workers=keep_workers,
                      compile_timeout_s=max(10.0, min(120.0, budget)),
                      bench_timeout_s=max(5.0, min(60.0, budget / 2)))
    if batch is None:
        batch = max(4, harness.compile_workers)
    report = TuneReport(config=default, key=key, effort=eff.name, strategy=strat.name)
    show = sys.stderr.isatty() if progress is None else progress
    with harness, _Progress(show, key["kernel"], cap) as bar:
        report.setup_s = time.perf_counter() - t_start
        report.setup = harness.setup_info()
        best = math.inf
        since = 0
        while True:
            elapsed = time.perf_counter() - t_start
            if len(report.results) >= cap:
                why = f"effort {eff.name}" if max_evals is None else "max_evals"
                report.stop_reason = f"evaluated {cap} candidates ({why})"
                break
            if elapsed >= budget and report.results:  # the first batch always runs
                report.stop_reason = f"time budget of {budget:g} s reached"
                break
            configs = strat.ask(min(batch, cap - len(report.results)))
            if not configs:
                report.stop_reason = "search space exhausted"
                break
            results = harness.evaluate(configs)
            for r in results:
                r.index = len(report.results)
                r.elapsed_s = time.perf_counter() - t_start
                report.results.append(r)
                if r.index == 0 and config_id(r.config) == config_id(default) and r.ok:
                    report.default_ms = r.time_ms
                if r.ok and r.time_ms < best * (1 - eff.min_improvement):
                    since = 0
                else:
                    since += 1
                if r.ok and r.time_ms < best:
                    best = r.time_ms
                    report.config, report.best_ms = r.config, r.time_ms
                bar.update(len(report.results), best)
            strat.tell(results)
            if patience and since >= patience:
                report.stop_reason = f"no 1% improvement in the last {since} candidates"
                break
        if confirm and report.best_ms is not None:
            _confirm(harness, report, default, confirm)
    report.elapsed_s = time.perf_counter() - t_start
    if report.best_ms is None:
        warnings.warn(
            f"autotune of {key['kernel']}: no candidate succeeded "
            f"({', '.join(sorted({r.status for r in report.results}))}); using the default config",
            stacklevel=2,
        )
    elif store is not None:
        store.put(key, config_dict(report.config), time_ms=report.best_ms,
                  meta={"effort": eff.name, "evaluated": len(report.results),
                        "tune_s": round(report.elapsed_s, 3), "strategy": strat.name})
    path = Path(log_path) if log_path else (
        store.root / "logs" / f"{key['kernel']}-{key_hash(key)[:12]}-"
        f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.json" if store is not None else None)
    if path is not None:
        atomic_write_json(path, report.to_json())
        report.log_path = str(path)
    return report


def _confirm(harness: Harness, report: TuneReport, default: Any, k: int, rounds: int = 2) -> None:
    """Re-time the ``k`` fastest candidates (and the default) ``rounds`` more times, in
    interleaved rounds with the timer's sustained-load variant, and keep the one with the
    best median, so neither a lucky measurement nor a card that boosts between compiles
    picks the winner. Where the re-timing is sustained (a GPU) only those rounds count;
    otherwise the search's own measurement is one more sample."""
    ok = sorted((r for r in report.results if r.ok), key=lambda r: r.time_ms)
    picks: dict[str, Result] = {}
    for r in ok[:k] + [r for r in ok if config_id(r.config) == config_id(default)]:
        picks.setdefault(config_id(r.config), r)
    if len(picks) < 2:
        return
    samples: dict[str, list[float]] = {cid: [] for cid in picks}
    failures: dict[str, list[str]] = {cid: [] for cid in picks}
    configs = [r.config for r in picks.values()]
    sustained = False
    for _ in range(rounds):
        for cid, res in zip(list(picks), harness.evaluate(configs, sustained=True)):
            sustained |= res.sustained
            # a candidate that fails on a re-run is flaky: it cannot win
            samples[cid].append(res.time_ms if res.ok else math.inf)
            if not res.ok:
                failures[cid].append(f"{res.status}: {res.error[-300:]}")
    if not sustained:
        samples = {cid: [picks[cid].time_ms, *v] for cid, v in samples.items()}
    scored = sorted((statistics.median(v), cid) for cid, v in samples.items())
    report.confirmed = [{"config": config_dict(picks[cid].config), "times_ms": samples[cid],
                         "search_ms": picks[cid].time_ms, "sustained": sustained,
                         **({"failures": failures[cid]} if failures[cid] else {})}
                        for _, cid in scored]
    best_ms, best_cid = scored[0]
    if math.isfinite(best_ms):
        report.config, report.best_ms = picks[best_cid].config, best_ms
        if config_id(default) in samples:
            report.default_ms = statistics.median(samples[config_id(default)])


def tune(
    bound: Any,
    args: tuple[Any, ...],
    effort: str | Effort | None = None,
    budget_s: float | None = None,
    strategy: str | Strategy | list[Any] | None = None,
    **options: Any,
) -> Any:
    """Return the best config for ``bound`` on ``args``, from the cache or by searching.

    ``effort``: ``none | quick | full`` (default ``$TORCHSHIP_AUTOTUNE_EFFORT`` or quick);
    ``budget_s`` caps wall time; ``strategy``: ``guided`` (default), ``random``,
    ``exhaustive``, a list of configs, or a :class:`Strategy`. ``TORCHSHIP_FORCE_AUTOTUNE=1``
    ignores cached winners. Other options are those of :func:`autotune`.

    Example:
        >>> # cfg = tune(kernel.bind((x,)), (x,), effort="quick")
    """
    return autotune(bound, args, effort, budget_s, strategy, **options).config


class _Progress:
    """A rich progress bar (evaluated / total, best so far, elapsed), or nothing."""

    def __init__(self, show: bool, name: str, total: int) -> None:
        self.show, self.name, self.total = show, name, total
        self._p: Any = None

    def __enter__(self) -> _Progress:
        if self.show:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._p = Progress(
                TextColumn("autotune [bold]{task.fields[name]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("best {task.fields[best]}"),
                TimeElapsedColumn(),
                transient=False,
            )
            self._p.start()
            self._task = self._p.add_task("tune", total=self.total, name=self.name, best="-")
        return self

    def update(self, done: int, best: float) -> None:
        if self._p is not None:
            text = f"{best * 1e3:.1f} µs" if math.isfinite(best) else "-"
            self._p.update(self._task, completed=done, best=text)

    def __exit__(self, *exc: Any) -> None:
        if self._p is not None:
            self._p.stop()


def load_log(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a candidate log written by :func:`autotune`.

    Example:
        >>> # load_log(report.log_path)["candidates"][0]["status"]
    """
    return json.loads(Path(path).read_text(encoding="utf-8"))


def dot_seeds(space: Any, default: Any) -> list[Any]:
    """Variants of the default of a GPU kernel with ``tl.dot``: what is usually best for an
    H100 matmul (persistent programs with tensor descriptors / TMA, 128x256 output tiles,
    4 stages), so the search starts from them instead of hoping to sample them.

    Example:
        >>> dot_seeds(None, None)
        []
    """
    launches = getattr(space, "launches", None)
    if not launches or space.device != "cuda" or not any(la.has_dot for la in launches):
        return []
    base = default.to_dict()
    tweaks: list[dict[str, Any]] = [{"num_stages": 4}]
    if "tensor_descriptor" in space.params.get("indexing", []):
        tweaks += [{"indexing": "tensor_descriptor"},
                   {"indexing": "tensor_descriptor", "pid_type": "persistent"}]
    # dots fused with whole-row work (flash attention): smaller query tiles come first
    # (causal 4x32x2048x64 bf16 on H100: 64x64 on 4 warps 206 µs, the 128x64 default 212)
    fused = any(la.has_dot and la.has_full_dim for la in launches)
    if fused and base["num_warps"] == 8:
        # two 8-warp programs an SM (causal attention 4x32x2048x64 bf16 on an H200: ptxas
        # took 130 registers with NaN-propagating maxima, 265.4 µs; capped at 128, 201.9 µs,
        # where plain maxima gave 205.7; benchmarks/results/kernels_probe_nan.json)
        tweaks.insert(0, {"maxnreg": 128})
    # widen each grid block of 128 in a dot launch to 256 (one at a time), and narrow it to 64
    for i, bp in enumerate(space.block_params):
        if bp.grid and bp.in_dot and base["block_sizes"][i] == 128:
            wide, narrow = list(base["block_sizes"]), list(base["block_sizes"])
            wide[i], narrow[i] = 256, 64
            tweaks.insert(1 if fused else len(tweaks), {"block_sizes": narrow, "num_warps": 4})
            tweaks += [{"block_sizes": wide}, {"block_sizes": wide, "num_warps": 8},
                       {"block_sizes": wide, "num_warps": 8, "pid_type": "persistent",
                        "indexing": "tensor_descriptor"},
                       {"block_sizes": wide, "num_warps": 8, "pid_type": "persistent_ws",
                        "indexing": "tensor_descriptor"}]
    return _variants(space, default, tweaks)


def _variants(space: Any, default: Any, tweaks: list[dict[str, Any]]) -> list[Any]:
    """The valid, distinct configs ``default | tweak``, in order, without the default."""
    from torchship.kernels.config import Config

    base = default.to_dict()
    out: list[Any] = []
    for tw in tweaks:
        try:
            cfg = Config.from_dict(base | tw)
        except Exception:  # noqa: BLE001 - a knob this space lacks
            continue
        if cfg != default and cfg not in out and space.is_valid(cfg):
            out.append(cfg)
    return out


def loop_seeds(space: Any, default: Any) -> list[Any]:
    """Variants of the default of a GPU kernel without ``tl.dot`` (memory-bound work): for
    each dimension streamed through an inner device loop (online softmax, cross entropy over
    a vocabulary), twice the loop block with one or two stages and half of it at 4 warps with
    three; two and four times the loop block on 4 warps and one stage; then the default with
    ``evict_first`` loads. So the search times the usual winners first (cross entropy
    8192x128256 bf16 on an H100: a 4096-wide loop block, 8 warps, 1 stage takes 841 µs; the
    default 2048/8/2, 1007 µs; later, 4096 on 4 warps 696 µs against 727 on 8. Row sums of
    4096^2 read once: evict_first 17.4 -> 16.2 µs, var_mean 31.8 -> 27.7 µs).

    Example:
        >>> loop_seeds(None, None)
        []
    """
    launches = getattr(space, "launches", None)
    if not launches or space.device != "cuda" or any(la.has_dot for la in launches):
        return []
    tweaks: list[dict[str, Any]] = []
    for i, bp in enumerate(space.block_params):
        if bp.grid:
            continue
        for scale, knobs in ((2, {"num_stages": 1}), (2, {"num_stages": 2}),
                             (0.5, {"num_warps": 4, "num_stages": 3})):
            blocks = list(default.block_sizes)
            blocks[i] = int(blocks[i] * scale)
            tweaks.append(knobs | {"block_sizes": blocks})
        for scale in (2, 4):  # wider loop blocks on 4 warps: more programs per SM
            blocks = list(default.block_sizes)
            blocks[i] = int(blocks[i] * scale)
            tweaks.append({"block_sizes": blocks, "num_warps": 4, "num_stages": 1})
    tweaks.append({"load_eviction": "first"})
    if any(la.rereads for la in launches):
        tweaks += [{"load_eviction": "stream"}, {"load_eviction": "reuse"}]
    return _variants(space, default, tweaks)

