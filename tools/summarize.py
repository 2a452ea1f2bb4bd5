"""Turn train.py's results CSV into the seed README's Markdown tables.

    python tools/summarize.py runs/.../results.csv [--out table.md] [--metric paper_roc,paper_pro]

Rows are grouped by configuration (dataset, model, approx, k, eps, image size, crop, seed); a category
run more than once in a configuration keeps its last row; rows whose category is `mean` (written by
train.py after multi-category runs) are ignored and the mean is recomputed. Output, for every
configuration: a table with one row per category and a `mean` row, one column per metric. KolektorSDD
(`kolektor`, categories fold0..2) also gets the seed's layout, one table per metric: Fold 1 | Fold 2 |
Fold 3 | Avg (Std) | KolektorSDD2, where Std is the sample standard deviation (n - 1) over the folds
and the KolektorSDD2 column takes the `kolektor2` row of the same model, approx, k and seed.
Numbers are printed as in the seed (.953). Columns: `--metric`, a comma list (repeatable) of the metric
columns of results.csv (`results.METRICS`: the registry's, metrics/registry.py; default: every one the CSV
has, as a file written before a metric existed lacks its column). Runs with different `--label` tags are
different configurations.
A cell of a run with `--ci` shows its interval: `.942 [.931, .951]`.
`--provenance A B` prints instead every field of two runs' provenance (metrics.json: command, versions,
device, git commit, image digests) that differs.
`--compare A B` prints instead each metric of two runs (or two sets of seeds of one setting) on the same
test images, their difference and its paired-bootstrap interval, flagged when it contains 0, and with
several seeds the spread over them (tools/compare_runs.py; `--ci`, `--bootstrap`, `--seed`).
`--paper` prints instead the figures the paper publishes (tools/paper_results.json, with their source)
beside this run's and the difference (tools/paper_table.py); script/reproduce_paper.sh ends with it.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import _root  # noqa: F401
import compare_runs
import paper_table

from common import UserError, atomic_write, run_cli, write_problem
from datasets import specs
from metrics.bootstrap import Bootstrap
from pipeline.intervals import check_level, check_resamples
from pipeline.options import seed_value
from pipeline.provenance import differences
from results import METRICS, METRICS_FILE, number, read_metrics, read_rows

CONFIG = ["dataset", "model", "approx", "k", "eps", "image_size", "crop", "seed", "label", "protocol"]
MVTEC_ORDER = ["carpet", "grid", "leather", "tile", "wood", "bottle", "cable", "capsule", "hazelnut",
               "metal_nut", "pill", "screw", "toothbrush", "transistor", "zipper"]


def dataset_titles() -> dict[str, str]:
    """Each dataset module's title (its DatasetSpec), in the order of the tables."""
    return {s.name: s.title for s in specs()}


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    text = f"{value:.3f}"
    return text[1:] if text.startswith("0.") else text.replace("-0.", "-.")


def with_interval(row: dict, metric: str) -> str:
    """The metric's cell, `.942 [.931, .951]` where the row has its --ci interval."""
    low, high = number(row.get(f"{metric}_lo")), number(row.get(f"{metric}_hi"))
    value = fmt(number(row.get(metric)))
    return value if low is None or high is None else f"{value} [{fmt(low)}, {fmt(high)}]"


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def std(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def category_rows(path: Path, metrics: list[str] | None = None) -> list[dict[str, str]]:
    """The per-category rows of a results CSV; the `mean` rows are left out, as they are recomputed.
    `metrics`: the columns asked for (default: at least one of this version's metric columns)."""
    rows = read_rows(path)
    missing = [c for c in ["dataset", "category", *(metrics or [])] if rows and c not in rows[0]]
    if rows and not metrics and not any(m in rows[0] for m in METRICS):
        missing.append(f"any metric ({', '.join(METRICS)})")
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}; pass a results.csv written by train.py")
    return [row for row in rows if row.get("category") and row["category"] != "mean"]


def category_key(dataset: str, category: str):
    if dataset == "mvtecad" and category in MVTEC_ORDER:
        return (0, MVTEC_ORDER.index(category), category)
    return (1, 0, category)


