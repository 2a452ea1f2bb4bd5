"""Input checks and ground-truth regions shared by every metric."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def as_maps_and_masks(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Score maps (N, H, W) of a float dtype, kept as given (float16 included: every step only
    compares scores, so no rounding enters), and masks (N, H, W) as bool."""
    scores = np.asarray(maps)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)  # integer scores: exact, and -inf becomes available
    masks = np.asarray(masks).astype(bool, copy=False)
    if scores.ndim != 3 or scores.shape != masks.shape:
        raise ValueError(f"maps and masks must both be (N, H, W); got {scores.shape} and {masks.shape}")
    if np.isnan(scores).any():
        raise ValueError("score maps contain NaN")
    return scores, masks


def check_fpr_limit(fpr_limit: float) -> None:
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1]; got {fpr_limit}")


def label_regions(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of each mask: labels (N, H, W), 0 = defect-free, regions numbered
    1..R across all masks; and the image index of each region, (R,)."""
    labels = np.zeros(masks.shape, np.int32)
    counts = np.zeros(len(masks), np.intp)
    eight = np.ones((3, 3), bool)
    offset = 0
    for i in np.flatnonzero(masks.any(axis=(1, 2))):  # each defective mask labelled once, on its own
        counts[i] = ndimage.label(masks[i], eight, output=labels[i])
        np.add(labels[i], offset, out=labels[i], where=labels[i] > 0)
        offset += counts[i]
    return labels, np.repeat(np.arange(len(masks)), counts)
