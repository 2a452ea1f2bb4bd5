"""Every metric a run computes, one entry each (definitions in docs/metrics.md).

An entry is the whole of a metric outside its function: `metrics.evaluate` computes the entries in this
order, metrics.json stores them under their names, results.csv has a column per `csv` entry, train.py's
headline and the PDF report show them as their entry says, and tools/summarize.py offers the columns.
Adding a metric: its function in a module of this package, one `Metric` below, a test.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from .inputs import MetricInputs
from .pro import aupro
from .roc import auroc_of_sorted, image_auroc


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

    @property
    def timed(self) -> bool:
        """Whether metrics.json's seconds get its time: every run's seconds have the same keys."""
        return self.only_for is None


REGISTRY: tuple[Metric, ...] = (
    Metric("aupro", lambda x: aupro(x.maps, x.masks, x.fpr_limit, sorted_negatives=x.sorted_negatives),
           "SEG AUPROC", "AU-PRO (MVTec, FPR ≤ {limit:g})", headline="auproc",
           note="paper protocol {paper_pro:.4f}", contents="AU-PRO"),
    Metric("pixel_auroc", lambda x: auroc_of_sorted(x.sorted_negatives, np.sort(x.maps[x.masks])),
           "SEG AUROC", "Pixel AUROC", headline="auroc", note="paper protocol {paper_roc:.4f}",
           contents="pixel AUROC"),
    Metric("image_auroc", lambda x: image_auroc(x.image_scores, x.labels), "DET AUROC", "Image AUROC",
           headline="auroc", contents="image AUROC", every_image=True),
    Metric("paper_pro", lambda x: x.counts.pro(x.fpr_limit), "SEG PRO", "PRO, paper's protocol (FPR ≤ {limit:g})",
           thread="paper"),
    Metric("paper_roc", lambda x: x.counts.roc(), "SEG ROC", "Pixel ROC, paper's protocol", thread="paper"),
    Metric("paper_ap", lambda x: x.counts.ap(x.fpr_limit), "SEG AP", "AP, paper's protocol (recall ≤ {limit:g})",
           headline="ap", note="paper protocol, recall <= --fpr", thread="paper"),
    # how evenly the thresholds cover FPR, not the model: in metrics.json only; over every test image, as
    # train.py has always computed it
    Metric("paper_fpr", lambda x: x.counts.fpr_area(x.fpr_limit), "SEG FPR", None, headline="fpr",
           note="paper protocol, FPR vs FPR", csv=False, only_for="fpr", every_image=True, thread="paper"),
)

CSV_NAMES: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.csv)
HEADLINES: tuple[str, ...] = tuple(dict.fromkeys(m.headline for m in REGISTRY if m.headline))  # --metric choices


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
