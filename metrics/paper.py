"""The authors' evaluation protocol (definitions in docs/metrics.md), needed to compare with the paper's tables.

It differs from the exact metrics: thresholds are quantiles of one image, FPR and the y value are
means over images rather than pooled, and the area rule is the authors' own.
"""
from __future__ import annotations

import numpy as np

from .inputs import as_maps_and_masks, check_fpr_limit, label_regions
from .roc import checked_image_scores


def paper_pro(
    maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3, num_thresholds: int = 1000
) -> float:
    """Area under (mean per-image FPR, mean over defective images of their mean region overlap)."""
    return PaperCounts.of(maps, masks, num_thresholds, regions=True).pro(fpr_limit)


def paper_roc(maps: np.ndarray, masks: np.ndarray, num_thresholds: int = 1000) -> float:
    """Area under (mean per-image FPR, mean over defective images of their TPR), limit 1."""
    return PaperCounts.of(maps, masks, num_thresholds).roc()


def paper_ap(maps: np.ndarray, masks: np.ndarray, recall_limit: float = 0.3, num_thresholds: int = 1000) -> float:
    """The authors' average precision: area under (mean TPR of the defective images, mean precision of
    the images with at least one pixel above the threshold, 0 when none), up to `recall_limit`, divided by it."""
    return PaperCounts.of(maps, masks, num_thresholds).ap(recall_limit)


def paper_fpr(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3, num_thresholds: int = 1000) -> float:
    """The authors' `--metric fpr`: their curve of mean per-image FPR against itself, same area rule.
    It measures only how evenly the protocol's thresholds cover FPR up to the limit, not the model."""
    return PaperCounts.of(maps, masks, num_thresholds).fpr_area(fpr_limit)


def paper_det(image_scores: np.ndarray, labels: np.ndarray) -> float:
    """The authors' DET AUROC (their train.py, `--metric auroc`): their curve on the image scores, every
    score a threshold (high to low), x the fraction of normal images above it, y that of defective
    images, the same area rule with limit 1; nan without both classes."""
    _, normal, defective = image_counts(image_scores, labels)
    return float(det_areas(normal[None], defective[None])[0])


