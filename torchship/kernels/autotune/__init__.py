"""The torchship.kernels autotuner: search strategies, crash-isolating harness, cache.

``tune(bound, args, effort="quick"|"full"|"none", budget_s=None, strategy=None) -> Config``
is what ``kernel.autotune(args)`` and the first call of an unpinned kernel use; ``autotune``
takes the same arguments and returns a :class:`TuneReport` (every candidate, the best-time
curve, the stop reason).

How a run goes:

1. The cache (:class:`AutotuneCache`, one JSON file per key under ``$TORCHSHIP_CACHE_DIR``,
   default ``~/.cache/torchship``) is consulted unless ``TORCHSHIP_FORCE_AUTOTUNE=1``. The key
   holds the kernel's source hash, its specialisation, every argument's dtype/shape/strides,
   the device name and compute capability, and the torch/triton/torchship versions.
2. A strategy proposes batches: ``guided`` (default: the default config, hand-given
   ``seeds``, cached winners of nearby shapes, their neighbourhood and a few random points,
   then surrogate-ranked local search), ``random``, ``exhaustive`` (picked automatically for
   spaces smaller than the effort's candidate cap) or a list of configs.
3. The :class:`Harness` compiles each batch in parallel ``spawn`` worker processes, then checks
   and times candidates one at a time in a benchmark worker (CUDA events, L2 flush, median;
   the back-to-back time per call instead where it is over 25% longer: a host-bound launch);
   a crash, hang or poisoned CUDA context costs one candidate. The benchmark worker gets CUDA
   arguments as CUDA IPC handles and runs only on copies; compile workers get layouts only
   (random floats, real integer data). The time budget includes starting the workers
   (``TuneReport.setup_s``: 8-9 s on a 16-core H100 box; ``prewarm()`` pays it ahead).
   Outputs (and arguments the kernel writes) must match the default config's before a
   candidate may win.
4. The run stops at the effort's candidate cap, the time budget, or when 24 (quick) / 120
   (full) candidates in a row bring no 1% gain; the top 3 and the default are re-timed in two
   interleaved rounds, on a GPU under sustained load (250 ms of launches before each ~100 ms
   timing: the clock a busy card holds, not the boost it has between compiles); the winner is
   cached and every candidate is logged as JSON under ``$TORCHSHIP_CACHE_DIR/logs``.

Effort: ``none`` (default config), ``quick`` (<= 64 candidates, 15 s), ``full`` (<= 600, 300 s);
``$TORCHSHIP_AUTOTUNE_EFFORT`` sets it for first-call tuning. CLI: ``torchship kernels autotune
FILE::KERNEL --shape 4096,4096``, ``torchship kernels cache list|clear|export|import``.

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
