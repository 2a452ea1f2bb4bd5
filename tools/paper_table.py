"""The paper's published figures (tools/paper_results.json) beside a run's: `tools/summarize.py --paper`.

Each figure names the dataset, backbone, k, metric (paper_pro or paper_roc: the authors' protocol) and
the categories it aggregates (mean, or the sample std over KolektorSDD's folds). A results CSV's rows
are matched on dataset, model, k and approx ortho; when several configurations match (another image
size or seed), the one whose row came last in the file is used, as summarize.py lets a rerun replace
earlier rows. A figure whose categories are not all in the file gets the value of those present,
marked "(n of m)", or "-" when none is.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from common import UserError
from results import number

FIGURES = Path(__file__).resolve().with_name("paper_results.json")


def load_figures(path: Path = FIGURES) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable figures file ({type(e).__name__})") from None
    return data


def matching_rows(rows: list[dict], figure: dict) -> dict[str, dict]:
    """category -> row of the last matching configuration (rows of one configuration: the last per category)."""
    wanted = [row for row in rows if row.get("dataset") == figure["dataset"] and row.get("model") == figure["model"]
              and row.get("k") == str(figure["k"]) and row.get("approx", "ortho") == "ortho"
              and row.get("category") in figure["categories"]]
    if not wanted:
        return {}
    config = [wanted[-1].get(c, "") for c in ("eps", "image_size", "crop", "seed")]
    return {row["category"]: row for row in wanted if [row.get(c, "") for c in ("eps", "image_size", "crop",
                                                                                   "seed")] == config}


def run_value(rows: list[dict], figure: dict) -> tuple[float | None, int]:
    """The run's figure and how many of the figure's categories it is computed over."""
    found = matching_rows(rows, figure)
    values = [v for c in figure["categories"] if c in found and (v := number(found[c].get(figure["metric"])))
              is not None]
    if not values:
        return None, 0
    m = sum(values) / len(values)
    if figure["aggregate"] == "mean":
        return m, len(values)
    if figure["aggregate"] == "std":
        if len(values) < 2:
            return None, len(values)
        return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)), len(values)
    raise UserError(f"{FIGURES.name}: unknown aggregate {figure['aggregate']!r} (mean or std)")


def fmt(value: float | None, sign: bool = False) -> str:
    """The seed's style, .942; with sign, +.004 / -.012."""
    if value is None:
        return "-"
    text = f"{value:+.3f}" if sign else f"{value:.3f}"
    return text.replace("0.", ".", 1) if abs(value) < 1 else text


def compare(rows: list[dict], figures: dict) -> str:
    """A Markdown table: each published figure, the run's, and run minus paper."""
    lines = ["### The paper's figures and this run's (authors' protocol)", "",
             "| Table | Figure | Setting | Metric | Paper | This run | Difference |", "|---|---|---|---|---|---|---|"]
    for figure in figures["figures"]:
        value, n = run_value(rows, figure)
        total = len(figure["categories"])
        shown = fmt(value) + (f" ({n} of {total})" if value is not None and n < total else "")
        difference = fmt(value - figure["value"], sign=True) if value is not None else "-"
        setting = f"{figure['model']}, k={figure['k']}"
        lines.append(f"| {figure['table']} | {figure['figure']} | {setting} | {figure['metric']} | "
                     f"{fmt(figure['value'])} | {shown} | {difference} |")
    lines += ["", f"Paper: {figures['source']}.", f"{figures.get('note', '')}".strip()]
    return "\n".join(lines).rstrip() + "\n"