def config_label(config: tuple) -> str:
    c = dict(zip(CONFIG, config))
    title = dataset_titles().get(c["dataset"], c["dataset"])
    parts = [p for p in (c["model"], c["approx"], f"k={c['k']}" if c["k"] else "",
                         f"eps={c['eps']}" if c["eps"] else "", c["image_size"],
                         f"crop {c['crop']}" if c["crop"] else "", f"seed {c['seed']}" if c["seed"] else "",
                         f"label {c['label']}" if c["label"] else "",
                         f"{c['protocol']} protocol" if c["protocol"] else "") if p]
    return f"{title}: {', '.join(parts)}"


def group(rows: list[dict]) -> dict[tuple, dict[str, dict]]:
    groups: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        config = tuple(row.get(c, "") or "" for c in CONFIG)
        groups.setdefault(config, {})[row["category"]] = row  # a rerun replaces the earlier row
    return groups


def category_table(config: tuple, rows: dict[str, dict], metrics: list[str]) -> list[str]:
    dataset = config[0]
    lines = [f"### {config_label(config)}", "",
             "| Category | " + " | ".join(metrics) + " |",
             "|---" * (len(metrics) + 1) + "|"]
    for category in sorted(rows, key=lambda c: category_key(dataset, c)):
        values = [with_interval(rows[category], m) for m in metrics]
        lines.append(f"| {category} | " + " | ".join(values) + " |")
    if len(rows) > 1:
        cells = []
        for m in metrics:
            values = [v for r in rows.values() if (v := number(r.get(m))) is not None]
            cell = fmt(mean(values))
            if dataset == "kolektor" and std(values) is not None:
                cell += f" ({fmt(std(values))})"
            cells.append(cell)
        lines.append("| **mean** | " + " | ".join(cells) + " |")
    return lines + [""]


def kolektor_tables(groups: dict[tuple, dict[str, dict]], metrics: list[str]) -> list[str]:
    """The seed's KolektorSDD table: one row per model configuration, per metric."""
    def model_key(config):
        c = dict(zip(CONFIG, config))
        return c["model"], c["approx"], c["k"], c["seed"], c["image_size"], c["protocol"]

    ksdd = {model_key(c): rows for c, rows in groups.items() if c[0] == "kolektor"}
    ksdd2: dict[tuple, dict[str, dict]] = {}
    for c, rows in groups.items():  # KolektorSDD2 of the same model; the same image size preferred
        if c[0] == "kolektor2":
            ksdd2[model_key(c)] = rows
            ksdd2.setdefault(model_key(c)[:4] + model_key(c)[5:], rows)
    if not ksdd:
        return []
    lines = []
    for m in metrics:
        lines += [f"### KolektorSDD and KolektorSDD2 ({m})", "",
                  "| Model | Fold 1 | Fold 2 | Fold 3 | Avg (Std) | KolektorSDD2 |",
                  "|---|---|---|---|---|---|"]
        for key in sorted(ksdd, key=str):
            rows = ksdd[key]
            folds = [number(rows[f"fold{f}"].get(m)) if f"fold{f}" in rows else None for f in range(3)]
            present = [v for v in folds if v is not None]
            avg = fmt(mean(present)) + (f" ({fmt(std(present))})" if std(present) is not None else "")
            second = ksdd2.get(key) or ksdd2.get(key[:4] + key[5:], {})
            k2 = mean([v for r in second.values() if (v := number(r.get(m))) is not None])
            model, approx, k, seed, size, protocol = key
            label = f"{model} {approx} k={k}" + (f" {size}" if size else "") + (f" seed {seed}" if seed else "")
            label += f" {protocol}" if protocol else ""
            lines.append(f"| {label} | " + " | ".join(fmt(v) for v in folds) + f" | {avg} | {fmt(k2)} |")
        lines.append("")
    return lines


