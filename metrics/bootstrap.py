"""Bootstrap intervals over the test images (docs/metrics.md, "Confidence intervals").

A resample draws as many normal and as many defective images as the test set holds, with replacement
(stratified by label, so every resample has both classes); a metric's replicate is the metric of the
resample, computed from per-image statistics (`metrics.resampled`) rather than from the maps. The
interval is the BCa one (bias-corrected and accelerated percentile interval, Efron 1987): percentiles of
the replicates at levels moved by their median bias and by the skew of the jackknife (the metric with
each image left out once). The plain percentile interval under-covers the image AUROC of small, well
separated test sets (BENCHMARKS.md); BCa corrects it. Replicates of the same seed and labels use the
same draws, whatever the run: `tools/summarize.py --compare` pairs two runs' replicates on them.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .inputs import MetricInputs
from .registry import Metric, by_name
from .resampled import Resampled

CHUNK = 128  # resamples at a time: the weighted histograms stay a few MB whatever --bootstrap


@dataclass(frozen=True)
class Bootstrap:
    """What `--ci` asks for: the interval's level in percent, the number of resamples, their seed."""
    level: float = 95.0
    resamples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if not 50 <= self.level < 100:
            raise ValueError(f"level must be a percentage in [50, 100); got {self.level}")
        if self.resamples < 1:
            raise ValueError(f"resamples must be at least 1; got {self.resamples}")


@dataclass(frozen=True)
class Resamples:
    """A metric's point estimate, its bootstrap replicates (B,) and its jackknife values (N,), and how far
    the statistic they come from lies from the point on the full set (the grid's error for a binned one)."""
    point: float
    values: np.ndarray
    jackknife: np.ndarray
    offset: float = 0.0

    def __sub__(self, other: Resamples) -> Resamples:
        """The difference of two metrics on the same draws (a paired comparison)."""
        return Resamples(self.point - other.point, self.values - other.values, self.jackknife - other.jackknife,
                         self.offset - other.offset)


def average(resamples: list[Resamples]) -> Resamples:
    """The mean over runs (several seeds) of one metric, draw by draw."""
    return Resamples(float(np.mean([r.point for r in resamples])), np.mean([r.values for r in resamples], axis=0),
                     np.mean([r.jackknife for r in resamples], axis=0), float(np.mean([r.offset for r in resamples])))


def pooled(parts: list[Resamples], seed: int) -> Resamples:
    """The mean of one metric over independent test sets (a `mean` row over categories). Each set's
    replicates are put in a seeded random order before they are averaged draw by draw: sets of the same
    size were drawn with the same seed, and their draws must not be paired. The jackknife of the mean
    leaves one image of one set out: the mean + (that set's leave-one-out value - its point) / sets."""
    rng = np.random.default_rng(seed)
    point = float(np.mean([r.point for r in parts]))
    values = np.mean([rng.permutation(r.values) for r in parts], axis=0)
    jackknife = np.concatenate([point + (r.jackknife - r.point) / len(parts) for r in parts])
    return Resamples(point, values, jackknife, float(np.mean([r.offset for r in parts])))


def resample_weights(labels: np.ndarray, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """How many times each image is drawn, (b, N) float64, CHUNK resamples at a time: within each
    class, as many draws with replacement as the class has images."""
    labels = np.asarray(labels).astype(bool, copy=False)
    rng = np.random.default_rng(seed)
    classes = [members for members in (np.flatnonzero(~labels), np.flatnonzero(labels)) if members.size]
    for start in range(0, resamples, CHUNK):
        weights = np.zeros((min(CHUNK, resamples - start), labels.size))
        for members in classes:
            weights[:, members] = rng.multinomial(members.size, np.full(members.size, 1 / members.size),
                                                  size=len(weights))
        yield weights


def leave_one_out(n_images: int) -> Iterator[np.ndarray]:
    """The jackknife's weights: every image once but one, CHUNK rows at a time."""
    for start in range(0, n_images, CHUNK):
        weights = np.ones((min(CHUNK, n_images - start), n_images))
        weights[np.arange(len(weights)), np.arange(start, start + len(weights))] = 0
        yield weights


def replicates(inputs: MetricInputs, points: dict[str, float], bootstrap: Bootstrap) -> dict[str, Resamples]:
    """The resamples of each metric in `points` that has them (`Metric.resampled`), shifted by the
    point estimate less the statistic of the full set, so that a binned metric's replicates centre on
    the exact value (the shift is rounding for the others)."""
    stats = Resampled(inputs)
    chosen = [m for m in by_name(points) if m.resampled is not None]

    def each(weights: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {m.name: [] for m in chosen}
        for w in weights:
            for m in chosen:
                parts[m.name].append(values_of(m, stats, w))
        return {name: np.concatenate(p) for name, p in parts.items()}

    full = each([np.ones((1, len(inputs.labels)))])
    drawn = each(resample_weights(inputs.labels, bootstrap.resamples, bootstrap.seed))
    left_out = each(leave_one_out(len(inputs.labels)))
    found = {}
    for m in chosen:
        offset = float(full[m.name][0] - points[m.name])
        found[m.name] = Resamples(points[m.name], drawn[m.name] - offset, left_out[m.name] - offset, offset)
    return found


def values_of(metric: Metric, stats: Resampled, weights: np.ndarray) -> np.ndarray:
    assert metric.resampled is not None  # replicates() chose only these
    return metric.resampled(stats, weights)


def interval(r: Resamples, level: float) -> tuple[float, float]:
    """The BCa interval of `level` percent; nan, nan when the metric is undefined. Replicates undefined
    on their resample (nan) are left out."""
    values, jackknife = r.values[~np.isnan(r.values)], r.jackknife[~np.isnan(r.jackknife)]
    if values.size == 0 or math.isnan(r.point):
        return float("nan"), float("nan")
    normal = NormalDist()
    # median bias: the share of replicates below the point (ties half), kept off 0 and 1
    below = (np.count_nonzero(values < r.point) + np.count_nonzero(values == r.point) / 2) / values.size
    z0 = normal.inv_cdf(min(max(below, 0.5 / values.size), 1 - 0.5 / values.size))
    spread = jackknife.mean() - jackknife
    squares = float((spread ** 2).sum())
    accel = float((spread ** 3).sum()) / (6 * squares ** 1.5) if squares > 0 else 0.0
    tail = (100 - level) / 200
    levels = []
    for z in (normal.inv_cdf(tail), normal.inv_cdf(1 - tail)):
        moved = z0 + z
        denominator = 1 - accel * moved
        levels.append(normal.cdf(z0 + moved / denominator) if denominator > 0 else (0.0 if z < 0 else 1.0))
    low, high = np.quantile(values, levels)
    return float(low), float(high)


def intervals(found: dict[str, Resamples], level: float) -> dict[str, list[float]]:
    """{metric: [low, high]}, as metrics.json stores them."""
    return {name: list(interval(r, level)) for name, r in found.items()}


def spread(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; nan for one value) of a metric over runs."""
    array = np.asarray(list(values), np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else float("nan")
