"""The authors' evaluation protocol (definitions in docs/metrics.md), needed to compare with the paper's tables.

It differs from the exact metrics: thresholds are quantiles of one image, FPR and the y value are
means over images rather than pooled, and the area rule is the authors' own.
"""
from __future__ import annotations

import numpy as np

from .inputs import as_maps_and_masks, check_fpr_limit, label_regions


def paper_pro(
    maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3, num_thresholds: int = 1000
) -> float:
    """Area under (mean per-image FPR, mean over defective images of their mean region overlap)."""
    return _paper_area(maps, masks, fpr_limit, num_thresholds, by_region=True)


def paper_roc(maps: np.ndarray, masks: np.ndarray, num_thresholds: int = 1000) -> float:
    """Area under (mean per-image FPR, mean over defective images of their TPR), limit 1."""
    return _paper_area(maps, masks, 1.0, num_thresholds, by_region=False)


def paper_ap(maps: np.ndarray, masks: np.ndarray, recall_limit: float = 0.3, num_thresholds: int = 1000) -> float:
    """The authors' average precision: area under (mean TPR of the defective images, mean precision of
    the images with at least one pixel above the threshold, 0 when none), up to `recall_limit`, divided by it."""
    check_fpr_limit(recall_limit)
    _check_thresholds(num_thresholds)
    recall, precision = _precision_points(maps, masks, num_thresholds)
    return _area(recall, precision, recall_limit)


def paper_fpr(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3, num_thresholds: int = 1000) -> float:
    """The authors' `--metric fpr`: their curve of mean per-image FPR against itself, same area rule.
    It measures only how evenly the protocol's thresholds cover FPR up to the limit, not the model."""
    check_fpr_limit(fpr_limit)
    _check_thresholds(num_thresholds)
    fpr, _ = _paper_points(maps, masks, num_thresholds, by_region=False)
    return _area(fpr, fpr, fpr_limit)


def _check_thresholds(num_thresholds: int) -> None:
    if num_thresholds < 1:
        raise ValueError(f"num_thresholds must be >= 1; got {num_thresholds}")


def _paper_area(maps, masks, fpr_limit: float, num_thresholds: int, by_region: bool) -> float:
    check_fpr_limit(fpr_limit)
    _check_thresholds(num_thresholds)
    fpr, y = _paper_points(maps, masks, num_thresholds, by_region)
    return _area(fpr, y, fpr_limit)


