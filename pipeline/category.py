"""One category's pipeline: fit, calibrate and score on the device, then metrics, files and the
CSV row on the CPU (in the background, while the device fits the next category)."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import metrics
import results
from common import UserError
from datasets.base import SegmentedLoader
from datasets.batch import Batch
from metrics.bootstrap import Bootstrap, Resamples
from models import SemiOrthogonal, calibrate
from models.backbone import build_extractor
from models.distributed import all_reduce_stats
from pipeline import intervals, outputs, progress
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
    """A committed category: its folder and the content of its metrics.json."""
    category: str
    out_dir: Path
    summary: dict[str, Any] = field(repr=False)

    @property
    def metrics(self) -> dict[str, float]:
        return self.summary["metrics"]


@torch.no_grad()
def score(model: SemiOrthogonal, batches: Iterable[Batch]) -> results.Scores | None:
    """Score maps (float32, on the host), image scores, masks and labels of every batch; None if none."""
    maps, image_scores = [], []
    masks: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for batch_maps, batch_scores in model.predict_batches(images_of(batches, masks, labels)):
        maps.append(batch_maps.float().cpu().numpy())
        image_scores.append(batch_scores.float().cpu().numpy())
    if not maps:
        return None
    return results.Scores(maps=np.concatenate(maps), image_scores=np.concatenate(image_scores),
                          masks=np.concatenate(masks).astype(np.uint8), labels=np.concatenate(labels).astype(np.int8))


def images_of(batches: Iterable[Batch], masks: list[np.ndarray], labels: list[np.ndarray]
              ) -> Iterator[torch.Tensor]:
    """Each batch's images, its masks and labels appended as it goes: in the order the maps come back in."""
    for batch in batches:
        masks.append(batch.mask.numpy())
        labels.append(batch.label.numpy())
        yield batch.image


def build_model(options: RunOptions, plan: Plan, device: torch.device, extractors: dict) -> SemiOrthogonal:
    """A new model sharing the cached backbone, or the --resume file's model with its sums."""
    if options.resume is not None:
        model = SemiOrthogonal.load(options.resume, device, finalize=False)
        model.config = plan.config
        return model
    c = plan.config
    key = (c.backbone, c.seed, c.layers, c.pre_relu)
    if key not in extractors:
        try:
            extractors[key] = build_extractor(c.backbone, options.weights, c.seed, c.layers, c.pre_relu).to(device)
        except UserError as e:  # the model speaks of weights; the user needs the flag
            raise UserError(f"--weights {options.weights}: {e}; --weights PATH and --weights random also work") \
                from None
    return SemiOrthogonal(plan.config, extractor=extractors[key]).to(device)


