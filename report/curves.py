"""Curves for the summary page. The PRO curve is the metrics package's exact one; the metrics package
computes only areas for ROC, so the pixel ROC is drawn from a score histogram (exact curves can hold
millions of points) and the image ROC from the N image scores.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

import metrics
from common import one_line

CURVE_POINTS = 1000  # points per drawn curve, whatever the exact curve's length


def finite_range(maps: np.ndarray) -> tuple[float, float]:
    """(min, max) of the finite scores, widened to a non-empty interval."""
    finite = maps[np.isfinite(maps)]  # float16 is fine: min and max are exact
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def bin_index(values: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """The histogram bin of each score, `bins` equal bins over [lo, hi]; out-of-range scores join the end bins."""
    index = np.floor((np.nan_to_num(values, nan=lo) - lo) / (hi - lo) * bins)
    return np.clip(index, 0, bins - 1).astype(np.int64)


def binned_curves(maps: np.ndarray, masks: np.ndarray, bins: int = CURVE_POINTS) -> dict[str, np.ndarray]:
    """Pixel ROC and MVTec PRO curves from a `bins`-bin histogram of scores, for drawing only.

    Returns fpr, tpr, pro, each starting at (0, 0) and ordered by decreasing threshold. Regions are
    the 8-connected components of each mask; PRO is the mean over regions of the covered fraction.
    These are the exact curves of the binned scores (`bin_index`), so their areas are what the
    metrics package gives for maps replaced by their bin indices.
    """
    lo, hi = finite_range(maps)
    neg = np.zeros(bins, dtype=np.int64)
    pos = np.zeros(bins, dtype=np.int64)
    region_counts = []  # one (regions, bins) array per image
    structure = np.ones((3, 3), dtype=bool)
    for score, mask in zip(maps, masks):
        b = bin_index(score.astype(np.float32), lo, hi, bins)
        neg += np.bincount(b[~mask], minlength=bins)
        pos += np.bincount(b[mask], minlength=bins)
        if mask.any():
            labels, count = ndimage.label(mask, structure=structure)
            counts = np.bincount(labels[mask] * bins + b[mask], minlength=(count + 1) * bins)
            region_counts.append(counts.reshape(count + 1, bins)[1:])
    down = slice(None, None, -1)  # cumulate from the highest bin: predicted = score above threshold
    fp = np.concatenate([[0], np.cumsum(neg[down])])
    tp = np.concatenate([[0], np.cumsum(pos[down])])
    fpr = fp / max(fp[-1], 1)
    tpr = tp / max(tp[-1], 1)
    if region_counts:
        regions = np.concatenate(region_counts)
        covered = np.cumsum(regions[:, down], axis=1) / regions.sum(axis=1, keepdims=True)
        pro = np.concatenate([[0.0], covered.mean(axis=0)])
    else:
        pro = np.zeros_like(fpr)
    return {"fpr": fpr, "tpr": tpr, "pro": pro}


def pro_points(maps: np.ndarray, masks: np.ndarray, fpr_limit: float,
               binned: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, str]:
    """(fpr, pro, note) before resampling: metrics.pro_curve's exact points, else the binned curve."""
    try:
        fpr, pro = metrics.pro_curve(maps.astype(np.float32), masks, fpr_limit)
    except ValueError as e:  # NaN scores: a drawing must not sink the report, so say so on the page instead
        failed = f"metrics.pro_curve failed: {one_line(e)[:60]}"
        return binned["fpr"], binned["pro"], f"{CURVE_POINTS}-bin histogram ({failed})"
    if len(fpr) > 1:
        return fpr, pro, "exact (metrics.pro_curve)"
    return binned["fpr"], binned["pro"], f"{CURVE_POINTS}-bin histogram"


def pro_curve_for_drawing(maps: np.ndarray, masks: np.ndarray, fpr_limit: float,
                          binned: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, str]:
    """(fpr, pro, note) on CURVE_POINTS points of [0, fpr_limit]."""
    fpr, pro, note = pro_points(maps, masks, fpr_limit, binned)
    return (*resample_curve(fpr, pro, fpr_limit), note)


def resample_curve(x: np.ndarray, y: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """A monotone curve on CURVE_POINTS points of [0, limit], so the drawing stays small."""
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    grid = np.linspace(0.0, limit, CURVE_POINTS)
    return grid, np.interp(grid, x, y)


def image_roc(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(fpr, tpr) of the image scores, one point per distinct score from (0, 0); None without both classes.

    Joined by straight lines (ties as diagonals), its area is metrics.image_auroc.
    """
    positive = labels == 1
    if positive.all() or not positive.any():
        return None
    order = np.argsort(-scores, kind="stable")
    ranked, y = scores[order], positive[order]
    last = np.r_[np.diff(ranked) != 0, True]  # one point per distinct score
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    return np.r_[0, fp / fp[-1]], np.r_[0, tp / tp[-1]]
