"""Every metric from one set of score maps, masks and image scores."""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .inputs import as_maps_and_masks
from .paper import PaperCounts
from .pro import aupro
from .roc import auroc_of_sorted, image_auroc


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

    paper_ap takes `fpr_limit` as its recall limit, as the authors' `--fpr` does. The three paper
    metrics share one count of pixels above the protocol's thresholds (timed with paper_pro), and the
    exact metrics run in a second thread meanwhile: numpy's sorts and searches release the GIL.
    pixel_auroc and aupro share one sort of the defect-free scores (timed with pixel_auroc).

    When `timings` is given, it receives the seconds each metric took, under the same keys.
    """
    maps, masks = as_maps_and_masks(maps, masks)  # convert uint8 masks once, not in every metric
    results: dict[str, float] = {}
    seconds: dict[str, float] = {}

    def timed(name: str, metric: Callable[[], float], start: float | None = None) -> None:
        start = time.perf_counter() if start is None else start
        results[name] = metric()
        seconds[name] = time.perf_counter() - start

    def exact() -> None:
        start = time.perf_counter()
        negatives = maps[~masks]  # sorted once, in place, for pixel_auroc and aupro
        negatives.sort()
        timed("pixel_auroc", lambda: auroc_of_sorted(negatives, np.sort(maps[masks])), start)
        timed("aupro", lambda: aupro(maps, masks, fpr_limit, sorted_negatives=negatives))
        timed("image_auroc", lambda: image_auroc(image_scores, labels))

    def paper() -> None:
        start = time.perf_counter()
        counts = PaperCounts.of(maps, masks, num_thresholds, regions=True)
        timed("paper_pro", lambda: counts.pro(fpr_limit), start)
        timed("paper_roc", counts.roc)
        timed("paper_ap", lambda: counts.ap(fpr_limit))

    with ThreadPoolExecutor(max_workers=1) as pool:
        exact_done = pool.submit(exact)
        paper()
        exact_done.result()
    order = ("aupro", "pixel_auroc", "image_auroc", "paper_pro", "paper_roc", "paper_ap")
    if timings is not None:
        timings.update({name: seconds[name] for name in order})
    return {name: results[name] for name in order}
