"""Input checks, ground-truth regions and the work several metrics share."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    from .paper import PaperCounts

T = TypeVar("T")


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
    from scipy import ndimage  # half a second to import: results.py reads the registry without it

    labels = np.zeros(masks.shape, np.int32)
    counts = np.zeros(len(masks), np.intp)
    eight = np.ones((3, 3), bool)
    offset = 0
    for i in np.flatnonzero(masks.any(axis=(1, 2))):  # each defective mask labelled once, on its own
        counts[i] = ndimage.label(masks[i], eight, output=labels[i])
        np.add(labels[i], offset, out=labels[i], where=labels[i] > 0)
        offset += counts[i]
    return labels, np.repeat(np.arange(len(masks)), counts)


class MetricInputs:
    """One evaluation's score maps, masks, image scores and labels, checked once, and the work that
    several metrics share (the sorted defect-free scores, the protocol's counts), computed by the first
    metric that asks and kept for the others. Metrics on different threads may ask at once: each piece
    is computed once, under its own lock."""

    def __init__(self, maps: np.ndarray, masks: np.ndarray, image_scores: np.ndarray, labels: np.ndarray,
                 fpr_limit: float, num_thresholds: int):
        self.maps, self.masks = as_maps_and_masks(maps, masks)  # uint8 masks converted once, not per metric
        self.image_scores, self.labels = image_scores, labels
        self.fpr_limit, self.num_thresholds = fpr_limit, num_thresholds
        self._kept: dict[str, object] = {}
        self._locks = {"sorted_negatives": threading.Lock(), "counts": threading.Lock()}

    def _once(self, key: str, make: Callable[[], T]) -> T:
        with self._locks[key]:
            if key not in self._kept:
                self._kept[key] = make()
            return self._kept[key]  # type: ignore[return-value]

    @property
    def sorted_negatives(self) -> np.ndarray:
        """The defect-free pixels' scores, sorted ascending (pixel_auroc and aupro)."""
        def make() -> np.ndarray:
            negatives = self.maps[~self.masks]  # a copy: sorted in place
            negatives.sort()
            return negatives
        return self._once("sorted_negatives", make)

    @property
    def counts(self) -> PaperCounts:
        """Pixels above each of the authors' thresholds, regions included: one pass for every paper metric."""
        from .paper import PaperCounts  # paper.py imports this module

        return self._once("counts", lambda: PaperCounts.of(self.maps, self.masks, self.num_thresholds, regions=True))