def _area(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """The protocol's area: points in threshold order (high to low), cut after the first x past the
    limit, one point per distinct x (the last computed wins), then the authors' slope rule, / limit."""
    if x.size == 0:
        return float("nan")
    past = np.flatnonzero(x > limit)  # the protocol stops after the first threshold past the limit
    end = past[0] + 1 if past.size else x.size
    x, y = x[:end], y[:end]
    # x never falls as the threshold falls (each image's count only grows), so a stable sort keeps
    # threshold order among equal x, and the last of each run of equal x is the last computed.
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    last = np.append(x[1:] != x[:-1], True)
    x, y = x[last], y[last]

    area = x[0] * y[0] / 2  # triangle from the origin (all there is for one point, as in the authors' loop)
    if x.size > 1:
        area += np.sum(np.diff(x[:-1]) * (y[1:-1] + y[:-2]) / 2)
        # the last segment runs to the limit, its right height the mean of the last two heights
        area += (limit - x[-2]) * ((y[-1] + y[-2]) / 2 + y[-2]) / 2
    return float(area / limit)


def _precision_points(maps, masks, num_thresholds: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean TPR of defective images and mean precision of predicting images at each threshold (high to
    low); empty when no image is defective."""
    scores, masks = as_maps_and_masks(maps, masks)
    n_images = len(scores)
    flat, positive = scores.reshape(n_images, -1), masks.reshape(n_images, -1)
    n_positive = positive.sum(axis=1)
    defective = n_positive > 0
    if not defective.any():
        return np.zeros(0), np.zeros(0)
    thresholds = _thresholds(flat, num_thresholds)
    predicted = _above(flat, thresholds)  # (N, T) pixels above each threshold
    true_pos = _above(np.where(positive, flat, -np.inf), thresholds)
    recall = (true_pos[defective] / n_positive[defective, None]).mean(axis=0)
    predicting = predicted > 0
    ratio = np.divide(true_pos, predicted, out=np.zeros(predicted.shape), where=predicting)
    count = predicting.sum(axis=0)
    precision = np.divide(ratio.sum(axis=0), count, out=np.zeros(count.shape), where=count > 0)
    return recall, precision


def _above(flat: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(N, T): how many of each row's values exceed each threshold."""
    rows = np.sort(flat, axis=1)
    return np.stack([rows.shape[1] - np.searchsorted(row, thresholds, side="right") for row in rows])


def _paper_points(maps, masks, num_thresholds: int, by_region: bool) -> tuple[np.ndarray, np.ndarray]:
    """FPR and y at each threshold, in the protocol's order (high to low); empty if undefined."""
    scores, masks = as_maps_and_masks(maps, masks)
    n_images = len(scores)
    flat, positive = scores.reshape(n_images, -1), masks.reshape(n_images, -1)
    labels, region_image = label_regions(masks) if by_region else _images_as_regions(masks)
    negatives = (~positive).sum(axis=1)
    if region_image.size == 0 or not negatives.any():
        return np.zeros(0), np.zeros(0)
    thresholds = _thresholds(flat, num_thresholds)

    # False positives: sort each image's defect-free scores once (defects sink to -inf, never above
    # a threshold), then count above every threshold with one searchsorted per image.
    rows = np.where(positive, -np.inf, flat)
    rows.sort(axis=1)
    false_pos = np.stack([rows.shape[1] - np.searchsorted(row, thresholds, side="right") for row in rows])
    has_negatives = negatives > 0
    fpr = (false_pos[has_negatives] / negatives[has_negatives, None]).mean(axis=0)

    region = labels.reshape(n_images, -1)[positive] - 1
    overlap = _count_above(flat[positive], region, region_image.size, thresholds)
    overlap = overlap / np.bincount(region, minlength=region_image.size)[:, None]
    per_image = np.zeros((n_images, num_thresholds))
    np.add.at(per_image, region_image, overlap)
    n_per_image = np.bincount(region_image, minlength=n_images)
    defective = n_per_image > 0
    y = (per_image[defective] / n_per_image[defective, None]).mean(axis=0)
    return fpr, y


def _thresholds(flat: np.ndarray, num_thresholds: int) -> np.ndarray:
    """Quantiles of the first image holding the global max: the max(1, floor(N i / T))-th smallest
    of its N scores for i = T .. 1, so high to low."""
    top = np.sort(flat[np.argmax(flat.max(axis=1))])
    i = np.arange(num_thresholds, 0, -1)
    rank = np.maximum(1, top.size * i // num_thresholds)
    return top[rank - 1]


def _count_above(values: np.ndarray, group: np.ndarray, n_groups: int, thresholds: np.ndarray) -> np.ndarray:
    """(n_groups, T): how many values of each group exceed each threshold (given high to low)."""
    ascending = thresholds[::-1]
    below = np.searchsorted(ascending, values, side="left")  # thresholds strictly below each value
    width = ascending.size + 1
    histogram = np.bincount(group.astype(np.int64) * width + below, minlength=n_groups * width)
    histogram = histogram.reshape(n_groups, width)
    # A value exceeds ascending[j] iff more than j thresholds lie below it.
    at_least = histogram[:, ::-1].cumsum(axis=1)[:, ::-1]
    return at_least[:, 1:][:, ::-1]


def _images_as_regions(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each defective image's defect pixels as one region, so a region's overlap is the image's TPR."""
    defective = masks.any(axis=(1, 2))
    number = np.cumsum(defective)
    return np.where(masks, number[:, None, None], 0), np.flatnonzero(defective)
