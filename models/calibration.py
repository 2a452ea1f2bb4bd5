"""Thresholds for a deployed model from normal calibration images that were not fitted, and the
conformal p-values of new images against them. Pure numpy: the formulas, nothing about files.

conformal (the default, split conformal prediction): with the n calibration image scores sorted,
s_(1) <= ... <= s_(n), the image threshold is s_(r), r = ceil((n + 1)(1 - alpha)). A new normal image
exchangeable with the calibration images (same line, same conditions) scores above it with probability
at most (n + 1 - r) / (n + 1) <= alpha, for any n and any score distribution. When r > n (n smaller
than (1 - alpha) / alpha) no finite threshold has that guarantee and none is returned: `needed_images`
says how many it takes (99 for alpha = 0.01). The pixel threshold is the same rule on each calibration
image's maximum pixel score, so a new normal image has no pixel above it with probability >= 1 - alpha.
alpha None: 1 / (n + 1), the smallest n images can guarantee (r = n: their maximum).

empirical (--val-fpr, the former rule): s_(n - floor(val_fpr n)) of the image scores, and the same on all
pixels for the pixel threshold. At most a val_fpr fraction of the *calibration* scores lies above it;
nothing is promised about new images (with 20 images, val_fpr 0.01 is their maximum).

f1 (for comparison, with labelled defective calibration images): anomalib's F1AdaptiveThreshold, the
observed score t* that maximises F1 of "score >= t*" over the labelled scores (the lowest such score on a
tie); stored as the float32 just below t*, so that "score > threshold", the rule used here, flags exactly
what anomalib flags. No guarantee of any kind.

p-value of a new image score s: (1 + #{s_i >= s}) / (n + 1), the calibration images' image scores s_i.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

RULES = ("conformal", "empirical", "f1")


def exact(alpha: float) -> Fraction:
    """alpha as the decimal it is written as: 0.01 is 1/100, not the binary float just above it, which
    would move ceil((n + 1)(1 - alpha)) by one where (n + 1) alpha is a whole number."""
    return Fraction(repr(float(alpha)))


def conformal_rank(n: int, alpha: float | Fraction) -> int:
    """r = ceil((n + 1)(1 - alpha)), 1-based; r > n: no finite threshold has the guarantee."""
    a = alpha if isinstance(alpha, Fraction) else exact(alpha)
    return math.ceil((n + 1) * (1 - a))


def needed_images(alpha: float | Fraction) -> int:
    """The fewest calibration images with a finite threshold at `alpha`: the least n with r <= n, i.e.
    n >= (1 - alpha) / alpha."""
    a = alpha if isinstance(alpha, Fraction) else exact(alpha)
    return math.ceil((1 - a) / a)


def conformal_threshold(scores: np.ndarray, alpha: float | Fraction) -> float | None:
    """s_(r), or None when r > n (no finite threshold holds alpha)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    r = conformal_rank(ordered.size, alpha)
    return float(ordered[r - 1]) if r <= ordered.size else None


