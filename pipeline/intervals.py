"""train.py's --ci and --bootstrap: their flags, their checks, and the bootstrap a category's evaluation
runs (metrics/bootstrap.py computes the intervals; results.py stores them)."""
from __future__ import annotations

import argparse
import math
from typing import Any

from common import UserError
from metrics.bootstrap import Bootstrap, Resamples, intervals, pooled
from metrics.resampled import GRID
from pipeline.options import DEFAULTS, RunOptions

LEVEL = Bootstrap.level  # --ci given alone
METHOD = "BCa bootstrap over the test images, stratified by label"  # docs/metrics.md, "Confidence intervals"
RESAMPLES = (100, 100_000)  # fewer put the tails' percentiles on a handful of resamples; more only cost time


def add_ci_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--ci", type=float, nargs="?", const=LEVEL, default=None, metavar="LEVEL",
                       help=f"a LEVEL%% bootstrap interval (BCa) over the test images for every metric ({LEVEL:g} "
                            "when given alone): in metrics.json, results.csv's <metric>_lo and <metric>_hi and "
                            "tools/summarize.py; the metrics themselves do not change (default: no intervals)")
    group.add_argument("--bootstrap", type=int, default=None, metavar="B",
                       help=f"resamples of --ci, drawn with --seed (default {DEFAULTS.bootstrap})")


def check_ci_flags(args: argparse.Namespace) -> None:
    """--ci a percentage in [50, 100) and --bootstrap a count in RESAMPLES, only with --ci."""
    if args.ci is not None:
        check_level(args.ci)
    if args.bootstrap is not None:
        if args.ci is None:
            raise UserError(f"--bootstrap {args.bootstrap} sets the resamples of --ci; add --ci or drop --bootstrap")
        check_resamples(args.bootstrap)


def check_level(level: float) -> None:
    if not (math.isfinite(level) and 50 <= level < 100):
        raise UserError(f"--ci {level:g} must be a percentage in [50, 100), e.g. 95 for a 95% interval")


def check_resamples(resamples: int) -> None:
    low, high = RESAMPLES
    if not low <= resamples <= high:
        raise UserError(f"--bootstrap {resamples} must be from {low} to {high} resamples "
                        f"(default {Bootstrap.resamples})")


def resampling_bytes(options: RunOptions, n_test: int) -> int:
    """What --ci's per-image statistics hold beside the metrics (0 without it): a grid histogram of the
    defect-free and the defect pixels per image and one per region (taken as one an image: the masks are not
    read before the estimate), and five per-image rates at each of the protocol's thresholds, float64."""
    if options.ci is None:
        return 0
    return 8 * n_test * (3 * (GRID + 1) + 5 * options.nsamples)


def bootstrap_of(options: RunOptions, seed: int) -> Bootstrap | None:
    """What a category's evaluation resamples with --ci (seeded by the model's seed), or None."""
    if options.ci is None:
        return None
    return Bootstrap(options.ci, options.bootstrap, seed)


def store(summary: dict[str, Any], bootstrap: Bootstrap | None, found: dict[str, Resamples]) -> None:
    """metrics.json's `intervals` ({metric: [low, high]}) and `ci` (how they were drawn, and each metric's
    `grid_error`: the statistic resampled less the metric, on the full set), with --ci."""
    if bootstrap is not None:
        summary["intervals"] = intervals(found, bootstrap.level)
        summary["ci"] = {"level": bootstrap.level, "resamples": bootstrap.resamples, "seed": bootstrap.seed,
                         "method": METHOD, "grid_error": {name: r.offset for name, r in found.items()}}


def of_mean(options: RunOptions, seed: int, found: list[dict[str, Resamples]]) -> dict[str, list[float]]:
    """The `mean` row's intervals, with --ci: of each metric every category has, from their replicates
    (metrics.bootstrap.pooled); {} without --ci."""
    if options.ci is None or not found:
        return {}
    shared = [name for name in found[0] if all(name in each for each in found)]
    return intervals({name: pooled([each[name] for each in found], seed) for name in shared}, options.ci)