def image_counts(image_scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct image scores, ascending, and how many normal and defective images hold each."""
    scores, defective = checked_image_scores(image_scores, labels)
    values, index = np.unique(scores, return_inverse=True)
    return (values, np.bincount(index[~defective], minlength=values.size),
            np.bincount(index[defective], minlength=values.size))


def det_areas(normal: np.ndarray, defective: np.ndarray) -> np.ndarray:
    """paper_det of each row of (weighted) counts of normal and defective images per distinct score,
    ascending (B, U): a score is a threshold when its row holds it, as the authors take the scores present."""
    areas = np.full(len(normal), np.nan)
    for b, (neg, pos) in enumerate(zip(normal, defective)):  # one curve per resample: U points each
        n_neg, n_pos = neg.sum(), pos.sum()
        if n_neg == 0 or n_pos == 0:
            continue
        present = (neg + pos)[::-1] > 0  # thresholds high to low
        # above a threshold: everything at higher scores, the threshold's own score excluded
        above_neg = np.concatenate([[0], np.cumsum(neg[::-1])[:-1]])[present]
        above_pos = np.concatenate([[0], np.cumsum(pos[::-1])[:-1]])[present]
        areas[b] = _area(above_neg / n_neg, above_pos / n_pos, 1.0)
    return areas


class PaperCounts:
    """How many pixels of each image (and of each ground-truth region) score above each of the
    protocol's thresholds: one pass over the pixels serves every paper metric."""

    def __init__(self, false_pos: np.ndarray, true_pos: np.ndarray, negatives: np.ndarray, positives: np.ndarray,
                 region_hits: np.ndarray | None = None, region_image: np.ndarray | None = None):
        self.false_pos, self.true_pos = false_pos, true_pos  # (N, T), thresholds high to low
        self.negatives, self.positives = negatives, positives  # (N,) pixels outside / inside the masks
        self.region_hits, self.region_image = region_hits, region_image  # (R, T) fraction above; (R,) its image

    @classmethod
    def of(cls, maps: np.ndarray, masks: np.ndarray, num_thresholds: int = 1000, regions: bool = False) -> PaperCounts:
        """`regions`: also the 8-connected regions' overlaps (paper_pro needs them; labelling costs)."""
        _check_thresholds(num_thresholds)
        scores, masks = as_maps_and_masks(maps, masks)
        n_images = len(scores)
        flat, positive = scores.reshape(n_images, -1), masks.reshape(n_images, -1)
        ascending = _thresholds(flat, num_thresholds)[::-1]
        labels, region_image = label_regions(masks) if regions else (None, np.zeros(0, np.intp))
        width = num_thresholds + 1
        pixels_at, defects_at = np.zeros((n_images, width), np.int64), np.zeros((n_images, width), np.int64)
        hits = np.zeros((region_image.size, width), np.int64)
        for i in range(n_images):  # an image at a time: the temporaries stay the size of one map
            # each pixel's bin: how many thresholds lie strictly below it; it exceeds threshold j
            # (ascending) when its bin is above j. Histograms per image, class and region then
            # answer every threshold at once.
            bins = np.searchsorted(ascending, flat[i], side="left")
            pixels_at[i] = np.bincount(bins, minlength=width)
            defect_bins = bins[positive[i]]
            defects_at[i] = np.bincount(defect_bins, minlength=width)
            if regions and defect_bins.size:  # image i's regions are numbered first .. first + count - 1
                assert labels is not None  # regions: labelled above
                first, count = np.searchsorted(region_image, i), np.count_nonzero(region_image == i)
                region = labels[i].ravel()[positive[i]].astype(np.int64) - 1 - first
                hits[first:first + count] = np.bincount(region * width + defect_bins,
                                                        minlength=count * width).reshape(count, width)
        counts = cls(_above_each(pixels_at - defects_at), _above_each(defects_at), (~positive).sum(axis=1),
                     positive.sum(axis=1))
        if regions:
            assert labels is not None  # regions: labelled above
            sizes = np.bincount(labels.ravel(), minlength=region_image.size + 1)[1:]
            counts.region_hits = _above_each(hits) / sizes[:, None]
            counts.region_image = region_image
        return counts

    def fpr(self) -> np.ndarray:
        """Mean over images with defect-free pixels of FP / negatives, per threshold; empty if none."""
        has = self.negatives > 0
        return (self.false_pos[has] / self.negatives[has, None]).mean(axis=0) if has.any() else np.zeros(0)

    def pro(self, fpr_limit: float) -> float:
        check_fpr_limit(fpr_limit)
        if self.region_hits is None:
            raise ValueError("PaperCounts.of(..., regions=True) is needed for pro()")
        assert self.region_image is not None  # of() sets it with region_hits
        if self.region_image.size == 0 or not self.negatives.any():
            return float("nan")
        n_images = len(self.negatives)
        per_image = np.zeros((n_images, self.region_hits.shape[1]))
        np.add.at(per_image, self.region_image, self.region_hits)
        n_per_image = np.bincount(self.region_image, minlength=n_images)
        defective = n_per_image > 0
        return _area(self.fpr(), (per_image[defective] / n_per_image[defective, None]).mean(axis=0), fpr_limit)

    def roc(self) -> float:
        defective = self.positives > 0
        if not defective.any() or not self.negatives.any():
            return float("nan")
        return _area(self.fpr(), self.tpr(), 1.0)

    def tpr(self) -> np.ndarray:
        """Mean TPR of the defective images, per threshold."""
        defective = self.positives > 0
        return (self.true_pos[defective] / self.positives[defective, None]).mean(axis=0)

    def ap(self, recall_limit: float) -> float:
        check_fpr_limit(recall_limit)
        if not (self.positives > 0).any():
            return float("nan")
        predicted = self.true_pos + self.false_pos
        predicting = predicted > 0
        ratio = np.divide(self.true_pos, predicted, out=np.zeros(predicted.shape), where=predicting)
        count = predicting.sum(axis=0)
        precision = np.divide(ratio.sum(axis=0), count, out=np.zeros(count.shape), where=count > 0)
        return _area(self.tpr(), precision, recall_limit)

    def fpr_area(self, fpr_limit: float) -> float:
        check_fpr_limit(fpr_limit)
        if not (self.positives > 0).any():
            return float("nan")
        fpr = self.fpr()
        return _area(fpr, fpr, fpr_limit)


def _check_thresholds(num_thresholds: int) -> None:
    if num_thresholds < 1:
        raise ValueError(f"num_thresholds must be >= 1; got {num_thresholds}")


def _above_each(histogram: np.ndarray) -> np.ndarray:
    """(G, T + 1) histogram of bins (thresholds strictly below a value, ascending) -> (G, T): how many
    values of each group exceed each threshold, thresholds high to low."""
    at_least = histogram[:, ::-1].cumsum(axis=1)[:, ::-1]  # value exceeds ascending[j] iff its bin > j
    return at_least[:, 1:][:, ::-1]


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


def _thresholds(flat: np.ndarray, num_thresholds: int) -> np.ndarray:
    """Quantiles of the first image holding the global max: the max(1, floor(N i / T))-th smallest
    of its N scores for i = T .. 1, so high to low."""
    top = np.sort(flat[np.argmax(flat.max(axis=1))])
    i = np.arange(num_thresholds, 0, -1)
    rank = np.maximum(1, top.size * i // num_thresholds)
    return top[rank - 1]
