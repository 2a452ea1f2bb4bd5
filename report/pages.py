"""The contents page of a multi-category report and each category's summary page."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from metrics import registry
from results import METRICS_FILE, SCORES_FILE

from .curves import CURVE_POINTS, binned_curves, image_roc, pro_curve_for_drawing, resample_curve
from .layout import CONTENTS_ROWS, GOOD, PAGE_SIZE, defect_colours, fmt, inches, page, table, table_wide
from .load import Category


def title(cat: Category) -> str:
    return f"{cat.dataset} / {cat.name}"


def run_line(info: dict[str, Any]) -> str:
    """model · approx · k · eps · sizes · seed, as far as metrics.json has them."""
    parts = [str(info[key]) for key in ("model", "approx") if info.get(key) is not None]
    if info.get("k") is not None:
        parts.append(f"k = {info['k']}")
    if info.get("eps") is not None:
        parts.append(f"eps = {float(info['eps']):g}")
    size = "input " + fmt(info.get("image_size"))
    if info.get("crop"):
        size += f", crop {fmt(info['crop'])}"
    parts.append(size)
    if info.get("seed") is not None:
        parts.append(f"seed {info['seed']}")
    return "  ·  ".join(parts)


def footer(cat: Category, ckpt: Path) -> str:
    """Where the page's numbers come from, relative to the experiment folder where possible."""
    try:
        where = cat.folder.relative_to(ckpt)
    except ValueError:
        where = cat.folder
    return f"{ckpt} / {where} / {SCORES_FILE}, {METRICS_FILE}"


def contents_pages(cats: list[Category], ckpt: Path, first_pages: list[int], pages: int) -> list[Figure]:
    """A table of every category with its metrics and first page, CONTENTS_ROWS a page, and their mean."""
    figures = []
    chunks = [cats[i:i + CONTENTS_ROWS] for i in range(0, len(cats), CONTENTS_ROWS)]
    for c, chunk in enumerate(chunks):
        fig = page(f"Anomaly segmentation report: {cats[0].dataset}",
                   f"{len(cats)} {'category' if len(cats) == 1 else 'categories'} · experiment {ckpt} · "
                   f"model {cats[0].info.get('model', '—')}",
                   "AU-PRO: MVTec definition, integrated up to each category's FPR limit and divided by it",
                   c + 1, pages)
        shown = [m for m in registry.REGISTRY if m.contents is not None]
        columns = ["test (good/def.)", *(m.contents for m in shown), "page"]
        rows = []
        for cat in chunk:
            m = cat.info.get("metrics", {})
            i = cats.index(cat)
            rows.append((cat.name, f"{cat.n} ({(cat.labels != 1).sum()}/{(cat.labels == 1).sum()})",
                         *(fmt(m.get(metric.name), 3) for metric in shown), str(first_pages[i])))
        if c == len(chunks) - 1 and len(cats) > 1:
            def mean(key: str) -> str:
                values = [cat.info.get("metrics", {}).get(key) for cat in cats]
                values = [float(v) for v in values if v is not None]
                return fmt(float(np.mean(values)), 3) if values else "—"
            rows.append(("mean", "", *(mean(metric.name) for metric in shown), ""))
        height = 0.22 * (len(rows) + 3.4)
        ax = inches(fig, 0.55, 1.0, 6.2, height)
        table_wide(ax, "Contents", rows, ["category", *columns], bold_last=len(rows) > len(chunk))
        figures.append(fig)
    return figures


def _timings(seconds: dict[str, Any], most: int = 5) -> list[tuple[str, float]]:
    """metrics.json's "seconds", the metric_* entries summed as one, at most `most` rows and the total.

    `device_total` is a subtotal (fit to score) and not a phase of its own. The metrics run side by side,
    so their sum can pass their wall time: "other" is what the total leaves after the rows shown."""
    times: dict[str, float] = {}
    for key, value in seconds.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in _SUBTOTALS:
            name = "metrics" if key.startswith("metric") else key.replace("_", " ")
            times[name] = times.get(name, 0.0) + float(value)
    total = times.pop("total", None)
    rows = list(times.items())
    if len(rows) > most:
        rest = sum(v for _, v in rows[most - 1:])
        if total is not None:
            rest = max(0.0, min(rest, total - sum(v for _, v in rows[:most - 1])))
        rows = rows[:most - 1] + [("other", rest)]
    return rows + ([("total", total)] if total is not None else [])


_SUBTOTALS = ("device_total",)


