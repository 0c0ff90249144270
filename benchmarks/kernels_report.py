"""Table, summary and autotune-curve plot of a ``benchmarks/kernels.py`` run (issues 4, 6).

A long suite may run as several parts (``kernels.py --part 1/2`` then ``--part 2/2``, each
within one device call); :func:`merge` joins their ``kernels.json`` files into one, keeping
each part's date and ceilings, and :func:`report` prints the rich table, writes
``kernels.md`` (the BENCHMARKS.md section body) and ``kernels_autotune.png``.

Example:
    $ python benchmarks/kernels_report.py bench-out/p1 bench-out/p2 --out bench-out/all
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

#: variants whose Helion body changed after 2026-11-26 16:19 (attention: 2-D blocks, exp2;
#: cross entropy, 2026-11-27: the target logit gathered once per row)
HELION_REWRITTEN = {"attention", "attention_causal", "cross_entropy"}


def merge(parts: list[Path], out_dir: Path) -> Path:
    """Join the ``kernels.json`` of several parts into ``out_dir/kernels.json``.

    Example:
        >>> merge([Path("p1"), Path("p2")], Path("all"))  # doctest: +SKIP
        PosixPath('all/kernels.json')
    """
    states = [json.loads((p / "kernels.json").read_text()) for p in parts]
    merged: dict[str, Any] = {
        "date": " + ".join(str(s.get("date")) for s in states),
        "argv": [s.get("argv") for s in states],
        "versions": states[0].get("versions", {}),
        "ceilings": states[0].get("ceilings", {}),
        "parts": [{k: s.get(k) for k in ("date", "argv", "ceilings", "versions", "prewarm_s")}
                  for s in states],
        "cases": [row for s in states for row in s.get("cases", [])],
        "crashed": [c for s in states for c in s.get("crashed", [])],
        "skipped": [c for s in states for c in s.get("skipped", [])],
        "helion_prev": {k: v for s in states for k, v in (s.get("helion_prev") or {}).items()},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "kernels.json"
    path.write_text(json.dumps(merged, indent=1, default=str))
    return path


def case_key(row: dict[str, Any]) -> str:
    """A case's identity across runs.

    Example:
        >>> case_key({"variant": "add", "shape_key": "gpu_small", "dtype": "bfloat16"})
        'add|gpu_small|bfloat16'
    """
    return f"{row['variant']}|{row['shape_key']}|{row['dtype']}"


def helion_prev(path: str | None) -> dict[str, Any]:
    """Helion-autotuned records of an earlier run's JSON (same kernels, card and versions),
    keyed by case, with that run's date and versions; {} when there is no such file.

    Example:
        >>> helion_prev(None)
        {}
    """
    if not path or not Path(path).exists():
        return {}
    old = json.loads(Path(path).read_text())
    out: dict[str, Any] = {}
    for row in old.get("cases", []):
        if row["variant"] in HELION_REWRITTEN:
            continue  # an earlier figure of a different Helion body is not carried
        rec = row.get("impls", {}).get("helion") or {}
        if rec.get("status") == "ok" and rec.get("tune_s"):
            out[case_key(row)] = rec | {"date": old.get("date"), "versions": old.get("versions")}
    return out


def _fmt_us(rec: dict[str, Any] | None) -> str:
    if not rec:
        return "-"
    if rec.get("status") != "ok":
        return "fail" if rec.get("status", "").startswith(("error", "wrong")) else "-"
    return f"{rec['ms'] * 1e3:.1f}"


def report(out_dir: Path) -> None:
    """Print the rich table and write kernels.md (the BENCHMARKS.md section body) and the plot.

    Example:
        >>> report(Path("bench-out"))  # doctest: +SKIP
    """
    from rich.console import Console
    from rich.table import Table

    state = json.loads((out_dir / "kernels.json").read_text())
    ceil, ver = state.get("ceilings", {}), state.get("versions", {})
    cols = ["kernel", "shape", "eager µs", "compile µs", "helion def µs", "helion tuned µs",
            "ours def µs", "ours hand µs", "ours tuned µs", "ours % ceil", "vs helion",
            "vs compile", "tune s (ours/helion)", "ours ≤1.02×helion at s"]
    prev = state.get("helion_prev") or {}
    used_prev: list[str] = []
    table = Table(title=f"kernels on {ver.get('gpu', '?')}: copy {ceil.get('copy_GBps', 0):.0f} GB/s, "
                  f"mm bf16 {ceil.get('mm_bf16_TFLOPs', 0):.0f} TFLOP/s")
    for c in cols:
        table.add_column(c, justify="left" if c in ("kernel", "shape") else "right")
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    vs_h, vs_c, vs_ht, vs_hd, vs_e = [], [], [], [], []
    for row in state["cases"]:
        im = row["impls"]
        best_ours = im.get("ours_tuned") if (im.get("ours_tuned") or {}).get("status") == "ok" else im.get("ours_default")
        hand = im.get("ours_hand") or {}
        def ratio(peer: str, sink: list[float], im: dict = im, best_ours: Any = best_ours) -> str:
            p = im.get(peer) or {}
            if p.get("status") == "ok" and best_ours and best_ours.get("status") == "ok":
                r = p["ms"] / best_ours["ms"]
                sink.append(r)
                return f"{r:.2f}x"
            return "-"
        shape = "x".join(map(str, row["shapes"][0])) + f" {row['dtype'].replace('bfloat16', 'bf16')}"
        ours_t, hel_run = im.get("ours_tuned") or {}, im.get("helion") or {}
        hel_def = hel_run if hel_run.get("status") == "ok" and not hel_run.get("tune_s") else {}
        hel_tuned = hel_run if hel_run.get("tune_s") else {}
        mark = ""
        if not hel_tuned and case_key(row) in prev:
            hel_tuned, mark = prev[case_key(row)], "†"
            used_prev.append(row["variant"])
        # the Helion figure we compare with: tuned (this run, else the earlier run's), else default
        hel = hel_tuned if hel_tuned.get("status") == "ok" else hel_run
        im = dict(im, helion=hel)
        tune = (f"{ours_t['tune_s']:.0f}" if ours_t.get("tune_s") else "-") + " / " + (
            f"{hel['tune_s']:.0f}" if hel.get("tune_s") else "def")
        pct = f"{best_ours['pct_ceiling']:.0f}%" if best_ours and best_ours.get("status") == "ok" else "-"
        if hel.get("status") == "ok" and best_ours and best_ours.get("status") == "ok":
            (vs_ht if hel.get("tune_s") else vs_hd).append(hel["ms"] / best_ours["ms"])
        eag = im.get("eager") or {}
        if eag.get("status") == "ok" and best_ours and best_ours.get("status") == "ok":
            vs_e.append(eag["ms"] / best_ours["ms"])
        reach = "-"
        if hel.get("status") == "ok" and ours_t.get("candidates"):
            # first time the search's own measurement got within 2% of Helion's final time
            hits = [c["elapsed_s"] for c in ours_t["candidates"]
                    if c.get("status") == "ok" and c["time_ms"] <= 1.02 * hel["ms"]]
            reach = f"{min(hits):.1f}" if hits else "never"
        tuned_cell = _fmt_us(hel_tuned or None) + (mark if hel_tuned else "")
        if hel_run.get("tune_s") and hel_run.get("status") != "ok":
            tuned_cell = "fail"
        cells = [row["variant"], shape, _fmt_us(im.get("eager")), _fmt_us(im.get("compile")),
                 _fmt_us(hel_def or None) if hel_def or hel_run.get("tune_s") else _fmt_us(hel_run),
                 tuned_cell,
                 _fmt_us(im.get("ours_default")), _fmt_us(hand or None), _fmt_us(ours_t), pct,
                 ratio("helion", vs_h, im), ratio("compile", vs_c, im), tune, reach]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    gm = lambda xs: math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")  # noqa: E731
    summary = (f"geomean speed-up of ours (tuned, else default) over Helion autotuned: "
               f"{gm(vs_ht):.2f}x ({len(vs_ht)} cases); over Helion's default config: "
               f"{gm(vs_hd):.2f}x ({len(vs_hd)} cases); over all Helion rows: {gm(vs_h):.2f}x "
               f"({len(vs_h)}); over torch.compile max-autotune-no-cudagraphs: {gm(vs_c):.2f}x "
               f"({len(vs_c)} cases); over eager: {gm(vs_e):.2f}x ({len(vs_e)} cases)")
    if used_prev:
        dates = sorted({str(r.get("date")) for r in prev.values()})
        summary += (f"\n\n† Helion autotuned (effort quick) in a separate run ({', '.join(dates)}) "
                    f"of the same Helion kernel, shape, card and versions (that run's own "
                    f"side-by-side table has ours too): {', '.join(used_prev)}.")
    Console(width=240).print(table)
    print(summary)
    if state.get("crashed"):
        print("crashed cases:", state["crashed"])
    if state.get("skipped"):
        print("skipped (time):", state["skipped"])
    parts = state.get("parts") or [state]
    ceil_text = "; ".join(
        f"{part.get('date')}: copy {part['ceilings'].get('copy_GBps', 0):.0f} GB/s, torch.mm bf16 "
        f"{part['ceilings'].get('mm_size')}^3 {part['ceilings'].get('mm_bf16_TFLOPs', 0):.0f} TFLOP/s"
        for part in parts if part.get("ceilings"))
    head = (f"{ver.get('gpu', '?')} (sm {ver.get('capability', '?')}), torch {ver.get('torch')}, "
            f"triton {ver.get('triton')}, helion {ver.get('helion')}. Run{'s' if len(parts) > 1 else ''}"
            f" and ceilings measured in {'each' if len(parts) > 1 else 'the same'} run: {ceil_text}.")
    (out_dir / "kernels.md").write_text(head + "\n\n" + "\n".join(md) + "\n\n" + summary + "\n")
    plot_curves(state, out_dir / "kernels_autotune.png")


def plot_curves(state: dict[str, Any], path: Path) -> None:
    """One panel per case with a Helion time: our best-so-far (search timer) against tuning
    seconds, with Helion's and torch.compile's final times as lines.

    Example:
        >>> plot_curves(json.loads(Path("bench-out/kernels.json").read_text()),
        ...             Path("bench-out/kernels_autotune.png"))  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in state["cases"] if (r["impls"].get("ours_tuned") or {}).get("candidates")]
    if not rows:
        return
    n = len(rows)
    cols = min(4, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(4 * cols, 3 * ((n + cols - 1) // cols)),
                             squeeze=False, dpi=110)
    for ax, row in zip(axes.flat, rows):
        cands = row["impls"]["ours_tuned"]["candidates"]
        best, xs, ys = math.inf, [], []
        for c in cands:
            if c.get("status") == "ok" and c["time_ms"] < best:
                best = c["time_ms"]
            if math.isfinite(best):
                xs.append(c["elapsed_s"])
                ys.append(best * 1e3)
        # x from 0 s: the gap before the first point is worker set-up and the first batch
        ax.step(xs, ys, where="post", marker=".", label="torchship best so far")
        ax.set_xlim(0, max(xs[-1] if xs else 1.0, 1.0) * 1.05)
        ax.ticklabel_format(axis="x", useOffset=False)
        for name, style in (("helion", "--"), ("compile", ":"), ("eager", "-.")):
            rec = row["impls"].get(name) or {}
            label = name
            prev = (state.get("helion_prev") or {}).get(case_key(row))
            if name == "helion" and not rec.get("tune_s") and prev:
                rec, label = prev, "helion tuned (earlier run) †"
            elif name == "helion":
                label = "helion tuned" if rec.get("tune_s") else "helion default"
            if rec.get("status") == "ok":
                ax.axhline(rec["ms"] * 1e3, linestyle=style, color="gray", label=label)
        ax.set_title(f"{row['variant']} {row['shape_key']}", fontsize=9)
        ax.set_xlabel("tuning seconds")
        ax.set_ylabel("µs")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)




def main(argv: list[str] | None = None) -> int:
    """Merge part directories (if several) and report.

    Example:
        >>> main(["bench-out"])  # doctest: +SKIP
        0
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("parts", nargs="+", help="output directories of kernels.py runs")
    p.add_argument("--out", default=None, help="where the merged report goes (several parts)")
    p.add_argument("--helion-prev", default=None,
                   help="a kernels.json whose Helion-tuned figures fill cases not tuned here (†)")
    opts = p.parse_args(argv)
    parts = [Path(x) for x in opts.parts]
    if len(parts) == 1 and opts.out is None and not opts.helion_prev:
        report(parts[0])
        return 0
    out = Path(opts.out or "bench-out/merged")
    path = merge(parts, out)
    if opts.helion_prev:
        state = json.loads(path.read_text())
        state["helion_prev"] = helion_prev(opts.helion_prev)
        path.write_text(json.dumps(state, indent=1, default=str))
    report(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
