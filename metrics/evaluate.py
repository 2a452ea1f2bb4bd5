"""Every metric from one set of score maps, masks and image scores."""
from __future__ import annotations

import time

import numpy as np

from .inputs import as_maps_and_masks
from .paper import paper_ap, paper_pro, paper_roc
from .pro import aupro
from .roc import image_auroc, pixel_auroc


def evaluate(
    maps: np.ndarray,
    masks: np.ndarray,
    image_scores: np.ndarray,
    labels: np.ndarray,
    fpr_limit: float = 0.3,
    num_thresholds: int = 1000,
    timings: dict | None = None,
) -> dict[str, float]:
    """{"aupro", "pixel_auroc", "image_auroc", "paper_pro", "paper_roc", "paper_ap"}; nan where undefined.

    paper_ap takes `fpr_limit` as its recall limit, as the authors' `--fpr` does.

    When `timings` is given, it receives the seconds each metric took, under the same keys.
    """
    maps, masks = as_maps_and_masks(maps, masks)  # convert uint8 masks once, not in every metric
    metrics = {
        "aupro": lambda: aupro(maps, masks, fpr_limit),
        "pixel_auroc": lambda: pixel_auroc(maps, masks),
        "image_auroc": lambda: image_auroc(image_scores, labels),
        "paper_pro": lambda: paper_pro(maps, masks, fpr_limit, num_thresholds),
        "paper_roc": lambda: paper_roc(maps, masks, num_thresholds),
        "paper_ap": lambda: paper_ap(maps, masks, fpr_limit, num_thresholds),
    }
    results = {}
    for name, metric in metrics.items():
        start = time.perf_counter()
        results[name] = metric()
        if timings is not None:
            timings[name] = time.perf_counter() - start
    return results
