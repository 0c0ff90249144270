"""PNG plot of an autotune run: best time so far against candidates evaluated.

Example:
    >>> # plot_report(report, "tune.png")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def plot_report(report: Any, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Write the best-time curve (and every candidate as a dot, failures as crosses) to ``path``.

    Example:
        >>> from torchship.kernels.autotune.tuner import TuneReport
        >>> from torchship.kernels.autotune.records import Result
        >>> import tempfile
        >>> rep = TuneReport(config={}, results=[Result({}, "ok", 2.0), Result({}, "ok", 1.0)])
        >>> plot_report(rep, tempfile.mktemp(suffix=".png")).suffix
        '.png'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ok = [(i, r.time_ms * 1e3) for i, r in enumerate(report.results, 1) if r.ok]
    bad = [i for i, r in enumerate(report.results, 1) if not r.ok]
    if ok:
        ax.scatter(*zip(*ok), s=10, alpha=0.4, label="candidate", color="tab:gray")
        ymin = min(t for _, t in ok)
        ymax = sorted(t for _, t in ok)[int(0.9 * (len(ok) - 1))]
        ax.set_ylim(ymin * 0.95, max(ymax, ymin) * 1.1)
    curve = report.best_curve()
    if curve:
        xs, ys = zip(*curve)
        ax.step(xs, [y * 1e3 for y in ys], where="post", color="tab:blue", label="best so far")
    if bad:
        y = ax.get_ylim()[1] if ok else 1.0
        ax.scatter(bad, [y] * len(bad), marker="x", color="tab:red", s=14,
                   label="failed / rejected", clip_on=False)
    ax.set_xlabel("candidates evaluated")
    ax.set_ylabel("time (µs)")
    ax.set_title(title or f"autotune ({report.strategy or 'cache'}, {report.elapsed_s:.1f} s)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out