def summarize(rows: list[dict], metrics: list[str]) -> str:
    groups = group(rows)
    lines: list[str] = []
    order = list(dataset_titles())
    for config in sorted(groups, key=lambda c: (order.index(c[0]) if c[0] in order else len(order), c)):
        lines += category_table(config, groups[config], metrics)
    lines += kolektor_tables(groups, metrics)
    return "\n".join(lines).rstrip() + "\n"


def parse_metrics(values: list[str] | None) -> list[str]:
    if not values:
        return list(METRICS)
    chosen = [m.strip() for v in values for m in v.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METRICS]
    if unknown or not chosen:
        raise UserError(f"--metric {', '.join(unknown) or '(none)'} is not one of {', '.join(METRICS)}")
    return list(dict.fromkeys(chosen))


def provenance_table(a: Path, b: Path) -> str:
    """A Markdown table of every provenance field two runs do not share."""
    recorded = []
    for path in (a, b):
        path = path / METRICS_FILE if path.is_dir() else path
        summary = read_metrics(path)
        if not summary.get("provenance"):
            raise UserError(f"{path} records no provenance (written before it existed); rerun train.py")
        recorded.append(summary["provenance"])
    rows = differences(*recorded)
    if not rows:
        return f"{a} and {b}: the same provenance\n"
    lines = [f"| field | {a} | {b} |", "|---|---|---|"]
    return "\n".join(lines + [f"| {key} | {x} | {y} |" for key, x, y in rows]) + "\n"


def compare_bootstrap(args: argparse.Namespace) -> Bootstrap:
    """--ci, --bootstrap and --seed of --compare, each checked in one line."""
    check_level(args.ci)
    check_resamples(args.bootstrap)
    return Bootstrap(args.ci, args.bootstrap, seed_value(args.seed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="?", help="results.csv written by train.py")
    parser.add_argument("--provenance", type=Path, nargs=2, metavar=("A", "B"), default=None,
                        help="instead, where two runs' provenance differs (each a metrics.json or its folder)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    parser.add_argument("--metric", action="append", default=None,
                        help=f"columns, comma-separated (default: {','.join(METRICS)})")
    parser.add_argument("--paper", action="store_true",
                        help="instead, the paper's published figures (tools/paper_results.json) beside this run's, "
                             "with the difference")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                        help="instead, A against B on the same test images: each a run's folder or metrics.json, a "
                             "folder of runs, a quoted glob or a comma list; several runs on a side are seeds")
    parser.add_argument("--ci", type=float, default=Bootstrap.level, metavar="LEVEL",
                        help=f"--compare's interval level in percent (default {Bootstrap.level:g})")
    parser.add_argument("--bootstrap", type=int, default=Bootstrap.resamples, metavar="B",
                        help=f"--compare's paired resamples (default {Bootstrap.resamples})")
    parser.add_argument("--seed", default=Bootstrap.seed, help="--compare's resamples' seed (default 0)")
    args = parser.parse_args(argv)
    if args.provenance:
        sys.stdout.write(provenance_table(*args.provenance))
        return 0
    if args.compare:
        sys.stdout.write(compare_runs.compare(*args.compare, compare_bootstrap(args)))
        return 0
    if args.results is None:
        raise UserError("pass a results.csv, or --provenance A B, or --compare A B")
    metrics = parse_metrics(args.metric)
    if args.out is not None:  # before reading anything: a table that cannot be written is refused up front
        problem = f"{args.out} is a folder" if args.out.is_dir() else write_problem(args.out)
        if problem is not None:
            raise UserError(f"--out {args.out} cannot be written: {problem}; pass another --out")
    rows = category_rows(args.results, metrics if args.metric else None)
    if not args.metric:  # every metric this file has
        metrics = [m for m in metrics if not rows or m in rows[0]]
    if not rows:
        raise UserError(f"{args.results} has no result rows; run train.py first")
    text = paper_table.compare(rows, paper_table.load_figures()) if args.paper else summarize(rows, metrics)
    if args.out:
        data = text.encode("utf-8")

        def write(tmp: str) -> None:
            Path(tmp).write_bytes(data)
        atomic_write(args.out, write, size=len(data))
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    run_cli(main)
