"""The torchship.kernels autotuner: search strategies, crash-isolating harness, cache.

``tune(bound, args, effort="quick"|"full"|"none", budget_s=None, strategy=None) -> Config``
is what ``kernel.autotune`` and the first call of an unpinned kernel use.

Example:
    >>> from torchship.kernels.autotune import EFFORTS
    >>> sorted(EFFORTS)
    ['full', 'none', 'quick']
"""

from __future__ import annotations

from torchship.kernels.autotune.cache import AutotuneCache, CacheWarning, default_cache_dir
from torchship.kernels.autotune.harness import Harness, HarnessError, prewarm, shutdown_workers
from torchship.kernels.autotune.records import EFFORTS, Effort, Result
from torchship.kernels.autotune.search import (
    ExhaustiveSearch,
    GuidedSearch,
    ListSearch,
    RandomSearch,
    Strategy,
)
from torchship.kernels.autotune.target import KernelTarget, LocalTarget, Target
from torchship.kernels.autotune.timing import CudaEventTimer, ModelTimer, Timer, WallTimer
from torchship.kernels.autotune.tuner import TuneReport, autotune, cache_key, tune

__all__ = [
    "EFFORTS",
    "AutotuneCache",
    "CacheWarning",
    "CudaEventTimer",
    "Effort",
    "ExhaustiveSearch",
    "GuidedSearch",
    "Harness",
    "HarnessError",
    "KernelTarget",
    "ListSearch",
    "LocalTarget",
    "ModelTimer",
    "RandomSearch",
    "Result",
    "Strategy",
    "Target",
    "Timer",
    "TuneReport",
    "WallTimer",
    "autotune",
    "cache_key",
    "default_cache_dir",
    "prewarm",
    "shutdown_workers",
    "tune",
]
