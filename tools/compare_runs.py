"""Paired comparisons of runs on the same test images: `tools/summarize.py --compare A B`.

A side (A or B) is one run or several runs of one setting that differ only in --seed (the spread due
to W alone): a category folder (metrics.json and scores.npz), its metrics.json, a folder searched for
category folders (a sweep's, or a grid's variants), a quoted glob, or a comma-separated list of these.
Every run must hold the same test images (paths, masks, labels), checked before any metric is computed.
Each metric both sides have is recomputed from scores.npz and resampled on the same draws of test images
for every run (metrics/bootstrap.py); the difference is mean(A) - mean(B) over the runs of each side, its
interval the BCa interval of the resampled differences, flagged when it contains 0
(docs/metrics.md, "Paired comparisons").
"""
from __future__ import annotations

from dataclasses import dataclass
from glob import glob
from pathlib import Path
from typing import Any

import numpy as np

import metrics
from common import UserError
from metrics.bootstrap import Bootstrap, Resamples, average, interval, spread
from results import METRICS_FILE, SCORES_FILE, Scores, read_metrics, read_scores

# what makes two runs one setting: everything train.py records of the model and the data but the seed
SETTING = ("dataset", "category", "model", "weights", "approx", "k", "eps", "unbiased", "image_size", "crop",
           "protocol", "layers", "pre_relu", "tile", "tile_stride", "backbone_dtype", "label")
EVALUATION = ("fpr_limit", "num_thresholds")  # what the metrics of both sides must share


@dataclass
class Run:
    folder: Path
    summary: dict[str, Any]
    scores: Scores


def run_folders(side: str) -> list[Path]:
    """The category folders a side names (see the module's description), in order, each once."""
    found: list[Path] = []
    for part in (p.strip() for p in side.split(",")):
        matches = sorted(glob(part)) if any(c in part for c in "*?[") else [part] if part else []
        if not matches:
            raise UserError(f"--compare {side}: nothing matches {part or '(an empty name)'}; pass run folders")
        for match in map(Path, matches):
            if match.name == METRICS_FILE and match.is_file():
                found.append(match.parent)
            elif (match / METRICS_FILE).is_file():
                found.append(match)
            elif match.is_dir():  # a sweep's or a grid's folder: every committed category folder under it
                found += sorted(f.parent for f in match.rglob(METRICS_FILE)
                                if not any(p.startswith(".") for p in f.relative_to(match).parts))
            else:
                raise UserError(f"--compare: {match} is neither a run's folder nor its metrics.json")
    if not found:
        raise UserError(f"--compare {side}: no metrics.json under it; pass the category folders train.py wrote")
    return list(dict.fromkeys(found))


def load(folder: Path) -> Run:
    if not (folder / SCORES_FILE).is_file():
        raise UserError(f"--compare: {folder} has no {SCORES_FILE} (the test images' scores); rerun train.py there")
    run = Run(folder, read_metrics(folder / METRICS_FILE), read_scores(folder / SCORES_FILE))
    if run.scores.paths is None or not all(run.scores.paths):
        raise UserError(f"--compare: {folder / SCORES_FILE} records no image paths (an older version wrote it), so "
                        "its test images cannot be checked; rerun train.py there")
    return run


def check_one_setting(runs: list[Run], side: str) -> None:
    first = runs[0]
    for run in runs[1:]:
        for key in SETTING:
            if first.summary.get(key) != run.summary.get(key):
                raise UserError(f"--compare {side}: {first.folder} and {run.folder} differ in {key} "
                                f"({first.summary.get(key)} and {run.summary.get(key)}); the runs of a side may "
                                "differ only in --seed")


def check_same_images(runs: list[Run]) -> None:
    """The same test images in the same order, with the same masks and labels, scored the same way."""
    first = runs[0]
    for run in runs[1:]:
        a, b = first.scores, run.scores
        if a.paths is None or b.paths is None or not np.array_equal(a.paths, b.paths):
            raise UserError(f"--compare: {first.folder} and {run.folder} were not run on the same test images "
                            f"({len(a)} and {len(b)} images, other paths or order); compare runs of one test set")
        if not (np.array_equal(a.masks, b.masks) and np.array_equal(a.labels, b.labels)):
            raise UserError(f"--compare: {first.folder} and {run.folder} have other masks or labels for the same "
                            "images (another --protocol or image size?); compare runs of one test set")
        for key in EVALUATION:
            if first.summary.get(key) != run.summary.get(key):
                raise UserError(f"--compare: {first.folder} and {run.folder} differ in {key}; rerun one with the "
                                "other's --fpr and --nsamples")


