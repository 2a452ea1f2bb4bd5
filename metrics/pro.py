"""Exact MVTec AD per-region-overlap curve and its normalised area (AU-PRO)."""
from __future__ import annotations

import math

import numpy as np

from .inputs import as_maps_and_masks, check_fpr_limit, label_regions

# numpy 2.0 renamed trapz to trapezoid and 2.4 removed trapz; requirements.txt allows both sides
# (numpy 2.4's stubs have no trapz: only numpy < 2 reaches it)
trapezoid = getattr(np, "trapezoid", None) or np.trapz  # type: ignore[attr-defined]


def pro_curve(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3,
              sorted_negatives: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro) at every distinct threshold, from (0, 0) up to and including the first point past
    fpr_limit. A pixel is anomalous when its score > t, so tied pixels switch together.

    FPR pools the defect-free pixels of all images; PRO is the mean over all 8-connected ground-truth
    regions of the fraction of each region above t. Empty arrays when either is undefined.
    fpr_limit=1.0 gives the whole curve, ending at (1, 1). `sorted_negatives`: the defect-free scores
    sorted ascending, when the caller has them (evaluate sorts them once for pixel_auroc too).
    """
    scores, masks = as_maps_and_masks(maps, masks)
    check_fpr_limit(fpr_limit)
    labels, region_image = label_regions(masks)
    positive = masks.ravel()
    scores = scores.ravel()
    negatives = scores[~positive] if sorted_negatives is None else sorted_negatives
    n_negatives, n_regions = negatives.size, region_image.size
    if n_negatives == 0 or n_regions == 0:
        return np.zeros(0), np.zeros(0)

    # Only pixels at or above this score can shape the curve up to the limit: skip sorting the rest.
    if sorted_negatives is None:
        negatives, cut = _needed_negatives(negatives, fpr_limit)
        negatives = np.sort(negatives)
    else:
        negatives, cut = _needed_of_sorted(sorted_negatives, fpr_limit)
    positives = scores[positive]
    region = labels.ravel()[positive] - 1
    weight = 1.0 / np.bincount(region, minlength=n_regions)[region]  # a whole region weighs 1
    needed = positives >= cut
    positives, weight = positives[needed], weight[needed]
    order = np.argsort(positives)
    positives, weight = positives[order], weight[order]

    # Merge the two sorted runs: each positive lands after the negatives not above it (as a stable
    # sort of both would place it), then read high to low.
    at = np.searchsorted(negatives, positives, side="right") + np.arange(positives.size)
    is_positive = np.zeros(negatives.size + positives.size, dtype=bool)
    is_positive[at] = True
    merged = np.empty(is_positive.size, dtype=np.result_type(negatives, positives))
    merged[at], merged[~is_positive] = positives, negatives
    gain = np.zeros(is_positive.size)
    gain[at] = weight
    values, is_negative, gain = merged[::-1], ~is_positive[::-1], gain[::-1]
    # One point per distinct score: tied pixels switch together, so take each tie's last pixel.
    last_of_tie = np.append(values[1:] != values[:-1], True)
    fpr = np.concatenate([[0.0], np.cumsum(is_negative)[last_of_tie] / n_negatives])
    pro = np.concatenate([[0.0], np.cumsum(gain)[last_of_tie] / n_regions])

    past = np.flatnonzero(fpr > fpr_limit)
    end = past[0] + 1 if past.size else fpr.size
    return fpr[:end], pro[:end]


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3,
          sorted_negatives: np.ndarray | None = None) -> float:
    """Trapezoid area under pro_curve from FPR 0 to fpr_limit (interpolated there) / fpr_limit."""
    fpr, pro = pro_curve(maps, masks, fpr_limit, sorted_negatives)
    if fpr.size == 0:
        return float("nan")
    if fpr[-1] > fpr_limit:  # move the first point past the limit onto it, along the segment
        fpr, pro = fpr.copy(), pro.copy()
        step = (fpr_limit - fpr[-2]) / (fpr[-1] - fpr[-2])
        pro[-1] = pro[-2] + step * (pro[-1] - pro[-2])
        fpr[-1] = fpr_limit
    return float(trapezoid(pro, fpr) / fpr_limit)


def _needed_of_sorted(negatives: np.ndarray, fpr_limit: float) -> tuple[np.ndarray, float]:
    """_needed_negatives of negatives already sorted ascending: the same values, as a slice."""
    n = negatives.size
    k = math.floor(fpr_limit * n) + 2
    if k >= n:
        return negatives, -math.inf
    cut = negatives[n - k]
    return negatives[np.searchsorted(negatives, cut, side="left"):], cut


def _needed_negatives(negatives: np.ndarray, fpr_limit: float) -> tuple[np.ndarray, float]:
    """The negatives scoring >= cut, and cut: at least k of them, where k false positives exceed
    fpr_limit, so every point up to the first one past the limit is exact.

    floor(limit * n) + 1 negatives suffice; one more absorbs rounding in limit * n.
    """
    n = negatives.size
    k = math.floor(fpr_limit * n) + 2
    if k >= n:
        return negatives, -math.inf
    # A slightly low guess from every 16th score usually keeps enough: 10x cheaper than partitioning all.
    sample = negatives[::16]
    rank = min(sample.size, math.ceil(k / 16 * 1.02) + 16)
    cut = np.partition(sample, sample.size - rank)[sample.size - rank]
    kept = negatives[negatives >= cut]
    if kept.size >= k:
        return kept, cut
    cut = np.partition(negatives, n - k)[n - k]  # exact k-th highest
    return negatives[negatives >= cut], cut
