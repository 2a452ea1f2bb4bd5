"""Where, and how big, a defect is: the 8-connected regions of a score map above the pixel threshold, at
the image's original size (predict.py's regions.jsonl, n_regions and the overlay's boxes)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity, as the PRO regions (metrics/) and the report's crops


def find_regions(score_map: np.ndarray, threshold: float, min_area: int = 1) -> list[dict]:
    """Each connected region of pixels scoring above `threshold` with at least `min_area` pixels: its box
    [left, top, right, bottom] in pixels of the map (right and bottom exclusive, as PIL's crop box), its
    area in pixels, its maximum and mean score; highest maximum first."""
    labels, count = ndimage.label(score_map > threshold, structure=EIGHT)
    if count == 0:
        return []
    flat = labels.ravel()
    areas = np.bincount(flat, minlength=count + 1)[1:]
    sums = np.bincount(flat, weights=score_map.ravel().astype(np.float64), minlength=count + 1)[1:]
    maxima = ndimage.maximum(score_map, labels, np.arange(1, count + 1))
    found = []
    for i, (rows, cols) in enumerate(ndimage.find_objects(labels)):
        if areas[i] >= min_area:
            found.append({"box": [int(cols.start), int(rows.start), int(cols.stop), int(rows.stop)],
                          "area": int(areas[i]), "max": float(maxima[i]), "mean": float(sums[i] / areas[i])})
    return sorted(found, key=lambda region: -region["max"])
