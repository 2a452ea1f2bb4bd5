"""One category's CPU half (a grid's variant's): metrics, files and the CSV row, in the background while
the device fits the next category; the device half is pipeline/shared_pass.py."""
from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import metrics
import results
from metrics.bootstrap import Bootstrap, Resamples
from models import SemiOrthogonal
from pipeline import intervals, outputs
from pipeline.options import RunOptions
from pipeline.plan import Plan


@dataclass
class Scored:
    """What the device produced for one category, waiting for the CPU half."""
    plan: Plan
    staging: Path
    scores: results.Scores | None  # None: no test images
    thresholds: dict[str, float]
    seconds: dict[str, float]
    n_fitted: int
    saved: Future | None  # model.pt being written into the staging folder; None: --no-save-model


@dataclass
class CategoryResult:
    """A committed category (a grid's variant): its folder and the content of its metrics.json."""
    category: str  # as lines name it: the category, and its variant in a grid (Plan.name)
    out_dir: Path
    summary: dict[str, Any] = field(repr=False)
    resamples: dict[str, Resamples] = field(default_factory=dict, repr=False)  # --ci's, for the mean row

    @property
    def metrics(self) -> dict[str, float]:
        return self.summary["metrics"]


def save_model(staging: Path, embed_backbone: bool, model: SemiOrthogonal) -> None:
    """Writes model.pt once, sums and thresholds together, then drops the sums (a background job: the
    model scores on meanwhile)."""
    model.save(staging / results.MODEL_FILE, embed_backbone)
    model.stats = None


def summary_of(options: RunOptions, scored: Scored) -> dict[str, Any]:
    """metrics.json's content, metrics still empty."""
    plan, config = scored.plan, scored.plan.config
    return {
        "dataset": options.dataset, "category": plan.category, "model": config.backbone, "approx": config.approx,
        "k": config.k, "eps": config.eps, "image_size": list(config.image_size),
        "crop": list(config.crop) if config.crop else None, "seed": config.seed,
        "backbone_dtype": config.backbone_dtype, "weights": options.weights, "unbiased": config.unbiased,
        "protocol": config.protocol,
        "fpr_limit": options.fpr, "num_thresholds": options.nsamples, "n_train": len(plan.fit),
        "n_val": len(plan.val), "n_test": len(plan.splits.test), "metrics": {}, "seconds": scored.seconds,
        "thresholds": scored.thresholds, "resumed_from": str(options.resume) if options.resume else None,
        "n_fitted_total": scored.n_fitted, "label": options.label, "layers": list(config.layers),
        "pre_relu": config.pre_relu, "estimate": plan.estimate, "block_rows": plan.block_rows,
        "provenance": plan.provenance,
        "tile": list(config.tile) if config.tile else None,
        "tile_stride": list(config.stride) if config.stride else None,
    }


def finish(options: RunOptions, scored: Scored) -> CategoryResult:
    """The CPU half: every metric, scores.npz and metrics.json staged, then the CSV row appended and the
    category committed. On any error the staging folder goes and the previous results stay. Without
    defective test images, metrics.json's metrics are empty (and so are the CSV row's metric cells)."""
    try:
        summary = summary_of(options, scored)
        s, timings, found = scored.scores, dict[str, float](), dict[str, Resamples]()
        t = time.perf_counter()
        if s is not None and s.labels.any():  # else nothing to measure: metrics stay empty
            bootstrap = intervals.bootstrap_of(options, scored.plan.config.seed)
            summary["metrics"] = evaluate(options, s, no_mask(scored.plan), timings, bootstrap, found)
            intervals.store(summary, bootstrap, found)
        if options.verbose:
            print(f"{scored.plan.name}: metrics " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()),
                  flush=True)
        measuring = time.perf_counter() - t  # the metrics run side by side: their wall time, not their sum
        t = time.perf_counter()
        if s is not None:
            results.write_scores(scored.staging / results.SCORES_FILE, s)
        seconds = summary["seconds"]
        seconds.update({f"metric_{name}": value for name, value in timings.items()})
        seconds["write"] = time.perf_counter() - t
        seconds["total"] = seconds["device_total"] + measuring + seconds["write"]
        results.write_metrics(scored.staging / results.METRICS_FILE, summary)
        if scored.saved is not None:
            scored.saved.result()
        out_dir = scored.plan.out_dir
        outputs.check_free(out_dir, options.overwrite)
        # The row before the commit: a report that cannot take it then leaves nothing committed, so a rerun
        # is not refused; a kill between the two leaves a row whose folder keeps the earlier results, and
        # the rerun's row comes after it (tools/summarize.py keeps a category's last row).
        results.append_rows(options.report, [results.csv_row(summary, out_dir)])
        outputs.commit(scored.staging, out_dir, options.overwrite)
    except BaseException:
        outputs.discard(scored.staging)
        raise
    return CategoryResult(scored.plan.name, out_dir, summary, found)


def no_mask(plan: Plan) -> np.ndarray:
    """(N,) bool: the defective test images without a mask (--allow-missing-masks), in test order."""
    return np.array([s.label == 1 and s.mask is None for s in plan.splits.test], dtype=bool)


def evaluate(options: RunOptions, s: results.Scores, unmasked: np.ndarray, timings: dict,
             bootstrap: Bootstrap | None = None, resampled: dict | None = None) -> dict[str, float]:
    """Every metric --metric asks for (with `bootstrap`, each one's replicates into `resampled`); a defective
    image without a mask counts only for the metrics over every image (`Metric.every_image`, as the
    image AUROC), as its all-zero mask would call its defect pixels normal."""
    keep = ~unmasked if unmasked.any() else slice(None)  # a slice: no copy of the maps in the usual case
    found = metrics.evaluate(s.maps[keep], s.masks[keep], s.image_scores[keep], s.labels[keep],
                             fpr_limit=options.fpr, num_thresholds=options.nsamples, timings=timings,
                             headline=options.metric, bootstrap=bootstrap, resampled=resampled)
    if unmasked.any():
        every = [m.name for m in metrics.REGISTRY if m.every_image and m.name in found]
        found.update(metrics.evaluate(s.maps, s.masks, s.image_scores, s.labels, fpr_limit=options.fpr,
                                      num_thresholds=options.nsamples, names=every, bootstrap=bootstrap,
                                      resampled=resampled))
    return found
