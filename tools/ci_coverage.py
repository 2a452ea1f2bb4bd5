"""How often --ci's intervals hold the true value: simulated test sets with a known answer.

    python tools/ci_coverage.py --sims 1000 --resamples 1000            # image AUROC, binormal scores
    python tools/ci_coverage.py --maps --sims 1000 --resamples 1000     # every metric, simulated maps

Image AUROC: normal image scores N(0, 1), defective N(d, 1), d = sqrt(2) Phi^-1(AUROC), so the AUROC is
known exactly. Maps (`--maps`): 32 x 32 score maps, smoothed noise plus a per-image offset (so pixels of
one image are correlated, as a model's are), 1 or 2 rectangular defects of random strength on the
defective images; the true values are the metrics of one large simulated set (`--truth-images`), which
is the population value for the exact metrics. The paper protocol's thresholds depend on the test set's
size, so its "true" value is only that of the large set. Prints, per metric, the share of intervals
holding the true value, for BCa (what --ci reports) and for the plain percentile interval.
"""
from __future__ import annotations

import argparse
import sys
import time
from statistics import NormalDist

import _root  # noqa: F401
import numpy as np
from scipy import ndimage

import metrics
from common import run_cli
from metrics.bootstrap import Bootstrap, Resamples, interval

SIDE = 32  # simulated maps' size


def binormal(rng: np.random.Generator, n_normal: int, n_defective: int, auroc: float) -> tuple[np.ndarray, np.ndarray]:
    """Image scores whose population AUROC is `auroc`, and their labels (normal first)."""
    shift = 2 ** 0.5 * NormalDist().inv_cdf(auroc)
    scores = np.concatenate([rng.normal(size=n_normal), rng.normal(shift, 1, size=n_defective)])
    return scores.astype(np.float32), np.repeat([0, 1], [n_normal, n_defective])


def simulated_maps(rng: np.random.Generator, n_normal: int, n_defective: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Maps (N, SIDE, SIDE) float32, masks, image scores (each map's maximum) and labels."""
    n = n_normal + n_defective
    maps = ndimage.gaussian_filter(rng.normal(size=(n, SIDE, SIDE)), (0, 1.5, 1.5)) * 3
    maps += rng.normal(0, 0.5, size=(n, 1, 1))  # images differ as a whole: their pixels are not independent
    masks = np.zeros(maps.shape, bool)
    for i in range(n_normal, n):
        for _ in range(rng.integers(1, 3)):
            h, w = rng.integers(3, 11, size=2)
            top, left = rng.integers(0, SIDE - h), rng.integers(0, SIDE - w)
            masks[i, top:top + h, left:left + w] = True
            maps[i, top:top + h, left:left + w] += rng.uniform(0.3, 2.5)
    maps = maps.astype(np.float32)
    return maps, masks, maps.reshape(n, -1).max(axis=1), np.repeat([0, 1], [n_normal, n_defective])


def percentile(r: Resamples, level: float) -> tuple[float, float]:
    tail = (100 - level) / 200
    low, high = np.nanquantile(r.values, [tail, 1 - tail])
    return float(low), float(high)


def coverage(truth: dict[str, float], draw, sims: int, bootstrap: Bootstrap, seed: int,
             progress: bool = False) -> dict[str, list[float]]:
    """{metric: [BCa coverage, percentile coverage]} over `sims` test sets drawn by `draw(rng)`;
    `progress`: the counts so far on stderr every 100 sets."""
    rng = np.random.default_rng(seed)
    held = {name: np.zeros(2) for name in truth}
    for sim in range(sims):
        if progress and sim and sim % 100 == 0:
            print(f"{sim} sets: " + ", ".join(f"{n} {h[0] / sim:.3f}/{h[1] / sim:.3f}" for n, h in held.items()),
                  file=sys.stderr, flush=True)
        maps, masks, scores, labels = draw(rng)
        found: dict[str, Resamples] = {}
        metrics.evaluate(maps, masks, scores, labels, 0.3, 1000, names=list(truth), resampled=found,
                         bootstrap=Bootstrap(bootstrap.level, bootstrap.resamples, seed + sim))
        for name, true in truth.items():
            for k, (low, high) in enumerate((interval(found[name], bootstrap.level),
                                             percentile(found[name], bootstrap.level))):
                held[name][k] += low <= true <= high
    return {name: list(h / sims) for name, h in held.items()}


def image_coverage(sims: int, n_normal: int, n_defective: int, auroc: float, bootstrap: Bootstrap,
                   seed: int = 0) -> list[float]:
    """[BCa, percentile] coverage of the image AUROC on binormal scores."""
    def draw(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        scores, labels = binormal(rng, n_normal, n_defective, auroc)
        flat = np.zeros((len(scores), 1, 1), np.float32)  # no pixels: the image metrics only
        return flat, flat.astype(bool), scores, labels
    return coverage({"image_auroc": auroc}, draw, sims, bootstrap, seed)["image_auroc"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sims", type=int, default=1000, help="simulated test sets (default 1000)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples each (default 1000)")
    p.add_argument("--level", type=float, default=95.0, help="interval level in percent (default 95)")
    p.add_argument("--normal", type=int, default=30, help="normal test images (default 30)")
    p.add_argument("--defective", type=int, default=70, help="defective test images (default 70)")
    p.add_argument("--auroc", type=float, action="append", default=None,
                   help="true image AUROC, repeatable (default .85 and .94)")
    p.add_argument("--maps", action="store_true", help="simulated maps: every metric of a run")
    p.add_argument("--truth-images", type=int, default=20000, help="--maps: images of the large set (default 20000)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    bootstrap = Bootstrap(args.level, args.resamples, args.seed)
    start = time.perf_counter()
    print(f"{args.sims} simulated test sets of {args.normal} normal and {args.defective} defective images, "
          f"{args.resamples} resamples each, {args.level:g}% intervals")
    print("| metric | true value | BCa coverage | percentile coverage |\n|---|---|---|---|")
    if not args.maps:
        for auroc in args.auroc or [0.85, 0.94]:
            bca, plain = image_coverage(args.sims, args.normal, args.defective, auroc, bootstrap, args.seed)
            print(f"| image_auroc | {auroc:.4f} | {bca:.3f} | {plain:.3f} |", flush=True)
    else:
        rng = np.random.default_rng(args.seed + 10**6)
        share = args.defective / (args.normal + args.defective)
        large = simulated_maps(rng, round(args.truth_images * (1 - share)), round(args.truth_images * share))
        truth = metrics.evaluate(*large, 0.3, 1000, headline="auroc")
        del large
        found = coverage(truth, lambda r: simulated_maps(r, args.normal, args.defective), args.sims, bootstrap,
                         args.seed, progress=True)
        for name, (bca, plain) in found.items():
            print(f"| {name} | {truth[name]:.4f} | {bca:.3f} | {plain:.3f} |")
    print(f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    run_cli(main)
