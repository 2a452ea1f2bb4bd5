"""Where the zoomed crops of a large test image go: one per defect region and per false alarm."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

DEFECT = "defect"
FALSE_ALARM = "false alarm"
EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity, as the PRO regions (report/curves.py, metrics/)
MAX_ASPECT = 2  # a crop's long side is at most twice its short side where the image allows


@dataclass(frozen=True)
class Box:
    """A crop in map pixels (x, y: top-left column and row) around one region of `area` pixels."""
    x: int
    y: int
    w: int
    h: int
    kind: str  # DEFECT or FALSE_ALARM
    area: int


def _span(lo: int, hi: int, want: int, size: int) -> tuple[int, int]:
    """(start, length) of `want` pixels centred on [lo, hi), shifted inside [0, size) rather than cut
    short, so a region near the border keeps a crop of full size."""
    want = min(want, size)
    start = int(round((lo + hi - want) / 2))
    return min(max(start, 0), size - want), want


def _boxes(labels: np.ndarray, keep: list[int], kind: str, margin: int, min_size: int) -> list[Box]:
    height, width = labels.shape
    areas = np.bincount(labels.ravel())
    found = ndimage.find_objects(labels)
    boxes = []
    for label in keep:
        rows, cols = found[label - 1]
        bh, bw = rows.stop - rows.start, cols.stop - cols.start
        want_w = max(bw + 2 * margin, min_size)
        want_h = max(bh + 2 * margin, min_size)
        want_w, want_h = max(want_w, math.ceil(want_h / MAX_ASPECT)), max(want_h, math.ceil(want_w / MAX_ASPECT))
        x, w = _span(cols.start, cols.stop, want_w, width)
        y, h = _span(rows.start, rows.stop, want_h, height)
        boxes.append(Box(x, y, w, h, kind, int(areas[label])))
    # largest first; equal areas in scan order (the sort is stable)
    return sorted(boxes, key=lambda b: -b.area)


def zoom_boxes(mask: np.ndarray, prediction: np.ndarray, margin: int, min_size: int, cap: int) -> list[Box]:
    """Crops around each 8-connected region of the ground truth `mask` (defects), then around each
    region of the binary `prediction` touching no ground-truth pixel, not even diagonally (false alarms).

    Each crop is the region's bounding box grown by `margin` on every side, at least `min_size` and at
    most MAX_ASPECT : 1, shifted and clipped to lie inside the image. At most `cap` crops: the largest
    defect regions, then the largest false alarms in what is left.
    """
    mask, prediction = np.asarray(mask, dtype=bool), np.asarray(prediction, dtype=bool)
    gt_labels, n_gt = ndimage.label(mask, structure=EIGHT)
    boxes = _boxes(gt_labels, list(range(1, n_gt + 1)), DEFECT, margin, min_size)[:cap]
    if len(boxes) < cap and prediction.any():
        pred_labels, n_pred = ndimage.label(prediction, structure=EIGHT)
        near_gt = ndimage.binary_dilation(mask, structure=EIGHT)
        touching = set(np.unique(pred_labels[near_gt]).tolist())
        alarms = [label for label in range(1, n_pred + 1) if label not in touching]
        boxes += _boxes(pred_labels, alarms, FALSE_ALARM, margin, min_size)[:cap - len(boxes)]
    return boxes
