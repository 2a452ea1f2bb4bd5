"""Every metric a run computes, one entry each (definitions in docs/metrics.md).

An entry is the whole of a metric outside its function: `metrics.evaluate` computes the entries in this
order, metrics.json stores them under their names, results.csv has a column per `csv` entry, train.py's
headline and the PDF report show them as their entry says, and tools/summarize.py offers the columns.
Adding a metric: its function in a module of this package, one `Metric` below, a test.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .inputs import MetricInputs
from .paper import paper_det
from .pro import aupro
from .roc import auroc_of_sorted, image_auroc

if TYPE_CHECKING:
    from .resampled import Resampled


@dataclass(frozen=True)
class Metric:
    name: str  # the key in metrics.json and the results.csv column
    compute: Callable[[MetricInputs], float]  # nan where undefined
    label: str  # how the headline names it: "SEG AUPROC"
    report: str | None  # its row in the report's summary table ("{limit}": the FPR limit); None: not shown
    headline: str | None = None  # the --metric choice whose line prints it; None: no line of its own
    note: str = ""  # after its value on that line, in parentheses; "{name:.4f}" shows another metric's value
    contents: str | None = None  # its column heading in the report's contents table; None: no column
    csv: bool = True  # a results.csv column (and the mean row's)
    only_for: str | None = None  # computed only when --metric is this (the authors' checks of their protocol)
    every_image: bool = False  # with --allow-missing-masks, over every test image, not only the masked ones
    # Metrics of one thread run in turn and share its cached work (MetricInputs); threads run side by side,
    # as numpy's sorts and searches release the GIL.
    thread: str = "exact"
    # its values under bootstrap weights (B, N) -> (B,), for --ci (metrics/resampled.py); None: no interval
    resampled: Callable[[Resampled, np.ndarray], np.ndarray] | None = None

    @property
    def timed(self) -> bool:
        """Whether metrics.json's seconds get its time: every run's seconds have the same keys."""
        return self.only_for is None


REGISTRY: tuple[Metric, ...] = (
    Metric("aupro", lambda x: aupro(x.maps, x.masks, x.fpr_limit, sorted_negatives=x.sorted_negatives),
           "SEG AUPROC", "AU-PRO (MVTec, FPR ≤ {limit:g})", headline="auproc",
           note="paper protocol {paper_pro:.4f}", contents="AU-PRO", resampled=lambda r, w: r.aupro(w)),
    Metric("pixel_auroc", lambda x: auroc_of_sorted(x.sorted_negatives, np.sort(x.maps[x.masks])),
           "SEG AUROC", "Pixel AUROC", headline="auroc", note="paper protocol {paper_roc:.4f}",
           contents="pixel AUROC", resampled=lambda r, w: r.pixel_auroc(w)),
    Metric("image_auroc", lambda x: image_auroc(x.image_scores, x.labels), "DET AUROC", "Image AUROC",
           headline="auroc", note="paper protocol {paper_det:.4f}", contents="image AUROC", every_image=True,
           resampled=lambda r, w: r.image_auroc(w)),
    Metric("paper_pro", lambda x: x.counts.pro(x.fpr_limit), "SEG PRO", "PRO, paper's protocol (FPR ≤ {limit:g})",
           thread="paper", resampled=lambda r, w: r.paper_pro(w)),
    Metric("paper_roc", lambda x: x.counts.roc(), "SEG ROC", "Pixel ROC, paper's protocol", thread="paper",
           resampled=lambda r, w: r.paper_roc(w)),
    Metric("paper_ap", lambda x: x.counts.ap(x.fpr_limit), "SEG AP", "AP, paper's protocol (recall ≤ {limit:g})",
           headline="ap", note="paper protocol, recall <= --fpr", thread="paper", resampled=lambda r, w: r.paper_ap(w)),
    # how evenly the thresholds cover FPR, not the model: in metrics.json only; over every test image, as
    # train.py has always computed it
    Metric("paper_fpr", lambda x: x.counts.fpr_area(x.fpr_limit), "SEG FPR", None, headline="fpr",
           note="paper protocol, FPR vs FPR", csv=False, only_for="fpr", every_image=True, thread="paper",
           resampled=lambda r, w: r.paper_fpr(w)),
    # the authors' DET AUROC, their protocol on the image scores: shown beside image_auroc on the auroc
    # line, as their train.py printed it; in metrics.json only
    Metric("paper_det", lambda x: paper_det(x.image_scores, x.labels), "DET AUROC (paper)", None, csv=False,
           only_for="auroc", every_image=True, resampled=lambda r, w: r.paper_det(w)),
)

CSV_NAMES: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.csv)
CSV_BOUNDS: tuple[str, ...] = tuple(f"{m}_{end}" for m in CSV_NAMES for end in ("lo", "hi"))  # --ci's columns
HEADLINES: tuple[str, ...] = tuple(dict.fromkeys(m.headline for m in REGISTRY if m.headline))  # --metric choices


def bounds(intervals: dict[str, list[float]]) -> dict[str, float]:
    """metrics.json's intervals ({metric: [low, high]}) as the CSV_BOUNDS columns' values."""
    return {f"{name}_{end}": value for name, pair in intervals.items() for end, value in zip(("lo", "hi"), pair)}


def by_name(names: Iterable[str]) -> list[Metric]:
    """The entries of these names, in registry order; a name without one is a ValueError."""
    wanted = set(names)
    unknown = wanted - {m.name for m in REGISTRY}
    if unknown:
        raise ValueError(f"no metric {', '.join(sorted(unknown))}")
    return [m for m in REGISTRY if m.name in wanted]


def computed_for(headline: str | None) -> list[Metric]:
    """What a run with this --metric computes."""
    return [m for m in REGISTRY if m.only_for is None or m.only_for == headline]


class _Values(dict):
    def __missing__(self, key: str) -> float:
        return float("nan")


def headline_line(values: dict[str, float], headline: str) -> str:
    """What --metric `headline` prints after the category's name: each of its metrics, two spaces apart."""
    shown = _Values(values)
    parts = []
    for m in REGISTRY:
        if m.headline == headline:
            note = f" ({m.note.format_map(shown)})" if m.note else ""
            parts.append(f"{m.label} {shown[m.name]:.4f}{note}")
    return "  ".join(parts)


def headline(category: str, values: dict[str, float], metric: str) -> str:
    """train.py's line for a category (or the mean) under --metric `metric`."""
    if not values:
        return f"{category}: no defective test images: no metrics (model and thresholds written)"
    if values["pixel_auroc"] != values["pixel_auroc"]:  # nan: no defect pixels (no masks), the image AUROC only
        return f"{category}: DET AUROC {values['image_auroc']:.4f} (no masks: no pixel metrics)"
    return f"{category}: {headline_line(values, metric)}"
