"""Every metric recomputed for any weighting of the test images, from per-image sufficient statistics
(docs/metrics.md, "Confidence intervals").

A bootstrap resample draws each test image some number of times; its metric equals the metric of the
full set with each image's statistics counted that many times. `Resampled` computes those statistics once
per evaluation, and each method takes weights (B, N) (B resamples, N test images, integer counts held as
float64) and returns the B values, vectorised over resamples as matrix products:

- image AUROC and paper_det: counts per distinct image score (exact);
- the paper protocol: PaperCounts' per-image counts at the protocol's thresholds, which stay those of the
  full set (exact for those thresholds);
- pixel AUROC and AU-PRO: per-image histograms on a grid of GRID quantiles of the defect-free scores
  (binned: pixels of one bin count as tied; the pro curve has a point per grid edge).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from .inputs import MetricInputs, label_regions
from .paper import PaperCounts, _area, det_areas, image_counts

GRID = 4096  # grid edges for the pixel metrics: binned AU-PRO and pixel AUROC within 1e-4 of the exact (BENCHMARKS.md)

T = TypeVar("T")


def weighted_auroc(negatives: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """AUROC of each row of weighted histograms (B, G) over ascending bins: a positive above a negative
    counts 1, in the same bin 1/2; nan without both classes."""
    below = np.cumsum(negatives, axis=1) - negatives
    pairs = np.einsum("bg,bg->b", positives, below + negatives / 2)
    total = negatives.sum(axis=1) * positives.sum(axis=1)
    return np.divide(pairs, total, out=np.full(len(pairs), np.nan), where=total > 0)


def clipped_area(x: np.ndarray, y: np.ndarray, limit: float) -> np.ndarray:
    """Trapezoid area of each row's curve (x non-decreasing) from x = 0 to `limit`, the segment crossing
    it interpolated there, divided by the limit (metrics.pro.aupro's rule)."""
    x0, x1, y0, y1 = x[:, :-1], x[:, 1:], y[:, :-1], y[:, 1:]
    rising = x1 > x0
    step = np.divide(limit - x0, x1 - x0, out=np.zeros(x0.shape), where=rising)
    right = np.where(x1 <= limit, y1, y0 + step * (y1 - y0))
    width = np.minimum(x1, limit) - np.minimum(x0, limit)
    return (width * (y0 + right) / 2).sum(axis=1) / limit


def _reverse_above(histograms: np.ndarray) -> np.ndarray:
    """(B, G + 1) bin counts (bin = edges strictly below a value) -> (B, G): how much lies above each
    edge, edges ascending."""
    at_least = np.cumsum(histograms[:, ::-1], axis=1)[:, ::-1]
    return at_least[:, 1:]


class Resampled:
    """One evaluation's per-image statistics (computed on first use, each once) and every metric of them
    under weights (B, N)."""

    def __init__(self, inputs: MetricInputs, grid: int = GRID):
        self.inputs, self.grid = inputs, grid
        self._kept: dict[str, object] = {}
        self._lock = threading.Lock()

    def _once(self, key: str, make: Callable[[], T]) -> T:
        with self._lock:
            if key not in self._kept:
                self._kept[key] = make()
            return self._kept[key]  # type: ignore[return-value]

    # ------------------------------------------------------------------ image scores
    def _images(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The images in order of score, the start of each distinct score among them, and which are defective."""
        def make() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            values, normal, defective = image_counts(self.inputs.image_scores, self.inputs.labels)
            scores = np.asarray(self.inputs.image_scores)
            order = np.argsort(scores, kind="stable")
            starts = np.concatenate([[0], np.cumsum(normal + defective)[:-1]])
            return order, starts, np.asarray(self.inputs.labels).astype(bool)[order]
        return self._once("images", make)

    def _image_counts(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted normal and defective counts per distinct image score, ascending: (B, U) each."""
        order, starts, defective = self._images()
        w = weights[:, order]
        return (np.add.reduceat(np.where(defective, 0, w), starts, axis=1),
                np.add.reduceat(np.where(defective, w, 0), starts, axis=1))

    def image_auroc(self, weights: np.ndarray) -> np.ndarray:
        return weighted_auroc(*self._image_counts(weights))

    def paper_det(self, weights: np.ndarray) -> np.ndarray:
        normal, defective = self._image_counts(weights)
        return det_areas(normal, defective)

    # ------------------------------------------------------------------ pixels, binned
    def _pixels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per-image histograms (N, G + 1) of the defect-free and the defect pixels over the grid's bins,
        each region's fraction above each edge (R, G), and each region's image (R,)."""
        return self._once("pixels", self._histograms)

    def _histograms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        x = self.inputs
        sorted_negatives = x.sorted_negatives
        n_images = len(x.maps)
        if sorted_negatives.size == 0:
            edges = np.zeros(0, x.maps.dtype)
        else:  # quantiles of the defect-free scores: each bin holds about 1 / GRID of them
            edges = np.unique(sorted_negatives[np.linspace(0, sorted_negatives.size - 1, self.grid).astype(np.intp)])
        width = edges.size + 1
        labels, region_image = label_regions(x.masks)
        negatives, positives = np.zeros((n_images, width)), np.zeros((n_images, width))
        regions = np.zeros((region_image.size, width))
        flat, positive = x.maps.reshape(n_images, -1), x.masks.reshape(n_images, -1)
        for i in range(n_images):  # an image at a time: the temporaries stay the size of one map
            bins = np.searchsorted(edges, flat[i], side="left")  # edges strictly below the score
            defect_bins = bins[positive[i]]
            positives[i] = np.bincount(defect_bins, minlength=width)
            negatives[i] = np.bincount(bins[~positive[i]], minlength=width)
            if defect_bins.size:
                first, count = np.searchsorted(region_image, i), np.count_nonzero(region_image == i)
                region = labels[i].ravel()[positive[i]].astype(np.int64) - 1 - first
                regions[first:first + count] = np.bincount(region * width + defect_bins,
                                                           minlength=count * width).reshape(count, width)
        sizes = regions.sum(axis=1, keepdims=True)
        return negatives, positives, _reverse_above(regions) / np.maximum(sizes, 1), region_image

    def pixel_auroc(self, weights: np.ndarray) -> np.ndarray:
        negatives, positives, _, _ = self._pixels()
        return weighted_auroc(weights @ negatives, weights @ positives)

    def aupro(self, weights: np.ndarray) -> np.ndarray:
        negatives, _, region_above, region_image = self._pixels()
        if region_image.size == 0 or not negatives.any():
            return np.full(len(weights), np.nan)
        pooled = weights @ negatives
        fpr = _reverse_above(pooled) / pooled.sum(axis=1, keepdims=True)
        region_weights = weights[:, region_image]
        pro = (region_weights @ region_above) / region_weights.sum(axis=1, keepdims=True)
        # thresholds high to low: above every score (0, 0), each edge, below every score (1, 1)
        zero, one = np.zeros((len(weights), 1)), np.ones((len(weights), 1))
        x = np.concatenate([zero, fpr[:, ::-1], one], axis=1)
        y = np.concatenate([zero, pro[:, ::-1], one], axis=1)
        return clipped_area(x, y, self.inputs.fpr_limit)

    # ------------------------------------------------------------------ the paper protocol
    def _paper(self) -> dict[str, np.ndarray]:
        """Per-image rates at the protocol's thresholds (N, T): FP / negatives, TP / positives, the mean
        region overlap, precision and whether anything is predicted, and which images each mean is over."""
        def make() -> dict[str, np.ndarray]:
            c: PaperCounts = self.inputs.counts
            assert c.region_hits is not None and c.region_image is not None  # MetricInputs counts regions
            n_images = len(c.negatives)
            overlap = np.zeros((n_images, c.region_hits.shape[1]))
            np.add.at(overlap, c.region_image, c.region_hits)
            n_regions = np.bincount(c.region_image, minlength=n_images)
            predicted = c.true_pos + c.false_pos
            return {"fpr": c.false_pos / np.maximum(c.negatives, 1)[:, None], "has_negatives": c.negatives > 0,
                    "tpr": c.true_pos / np.maximum(c.positives, 1)[:, None], "defective": c.positives > 0,
                    "pro": overlap / np.maximum(n_regions, 1)[:, None], "has_regions": n_regions > 0,
                    "precision": np.divide(c.true_pos, predicted, out=np.zeros(predicted.shape), where=predicted > 0),
                    "predicting": (predicted > 0).astype(np.float64)}
        return self._once("paper", make)

    def _mean(self, weights: np.ndarray, rate: str, over: str) -> np.ndarray:
        """The weighted mean of a per-image rate over the images `over` says, per threshold: (B, T)."""
        p = self._paper()
        w = weights[:, p[over]]
        return (w @ p[rate][p[over]]) / w.sum(axis=1, keepdims=True)

    def _areas(self, x: np.ndarray, y: np.ndarray, limit: float) -> np.ndarray:
        return np.array([_area(xb, yb, limit) for xb, yb in zip(x, y)])  # the protocol's rule, one curve each

    def paper_pro(self, weights: np.ndarray) -> np.ndarray:
        p = self._paper()
        if not p["has_regions"].any() or not p["has_negatives"].any():
            return np.full(len(weights), np.nan)
        return self._areas(self._mean(weights, "fpr", "has_negatives"), self._mean(weights, "pro", "has_regions"),
                           self.inputs.fpr_limit)

    def paper_roc(self, weights: np.ndarray) -> np.ndarray:
        p = self._paper()
        if not p["defective"].any() or not p["has_negatives"].any():
            return np.full(len(weights), np.nan)
        return self._areas(self._mean(weights, "fpr", "has_negatives"), self._mean(weights, "tpr", "defective"), 1.0)

    def paper_ap(self, weights: np.ndarray) -> np.ndarray:
        p = self._paper()
        if not p["defective"].any():
            return np.full(len(weights), np.nan)
        count = weights @ p["predicting"]
        precision = np.divide(weights @ p["precision"], count, out=np.zeros(count.shape), where=count > 0)
        return self._areas(self._mean(weights, "tpr", "defective"), precision, self.inputs.fpr_limit)

    def paper_fpr(self, weights: np.ndarray) -> np.ndarray:
        p = self._paper()
        if not p["defective"].any() or not p["has_negatives"].any():
            return np.full(len(weights), np.nan)
        fpr = self._mean(weights, "fpr", "has_negatives")
        return self._areas(fpr, fpr, self.inputs.fpr_limit)
