"""Exact ROC-AUC (ties count one half, as sklearn's roc_auc_score)."""
from __future__ import annotations

import numpy as np

from .inputs import as_maps_and_masks


def auroc_of_samples(negatives: np.ndarray, positives: np.ndarray) -> float:
    """P(positive > negative) + P(tie) / 2, i.e. Mann-Whitney U / (P * N); nan without both classes."""
    return auroc_of_sorted(np.sort(negatives.ravel()), np.sort(positives.ravel()))


def auroc_of_sorted(negatives: np.ndarray, positives: np.ndarray) -> float:
    """auroc_of_samples of two 1-D arrays already sorted ascending (sorted queries keep searchsorted
    cache-friendly)."""
    if negatives.size == 0 or positives.size == 0:
        return float("nan")
    below = np.searchsorted(negatives, positives, side="left").sum(dtype=np.int64)
    not_above = np.searchsorted(negatives, positives, side="right").sum(dtype=np.int64)
    # below + not_above = 2U, an exact integer; divide once so no rounding accumulates
    return (int(below) + int(not_above)) / (2 * negatives.size * positives.size)


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float:
    """ROC-AUC over all pixels of all images pooled."""
    scores, masks = as_maps_and_masks(maps, masks)
    return auroc_of_samples(scores[~masks], scores[masks])


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC-AUC of image scores (N,) against labels (N,), 1 = defective."""
    scores, defective = checked_image_scores(scores, labels)
    return auroc_of_samples(scores[~defective], scores[defective])


def checked_image_scores(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image scores (N,) of a float dtype and labels (N,) as bool, 1 = defective."""
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    labels = np.asarray(labels).astype(bool, copy=False)
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"scores and labels must both be (N,); got {scores.shape} and {labels.shape}")
    if np.isnan(scores).any():
        raise ValueError("image scores contain NaN")
    return scores, labels