def summary_page(cat: Category, ckpt: Path, page_no: int, pages: int) -> Figure:
    """Metrics and run tables, ROC and PRO curves, and image-score histograms per defect type."""
    info, m = cat.info, cat.info.get("metrics", {})
    limit = cat.fpr_limit
    n_good, n_bad = int((cat.labels != 1).sum()), int((cat.labels == 1).sum())
    fig = page(f"{title(cat)}: summary", run_line(info), footer(cat, ckpt), page_no, pages)

    results = [(metric.report.format(limit=limit), fmt(m.get(metric.name))) for metric in registry.REGISTRY
               if metric.report is not None]
    results.append(("Pixel threshold (score >)", fmt(cat.threshold)))
    if cat.image_threshold is not None:
        results.append(("Image threshold (score >)", fmt(cat.image_threshold)))
    seconds = info.get("seconds") or {}
    run = [
        ("Train / validation images", f"{fmt(info.get('n_train'))} / {fmt(info.get('n_val'))}"),
        ("Test images (good / defective)", f"{cat.n} ({n_good} / {n_bad})"),
        ("Thresholds in curves", fmt(info.get("num_thresholds"))),
    ]
    run += [(f"Time: {name}", f"{value:.1f} s") for name, value in _timings(seconds)]
    height = 0.2 * (max(len(results), len(run)) + 2.2)
    table(inches(fig, 0.55, 1.0, 3.35, 0.2 * (len(results) + 2.2)), "Results", results)
    table(inches(fig, 4.35, 1.0, 3.35, 0.2 * (len(run) + 2.2)), "Run", run)
    fig.text(0.55 / PAGE_SIZE[0], 1 - (1.0 + height + 0.17) / PAGE_SIZE[1],
             f"Pixel threshold {cat.threshold_source}.", fontsize=7, color="0.3")

    top = 1.0 + height + 0.75
    binned = binned_curves(cat.maps, cat.masks)
    has_defects = bool(cat.masks.any())

    ax = inches(fig, 0.95, top, 2.9, 2.9)
    ax.plot([0, 1], [0, 1], color="0.75", lw=0.6, ls="--")
    if has_defects:
        fpr, tpr = resample_curve(binned["fpr"], binned["tpr"], 1.0)
        ax.plot(fpr, tpr, color="C0", label=f"pixel (AUROC {fmt(m.get('pixel_auroc'), 3)})")
    roc = image_roc(cat.labels, cat.image_scores)
    if roc is not None:
        ax.step(*roc, where="post", color="C1", label=f"image (AUROC {fmt(m.get('image_auroc'), 3)})")
    if has_defects or roc is not None:
        ax.legend(loc="lower right", frameon=False)
    else:
        ax.text(0.5, 0.5, "no defective test images", ha="center", va="center", color="0.4",
                transform=ax.transAxes)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate",
           title="ROC")
    ax.set_aspect("equal")

    ax = inches(fig, 4.6, top, 2.9, 2.9)
    if has_defects:
        fpr, pro, note = pro_curve_for_drawing(cat.maps, cat.masks, limit, binned)
        ax.fill_between(fpr, pro, color="C2", alpha=0.25, lw=0,
                        label=f"AU-PRO {fmt(m.get('aupro'), 3)}\n(shaded area / {limit:g})")
        ax.plot(fpr, pro, color="C2")
        ax.legend(loc="lower right", frameon=False)
    else:
        note = ""
        ax.text(0.5, 0.5, "no defective test pixels", ha="center", va="center", color="0.4",
                transform=ax.transAxes)
    ax.set(xlim=(0, limit), ylim=(0, 1.01), xlabel="false positive rate (pixels)",
           ylabel="per-region overlap (PRO)", title=f"PRO up to FPR {limit:g}")
    ax.set_box_aspect(1)

    caption = (f"Legend values from metrics.json. Drawn: pixel ROC from a {CURVE_POINTS}-bin histogram"
               + (f", PRO {note}." if note else "."))
    fig.text(0.95 / PAGE_SIZE[0], 1 - (top + 2.9 + 0.55) / PAGE_SIZE[1], caption, fontsize=6.5, color="0.3",
             va="baseline")

    _score_histograms(fig, cat, top + 2.9 + 1.15)
    return fig


def _score_histograms(fig: Figure, cat: Category, top: float) -> None:
    """Image-score histograms, one row per type on shared bins (good on top, and as a grey outline
    behind every defect type), each image's score as a tick below its row."""
    names = sorted(set(cat.defects.tolist()), key=lambda d: (d != GOOD, d))
    colours = defect_colours(names)
    height = float(np.clip(0.36 * len(names) + 0.3, 1.2, PAGE_SIZE[1] - top - 1.1))
    ax = inches(fig, 1.45, top, 6.05, height)
    finite = cat.image_scores[np.isfinite(cat.image_scores)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1, int(np.clip(2 * math.sqrt(cat.n), 10, 40)) + 1)
    counts = {name: np.histogram(cat.image_scores[cat.defects == name], bins=bins)[0] for name in names}
    scale = 0.78 / max(1, max(c.max() for c in counts.values()))  # the tallest bar of all: 0.78 of a row
    rows = len(names)
    for r, name in enumerate(names):
        base = rows - 1 - r
        if name != GOOD and GOOD in counts:
            ax.stairs(base + 0.12 + counts[GOOD] * scale, bins, baseline=base + 0.12, color="0.45", lw=0.6,
                      ls=(0, (2, 1.5)))
        ax.stairs(base + 0.12 + counts[name] * scale, bins, baseline=base + 0.12, fill=True,
                  color=colours[name], alpha=0.75 if name != GOOD else 0.6, lw=0)
        values = cat.image_scores[cat.defects == name]
        ax.plot(values, np.full(len(values), base + 0.05), "|", ms=4, mew=0.7, color=colours[name])
        ax.axhline(base, color="0.8", lw=0.4)
    if cat.image_threshold is not None:
        ax.axvline(cat.image_threshold, color="black", lw=0.8, ls="--")
        ax.text(cat.image_threshold, 1.0, " image threshold", transform=ax.get_xaxis_transform(), fontsize=6.5,
                va="bottom")
    ax.set_yticks([rows - 1 - r + 0.4 for r in range(rows)],
                  [f"{name} ({(cat.defects == name).sum()})" for name in names])
    ax.tick_params(axis="y", length=0)
    ax.spines["left"].set_visible(False)
    ax.set(xlim=(bins[0], bins[-1]), ylim=(-0.05, rows), xlabel="image score (max of the anomaly map)")
    ax.set_title("Image scores per type (n); dashed grey: good images, for comparison", pad=12)