def resampled(run: Run, names: list[str], bootstrap: Bootstrap) -> dict[str, Resamples]:
    """The run's metrics recomputed from scores.npz, with their replicates; a defective image without a
    mask counts only for the metrics over every image, as train.py does."""
    s, replicates = run.scores, dict[str, Resamples]()
    limit, thresholds = run.summary["fpr_limit"], run.summary["num_thresholds"]
    unmasked = (s.labels == 1) & ~s.masks.any(axis=(1, 2))
    keep = ~unmasked
    metrics.evaluate(s.maps[keep], s.masks[keep], s.image_scores[keep], s.labels[keep], limit, thresholds, names=names,
                     bootstrap=bootstrap, resampled=replicates)
    every = [m.name for m in metrics.REGISTRY if m.every_image and m.name in names]
    if unmasked.any() and every:
        metrics.evaluate(s.maps, s.masks, s.image_scores, s.labels, limit, thresholds, names=every,
                         bootstrap=bootstrap, resampled=replicates)
    return replicates


def fmt(value: float, sign: bool = False) -> str:
    if value != value:
        return "-"
    text = f"{value:+.3f}" if sign else f"{value:.3f}"
    return text.replace("0.", ".", 1)


def described(runs: list[Run]) -> str:
    s = runs[0].summary
    seeds = ", ".join(str(r.summary.get("seed")) for r in runs)
    where = str(runs[0].folder) if len(runs) == 1 else f"{runs[0].folder} and {len(runs) - 1} more"
    return (f"{where}: {s.get('model')} {s.get('approx')} k={s.get('k')}, "
            f"seed{'s' if len(runs) > 1 else ''} {seeds}")


def compare(side_a: str, side_b: str, bootstrap: Bootstrap) -> str:
    """The Markdown comparison of two sides."""
    a, b = [load(f) for f in run_folders(side_a)], [load(f) for f in run_folders(side_b)]
    check_one_setting(a, side_a)
    check_one_setting(b, side_b)
    check_same_images(a + b)
    names = [m.name for m in metrics.REGISTRY if all(m.name in r.summary["metrics"] for r in a + b)]
    if not names:
        raise UserError("--compare: the runs share no metric (no defective test images?)")
    runs: dict[str, list[list[Resamples]]] = {n: [[], []] for n in names}
    for side, group in enumerate((a, b)):
        for run in group:
            found = resampled(run, names, bootstrap)
            for n in names:
                runs[n][side].append(found[n])
    s = a[0].scores
    level = f"{bootstrap.level:g}%"
    lines = [f"A: {described(a)}", f"B: {described(b)}", "",
             f"{len(s)} test images ({int((s.labels == 0).sum())} normal, {int((s.labels == 1).sum())} defective), "
             f"the same for both; metrics from scores.npz; {bootstrap.resamples} paired resamples (seed "
             f"{bootstrap.seed}), {level} BCa intervals", "",
             f"| metric | A | B | A - B | {level} interval of A - B | |", "|---|---|---|---|---|---|"]
    for n in names:
        sides = [average(runs[n][side]) for side in (0, 1)]
        cells = [f"{fmt(r.point)} [{fmt(lo)}, {fmt(hi)}]" for r, (lo, hi) in
                 zip(sides, (interval(r, bootstrap.level) for r in sides))]
        difference = sides[0] - sides[1]
        low, high = interval(difference, bootstrap.level)
        flag = "contains 0" if low <= 0 <= high else ""
        lines.append(f"| {n} | {cells[0]} | {cells[1]} | {fmt(difference.point, True)} | "
                     f"[{fmt(low, True)}, {fmt(high, True)}] | {flag} |")
    if len(a) > 1 or len(b) > 1:
        lines += ["", "Spread due to W alone (mean ± sample std over seeds, the same test images):", "",
                  f"| metric | A ({len(a)} runs) | B ({len(b)} runs) |", "|---|---|---|"]
        for n in names:
            cells = [f"{fmt(m)} ± {fmt(sd)}" for m, sd in (spread(r.point for r in runs[n][side]) for side in (0, 1))]
            lines.append(f"| {n} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"