def p_values(calibration: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(1 + #{s_i >= s}) / (n + 1) for each score s, against the calibration scores s_i."""
    ordered = np.sort(np.asarray(calibration, dtype=np.float64).ravel())
    at_least = ordered.size - np.searchsorted(ordered, np.asarray(scores, dtype=np.float64), side="left")
    return (1 + at_least) / (ordered.size + 1)


def threshold_at_fpr(scores: np.ndarray, val_fpr: float) -> float:
    """The empirical rule: s_(n - floor(val_fpr n)), at most a val_fpr fraction of `scores` above it."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    allowed = int(np.floor(val_fpr * scores.size))  # false positives we may have
    return float(np.partition(scores, scores.size - 1 - allowed)[scores.size - 1 - allowed])


def f1_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(t*, its F1): the observed score maximising F1 of "score >= t*" against `labels` (1: defective),
    the lowest on a tie, as anomalib's F1AdaptiveThreshold. Needs both labels."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(labels).ravel().astype(bool)
    order = np.argsort(-scores, kind="stable")
    ordered, hits = scores[order], positive[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    # "score >= t" for each distinct t: the counts at the last position holding t in descending order
    last = np.flatnonzero(np.append(ordered[1:] != ordered[:-1], True))
    f1 = 2 * tp[last] / (2 * tp[last] + fp[last] + (positive.sum() - tp[last]))
    best = len(last) - 1 - int(np.argmax(f1[::-1]))  # the lowest threshold among equal F1
    return float(ordered[last[best]]), float(f1[best])


def below(value: float) -> float:
    """The float32 just below `value`: "score > it" is "score >= value" for the float32 score maps."""
    return float(np.nextafter(np.float32(value), np.float32(-np.inf)))


@dataclass
class Calibration:
    """What a calibration found: `thresholds` (model.thresholds: numbers only) and the n calibration
    images' image scores and map maxima, which p-values and a recalibration need."""
    rule: str
    scores: np.ndarray  # (n,) float64 image scores of the normal calibration images, in their order
    maxima: np.ndarray  # (n,) float64 each one's maximum pixel score
    thresholds: dict[str, float] = field(default_factory=dict)
    alpha: float | None = None  # conformal: the guarantee
    val_fpr: float | None = None  # empirical
    needed: int | None = None  # conformal without a finite threshold: the images alpha needs
    rank: int | None = None  # conformal: r, the threshold is s_(r) (the stored float alpha may not give r back)

    @property
    def finite(self) -> bool:
        return "image" in self.thresholds and "pixel" in self.thresholds


def summary(val_maps: np.ndarray, val_scores: np.ndarray) -> dict[str, float]:
    """The normal calibration scores in a few numbers (the colour scale starts at the pixel median)."""
    pixels = np.asarray(val_maps, dtype=np.float32).ravel()
    quantiles = np.quantile(pixels, [0.5, 0.99])
    return {"n_val": int(len(val_scores)), "val_image_mean": float(np.mean(val_scores)),
            "val_image_std": float(np.std(val_scores)), "val_image_max": float(np.max(val_scores)),
            "val_pixel_median": float(quantiles[0]), "val_pixel_q99": float(quantiles[1])}


def maxima_of(maps: np.ndarray) -> np.ndarray:
    return np.asarray(maps).reshape(len(maps), -1).max(axis=1).astype(np.float64)


def calibrate(val_maps: np.ndarray, val_scores: np.ndarray, alpha: float | None = None,
              val_fpr: float | None = None) -> Calibration:
    """Image and pixel thresholds from normal calibration images (maps (n, H, W), image scores (n,)):
    the conformal rule at `alpha` (None: 1 / (n + 1)), or with `val_fpr` the empirical rule."""
    if alpha is not None and val_fpr is not None:
        raise ValueError("alpha and val_fpr are two rules for one threshold: pass one")
    scores = np.asarray(val_scores, dtype=np.float64).ravel()
    maxima = maxima_of(val_maps)
    found = Calibration("empirical" if val_fpr is not None else "conformal", scores, maxima)
    found.thresholds = summary(val_maps, scores)
    if val_fpr is not None:
        found.val_fpr = float(val_fpr)
        found.thresholds.update(val_fpr=float(val_fpr), image=threshold_at_fpr(scores, val_fpr),
                                pixel=threshold_at_fpr(np.asarray(val_maps, dtype=np.float32), val_fpr))
        return found
    a = Fraction(1, scores.size + 1) if alpha is None else exact(alpha)
    found.alpha = float(a)
    found.thresholds["alpha"] = float(a)
    found.rank = conformal_rank(scores.size, a)
    image, pixel = conformal_threshold(scores, a), conformal_threshold(maxima, a)
    if image is None or pixel is None:
        found.needed = needed_images(a)
        found.thresholds["n_needed"] = found.needed
    else:
        found.thresholds.update(image=image, pixel=pixel)
    return found


def calibrate_f1(normal_maps: np.ndarray, normal_scores: np.ndarray, defect_maps: np.ndarray,
                 defect_scores: np.ndarray, defect_masks: np.ndarray) -> Calibration:
    """anomalib's F1-optimal thresholds: the image one on image scores and labels, the pixel one on
    every pixel of the normal and defective images against their masks."""
    scores = np.asarray(normal_scores, dtype=np.float64).ravel()
    found = Calibration("f1", scores, maxima_of(normal_maps))
    found.thresholds = summary(normal_maps, scores)
    labels = np.r_[np.zeros(len(scores)), np.ones(len(defect_scores))]
    image, image_f1 = f1_threshold(np.r_[scores, np.asarray(defect_scores, dtype=np.float64)], labels)
    pixels = np.concatenate([np.asarray(normal_maps, dtype=np.float32).ravel(),
                             np.asarray(defect_maps, dtype=np.float32).ravel()])
    truth = np.concatenate([np.zeros(np.asarray(normal_maps).size, dtype=bool),
                            np.asarray(defect_masks).ravel() > 0])
    pixel, pixel_f1 = f1_threshold(pixels, truth)
    found.thresholds.update(image=below(image), pixel=below(pixel), image_f1=image_f1, pixel_f1=pixel_f1,
                            n_defects=int(len(defect_scores)))
    return found
