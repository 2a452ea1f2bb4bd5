"""Every metric of the registry from one set of score maps, masks and image scores."""
from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .bootstrap import Bootstrap, replicates
from .inputs import MetricInputs
from .registry import Metric, by_name, computed_for


def evaluate(
    maps: np.ndarray,
    masks: np.ndarray,
    image_scores: np.ndarray,
    labels: np.ndarray,
    fpr_limit: float = 0.3,
    num_thresholds: int = 1000,
    timings: dict | None = None,
    headline: str | None = None,
    names: Iterable[str] | None = None,
    bootstrap: Bootstrap | None = None,
    resampled: dict | None = None,
) -> dict[str, float]:
    """{name: value} of every registry metric a run with --metric `headline` computes (or of `names`
    only), in registry order; nan where undefined.

    paper_ap takes `fpr_limit` as its recall limit, as the authors' `--fpr` does. The metrics of each
    `Metric.thread` run in turn on a thread of their own (numpy's sorts and searches release the GIL):
    the paper metrics share one count of pixels above the protocol's thresholds, pixel_auroc and aupro
    one sort of the defect-free scores, each timed with the first metric that needs it.

    When `timings` is given, it receives the seconds each timed metric took, under the same keys (and
    the bootstrap's under `ci`). With `bootstrap`, `resampled` receives each metric's replicates
    (`metrics.bootstrap.Resamples`: `bootstrap.intervals` makes the intervals); the values returned are the
    same.
    """
    inputs = MetricInputs(maps, masks, image_scores, labels, fpr_limit, num_thresholds)
    chosen = computed_for(headline) if names is None else by_name(names)
    threads: dict[str, list[Metric]] = {}
    for metric in chosen:
        threads.setdefault(metric.thread, []).append(metric)
    results: dict[str, float] = {}
    seconds: dict[str, float] = {}

    def run(metrics: list[Metric]) -> None:
        for metric in metrics:
            start = time.perf_counter()
            results[metric.name] = metric.compute(inputs)
            seconds[metric.name] = time.perf_counter() - start

    *others, last = list(threads.values()) or [[]]
    with ThreadPoolExecutor(max_workers=max(1, len(others))) as pool:
        running = [pool.submit(run, metrics) for metrics in others]
        run(last)
        for done in running:
            done.result()
    if timings is not None:
        timings.update({m.name: seconds[m.name] for m in chosen if m.timed})
    found = {m.name: results[m.name] for m in chosen}
    if bootstrap is not None:
        start = time.perf_counter()
        values = replicates(inputs, found, bootstrap)
        if timings is not None:
            timings["ci"] = time.perf_counter() - start
        (resampled if resampled is not None else {}).update(values)
    return found
