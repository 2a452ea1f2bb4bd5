"""What each category shows (threshold, colour scale, which test images in which order) and the PDF itself."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless; must come before anything imports pyplot

import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from tqdm import tqdm

from common import UserError, atomic_write

from .curves import finite_range
from .image_pages import image_page
from .layout import CONTENTS_ROWS, ROWS_PER_PAGE, STYLE
from .load import Category
from .pages import contents_pages, summary_page
from .zoom_pages import ZoomRow, plan_zooms, zoom_chunks, zoom_page


def image_order(labels: np.ndarray, scores: np.ndarray, limit: int | None = None) -> np.ndarray:
    """Defective images by ascending image score, then good images by descending score.

    With a `limit`, at most half of it goes to defective images when there are good ones to fill
    the rest, so the worst false alarms are shown as well as the worst misses.
    """
    index = np.arange(len(labels))
    bad, good = index[labels == 1], index[labels != 1]
    bad = bad[np.argsort(scores[bad], kind="stable")]
    good = good[np.argsort(-scores[good], kind="stable")]
    if limit is not None:
        n_bad = min(len(bad), max(limit - len(good), (limit + 1) // 2))
        bad, good = bad[:n_bad], good[:limit - n_bad]
    return np.concatenate([bad, good]).astype(int)


def choose_threshold(cat: Category, override: float | None) -> tuple[float, str]:
    """(pixel threshold, where it comes from); a pixel is anomalous when its score is > threshold."""
    if override is not None:
        return float(override), "given with --threshold"
    thresholds = cat.info.get("thresholds") or {}
    if thresholds.get("pixel") is not None:
        source = "calibrated on normal validation images"
        if thresholds.get("val_fpr") is not None:
            source += f" at FPR {float(thresholds['val_fpr']):g}"
        elif thresholds.get("alpha") is not None:
            source += f", false alarms <= {float(thresholds['alpha']):.3g} on new normal images"
        return float(thresholds["pixel"]), source
    normal = cat.maps[~cat.masks].astype(np.float32)
    normal = normal[np.isfinite(normal)]
    if normal.size == 0:
        return finite_range(cat.maps)[1], "maximum score (no defect-free test pixels)"
    return (float(np.quantile(normal, 1.0 - cat.fpr_limit)),
            f"at FPR {cat.fpr_limit:g} on the test set's normal pixels (no calibrated threshold saved)")


def prepare(cat: Category, threshold: float | None, max_images: int) -> None:
    """Sets what `cat` shows: the pixel threshold, the colour scale, the test images in order and their crops."""
    cat.threshold, cat.threshold_source = choose_threshold(cat, threshold)
    cat.vmin, cat.vmax = finite_range(cat.maps)
    cat.order = image_order(cat.labels, cat.image_scores, max_images)
    cat.zooms = plan_zooms(cat)


def image_pages(n_shown: int) -> int:
    return math.ceil(n_shown / ROWS_PER_PAGE)


def page_plan(cat: Category) -> list[tuple[np.ndarray, int, list[list[ZoomRow]]]]:
    """Per image page of a prepared category: its test images, the rank of its first, and the crops of
    each zoom page that follows it."""
    plan = []
    for p in range(image_pages(len(cat.order))):
        rows = cat.order[p * ROWS_PER_PAGE:(p + 1) * ROWS_PER_PAGE]
        plan.append((rows, p * ROWS_PER_PAGE + 1, zoom_chunks(cat, rows, p * ROWS_PER_PAGE + 1)))
    return plan


def category_pages(cat: Category) -> int:
    """Pages of a prepared category, counted from its data before anything is drawn: the summary, then
    each image page and its zoom pages."""
    return 1 + sum(1 + len(chunks) for _, _, chunks in page_plan(cat))


def render(cats: list[Category], ckpt: Path, out: Path, with_contents: bool, progress: bool = True) -> int:
    """Write the report to `out` atomically; returns the page count PdfPages reports."""
    per_cat = [category_pages(cat) for cat in cats]
    n_contents = math.ceil(len(cats) / CONTENTS_ROWS) if with_contents else 0
    pages = n_contents + sum(per_cat)
    first_pages = [int(p) for p in np.cumsum([n_contents + 1] + per_cat[:-1])]
    counted = 0

    def write(tmp: str) -> None:
        nonlocal counted
        title = f"{cats[0].dataset} {cats[0].name if len(cats) == 1 else 'all categories'}: anomaly report"
        # no CreationDate: the file does not depend on when it was drawn
        metadata = {"Title": title, "Creator": "visualizer.py (semi-orthogonal embedding)", "CreationDate": None}
        # the file opened here, so it is closed also when the PDF writer fails (a full disk) midway
        with open(tmp, "wb") as file, matplotlib.rc_context(STYLE), PdfPages(file, metadata=metadata) as pdf, \
                tqdm(total=pages, unit="page", desc="report", disable=not progress) as bar:
            def emit(fig: Figure) -> None:
                pdf.savefig(fig)
                bar.update()

            if with_contents:
                for fig in contents_pages(cats, ckpt, first_pages, pages):
                    emit(fig)
            for cat, page_no in zip(cats, first_pages):
                emit(summary_page(cat, ckpt, page_no, pages))
                for rows, first_rank, chunks in page_plan(cat):
                    page_no += 1
                    emit(image_page(cat, ckpt, rows, first_rank, len(cat.order), page_no, pages))
                    for crops in chunks:
                        page_no += 1
                        emit(zoom_page(cat, ckpt, crops, page_no, pages))
            counted = pdf.get_pagecount()

    try:
        atomic_write(out, write)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    if counted != pages:
        raise RuntimeError(f"wrote {counted} pages, expected {pages}")
    return counted
