"""Plain records shared by the search, the harness and the tuner: results and budgets.

Example:
    >>> r = Result(config={"num_warps": 4}, status="ok", time_ms=0.25)
    >>> r.ok, r.to_json()["status"]
    (True, 'ok')
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

#: statuses a candidate can end in; only "ok" may win.
STATUSES = ("ok", "compile_error", "runtime_error", "crash", "timeout", "wrong", "skipped")


def config_id(config: Any) -> str:
    """A stable text identity of a config (its JSON dict), used to de-duplicate candidates.

    Example:
        >>> config_id({"b": 2, "a": 1})
        '{"a":1,"b":2}'
    """
    to_dict = getattr(config, "to_dict", None)
    data = to_dict() if callable(to_dict) else config
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def config_dict(config: Any) -> Any:
    """``config.to_dict()`` when it has one, else the config itself (fakes, plain dicts).

    Example:
        >>> config_dict({"num_warps": 4})
        {'num_warps': 4}
    """
    to_dict = getattr(config, "to_dict", None)
    return to_dict() if callable(to_dict) else config


@dataclass
class Result:
    """The outcome of evaluating one candidate config.

    Example:
        >>> Result(config={}, status="crash", error="exit code -11").ok
        False
    """

    config: Any
    status: str
    time_ms: float | None = None
    error: str = ""
    compile_s: float | None = None
    bench_s: float | None = None
    index: int = -1
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    sustained: bool = False  # timed under sustained load (a confirmation round on a GPU)

    @property
    def ok(self) -> bool:
        """True when the candidate compiled, ran, matched the reference and was timed."""
        return self.status == "ok" and self.time_ms is not None and math.isfinite(self.time_ms)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict for the candidate log.

        Example:
            >>> Result(config={"a": 1}, status="ok", time_ms=1.0).to_json()["time_ms"]
            1.0
        """
        return {
            "index": self.index,
            "config": config_dict(self.config),
            "status": self.status,
            "time_ms": self.time_ms,
            "error": self.error[-2000:],
            "compile_s": self.compile_s,
            "bench_s": self.bench_s,
            "elapsed_s": round(self.elapsed_s, 4),
            **({"extra": self.extra} if self.extra else {}),
        }


@dataclass(frozen=True)
class Effort:
    """How much searching an effort level allows.

    Example:
        >>> EFFORTS["quick"].max_evals > 0
        True
    """

    name: str
    max_evals: int
    budget_s: float
    patience: int
    min_improvement: float = 0.01


EFFORTS: dict[str, Effort] = {
    "none": Effort("none", 0, 0.0, 0),
    "quick": Effort("quick", 64, 15.0, 24),
    "full": Effort("full", 600, 300.0, 120),
}


def resolve_effort(effort: str | Effort | None) -> Effort:
    """Map ``none|quick|full`` (or an :class:`Effort`) to its limits; errors name the choices.

    Example:
        >>> resolve_effort("full").max_evals
        600
    """
    if isinstance(effort, Effort):
        return effort
    name = (effort or "quick").strip().lower()
    if name not in EFFORTS:
        raise ValueError(f"autotune effort must be one of none|quick|full, got {effort!r}")
    return EFFORTS[name]