def fit_and_score(options: RunOptions, plan: Plan, data: SegmentedLoader, device: torch.device,
                  staging: Path | None, rank: int = 0, world: int = 1, extractors: dict | None = None,
                  save: Callable[[SemiOrthogonal], Future] | None = None) -> Scored | None:
    """Fits, calibrates and scores one category, reading its segments of `data`; under torchrun only
    rank 0 (the one with a staging folder) goes past the fit. `save` starts writing the calibrated
    model (save_model in the background); None: no model file."""
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    model = build_model(options, plan, device, {} if extractors is None else extractors)
    # what the model is of and which image files its sums hold (the --resume file's kept and extended):
    # merge_stats refuses mixed categories, and --resume and merges images counted twice
    model.meta, model.fitted, model.provenance = dict(plan.meta), plan.fitted, dict(plan.provenance)
    if rank != 0 and model.stats is not None:  # resumed sums are counted once, by rank 0
        model.stats = None

    t = time.perf_counter()
    fitting = progress.track(data.next_segment(), f"{plan.category} fit", len(plan.fit))
    model.fit(batch.image for batch in fitting)
    if world > 1:
        all_reduce_stats(model.running_stats())  # fit() made them, or extended the resumed ones
    seconds["fit"] = time.perf_counter() - t
    assert model.stats is not None
    n_fitted = model.stats.n
    say = print if options.verbose and rank == 0 else (lambda *a, **k: None)
    c = plan.config
    say(f"{plan.category}: fit {n_fitted} {'tiles' if c.tile else 'images'} in {seconds['fit']:.2f} s: "
        f"{model.positions} positions, F = {model.W.shape[0]}, k = {c.k}, --approx {c.approx}, "
        f"sums {nbytes(model.stats.state()) / 1e9:.3f} GB",
        flush=True)
    if rank != 0:
        return None
    t = time.perf_counter()
    model.finalize()  # the packed sums stay beside the factor until model.pt is written
    if save is None:
        model.stats = None
    seconds["precision"] = time.perf_counter() - t
    say(f"{plan.category}: precision in {seconds['precision']:.2f} s: {precision_bytes(model) / 1e9:.3f} GB",
        flush=True)

    t = time.perf_counter()
    thresholds = {}
    validation = score(model, progress.track(data.next_segment(), f"{plan.category} validation", len(plan.val)))
    if validation is not None:
        thresholds = calibrate(validation.maps, validation.image_scores, options.val_fpr)
    else:
        warn_no_validation(plan.category)
    model.thresholds = thresholds
    seconds["calibrate"] = time.perf_counter() - t
    say(f"{plan.category}: calibrate on {0 if validation is None else len(validation)} images in "
        f"{seconds['calibrate']:.2f} s", flush=True)
    # model.pt is complete now (sums and thresholds): written once, in the background, while the test
    # images are scored; the sums are dropped once it is written.
    saved = save(model) if save is not None else None
    t = time.perf_counter()
    try:
        scores = score(model, progress.track(data.next_segment(), f"{plan.category} test", len(plan.splits.test)))
    except BaseException:
        if saved is not None:  # the caller removes the staging folder: not while the file is being written
            wait([saved])
        raise
    seconds["score"] = time.perf_counter() - t
    n_scored = 0 if scores is None else len(scores)
    say(f"{plan.category}: score {n_scored} test images in {seconds['score']:.2f} s", flush=True)
    seconds["device_total"] = time.perf_counter() - start
    if scores is not None:  # None: no test images (a folder dataset of normal images only)
        scores.defects = np.array([s.defect for s in plan.splits.test])
        # absolute: the report reads the images from wherever it is run, not only where training ran
        scores.paths = np.array([str(Path(s.image).absolute()) for s in plan.splits.test])
    assert staging is not None  # rank 0, the only one here, has the staging folder
    return Scored(plan, staging, scores, thresholds, seconds, n_fitted, saved)


def warn_no_validation(category: str) -> None:
    print(f"warning: {category}: no validation images (fewer than 10 training images): no thresholds stored",
          file=sys.stderr)


def nbytes(tensors: dict) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values() if t.dim())


def precision_bytes(model: SemiOrthogonal) -> int:
    """What scoring holds: mu and L, or the --approx alternative's tensors."""
    held = vars(model.precision) if model.precision is not None else {"mu": model.mu, "L": model.L_packed,
                                                                      "L_inv": model.L_inv}
    return nbytes({k: v for k, v in held.items() if isinstance(v, torch.Tensor)})


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
        s, timings = scored.scores, dict[str, float]()
        t = time.perf_counter()
        if s is not None and s.labels.any():  # else nothing to measure: metrics stay empty
            bootstrap, found = intervals.bootstrap_of(options, scored.plan.config.seed), dict[str, Resamples]()
            summary["metrics"] = evaluate(options, s, no_mask(scored.plan), timings, bootstrap, found)
            intervals.store(summary, bootstrap, found)
        if options.verbose:
            print(f"{scored.plan.category}: metrics " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()),
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
    return CategoryResult(scored.plan.category, out_dir, summary)


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
