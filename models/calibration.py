"""Thresholds for a deployed model, from held-out normal (validation) images.

Rule: with the validation scores sorted ascending s_1 <= ... <= s_n, the threshold is
s_{n - floor(val_fpr * n)}: at most a val_fpr fraction of normal validation scores lies strictly
above it, so predicting "anomalous" for score > threshold has false-positive rate <= val_fpr
on the validation images. Image threshold: on image scores; pixel threshold: on all pixels.
"""
from __future__ import annotations

import numpy as np


def threshold_at_fpr(scores: np.ndarray, val_fpr: float) -> float:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    allowed = int(np.floor(val_fpr * scores.size))  # false positives we may have
    return float(np.partition(scores, scores.size - 1 - allowed)[scores.size - 1 - allowed])


def calibrate(val_maps: np.ndarray, val_scores: np.ndarray, val_fpr: float = 0.01) -> dict[str, float]:
    """Image and pixel thresholds plus a summary of the normal validation scores."""
    pixels = np.asarray(val_maps, dtype=np.float32).ravel()
    quantiles = np.quantile(pixels, [0.5, 0.99])
    return {
        "val_fpr": float(val_fpr), "n_val": int(len(val_scores)),
        "image": threshold_at_fpr(val_scores, val_fpr), "pixel": threshold_at_fpr(pixels, val_fpr),
        "val_image_mean": float(np.mean(val_scores)), "val_image_std": float(np.std(val_scores)),
        "val_image_max": float(np.max(val_scores)),
        "val_pixel_median": float(quantiles[0]), "val_pixel_q99": float(quantiles[1]),
    }
