"""The paper's ablation figure from a grid's results.csv: a metric against k, one line per --approx.

    python tools/ablation_figure.py runs/ablation/results.csv --metric aupro --out runs/ablation/ablation

Each point is a variant's value: its `mean` row over the categories where train.py wrote one (a run of
several categories), else its category's row. With several seeds a point is the mean over them, with
error bars of +/- their standard deviation (W's random draw alone). The shaded band is the `--ci`
interval (`<metric>_lo` .. `<metric>_hi`, averaged over the seeds) where the CSV has one: how far the
test images alone let the value move. `full` and `global` (k = F) are drawn as one marker at k = F.
Writes OUT.png and OUT.pdf whole (never a half-written figure).
"""
from __future__ import annotations

import argparse
import io
import math
from collections import defaultdict
from pathlib import Path

import _root  # noqa: F401

from common import UserError, atomic_write, run_cli, write_problem
from metrics.registry import by_name
from results import METRICS, read_rows

Point = tuple[float, float, float | None, float | None, float | None]  # k, value, std, low, high


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", help="a results.csv of a grid run (train.py --approx A,B --k K1,K2 ...)")
    p.add_argument("--metric", default="aupro", help=f"the column drawn (default aupro; one of {', '.join(METRICS)})")
    p.add_argument("--out", required=True, help="the figure's path without suffix: OUT.png and OUT.pdf")
    p.add_argument("--title", default=None, help="the figure's title (default: dataset, model and categories)")
    return p.parse_args(argv)


def number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def curves(rows: list[dict[str, str]], metric: str) -> dict[str, list[Point]]:
    """Per approx, its points in order of k: the mean over seeds of each variant's value, their standard
    deviation (None for one seed) and the mean interval bounds (None without them)."""
    means = [r for r in rows if r.get("category") == "mean"]
    picked = means or rows  # one category: its rows; several: train.py's mean row per variant
    if not means and len({r.get("category") for r in rows}) > 1:
        raise UserError("the report has several categories but no mean rows; run them in one train.py process "
                        "(a comma-separated --category) or pass one category's results")
    latest: dict[tuple[str, str, str], dict[str, str]] = {}
    for row in picked:  # a variant run again keeps its last row
        latest[(row.get("approx", ""), row.get("k", ""), row.get("seed", ""))] = row
    grouped: dict[tuple[str, float], list[dict[str, str]]] = defaultdict(list)
    for (approx, k, _), row in latest.items():
        if number(k) is not None and number(row.get(metric)) is not None:
            grouped[(approx, float(k))].append(row)
    found: dict[str, list[Point]] = defaultdict(list)
    for (approx, k), group in sorted(grouped.items()):
        values = [float(row[metric]) for row in group]
        mean = sum(values) / len(values)
        spread = None if len(values) < 2 else math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        lows = [number(row.get(f"{metric}_lo")) for row in group]
        highs = [number(row.get(f"{metric}_hi")) for row in group]
        low = sum(lows) / len(lows) if all(v is not None for v in lows) else None  # type: ignore[misc]
        high = sum(highs) / len(highs) if all(v is not None for v in highs) else None  # type: ignore[misc]
        found[approx].append((k, mean, spread, low, high))
    if not found:
        raise UserError(f"no {metric} values in the report; pass a results.csv of a run with masks, or another "
                        "--metric")
    return dict(found)


def draw(found: dict[str, list[Point]], metric: str, title: str) -> tuple[bytes, bytes]:
    """The figure as PNG and PDF bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for approx, points in found.items():
        ks = [p[0] for p in points]
        values = [p[1] for p in points]
        line = axes.plot(ks, values, marker="o", label=approx)[0]
        if any(p[2] is not None for p in points):
            axes.errorbar(ks, values, yerr=[p[2] or 0 for p in points], fmt="none", ecolor=line.get_color(),
                          capsize=3)
        band = [p for p in points if p[3] is not None and p[4] is not None]
        if band:
            axes.fill_between([p[0] for p in band], [p[3] for p in band], [p[4] for p in band],  # type: ignore[misc]
                              color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set_xscale("log")
    ks = sorted({p[0] for points in found.values() for p in points})
    axes.set_xticks(ks, [f"{k:g}" for k in ks])
    axes.minorticks_off()
    axes.set_xlabel("k")
    axes.set_ylabel(by_name([metric])[0].label if metric in METRICS else metric)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(title="--approx")
    figure.tight_layout()
    parts = []
    for kind in ("png", "pdf"):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=kind)
        parts.append(buffer.getvalue())
    plt.close(figure)
    return parts[0], parts[1]


def default_title(rows: list[dict[str, str]]) -> str:
    first = rows[0]
    categories = sorted({r["category"] for r in rows if r.get("category") != "mean"})
    shown = ", ".join(categories[:4]) + (f" and {len(categories) - 4} more" if len(categories) > 4 else "")
    return f"{first.get('dataset', '')}: {shown}, {first.get('model', '')}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.metric not in METRICS:
        raise UserError(f"--metric {args.metric}: choose a results.csv column ({', '.join(METRICS)})")
    out = Path(args.out)
    for path in (out.with_name(out.name + ".png"), out.with_name(out.name + ".pdf")):
        problem = write_problem(path)
        if problem is not None:
            raise UserError(f"--out {path} cannot be written: {problem}; pass another --out")
    rows = read_rows(args.report)
    if not rows:
        raise UserError(f"{args.report} has no rows; run train.py first")
    png, pdf = draw(curves(rows, args.metric), args.metric, args.title or default_title(rows))
    for data, suffix in ((png, ".png"), (pdf, ".pdf")):
        atomic_write(out.with_name(out.name + suffix), lambda tmp, data=data: Path(tmp).write_bytes(data))
    print(f"figure: {out}.png, {out}.pdf")
    return 0


if __name__ == "__main__":
    run_cli(main)
