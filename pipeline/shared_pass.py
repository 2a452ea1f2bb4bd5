"""One pass over a category's images on the device: its variants (one, or a grid's) fitted, calibrated
and scored together.

Each batch is decoded once and goes through each distinct backbone once (variants differ in W, and with
random weights in the backbone's seed); every variant projects the same stage outputs with its own W
into its own group buffer (models/groups.py), so each gets the maps its own run would, bit for bit.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, wait
from pathlib import Path

import numpy as np
import torch

import results
from common import UserError
from datasets.base import SegmentedLoader
from datasets.batch import Batch
from models import SemiOrthogonal
from models.backbone import build_extractor
from models.config import Config
from models.distributed import all_reduce_stats
from models.groups import Fitter, Scorer
from pipeline import progress
from pipeline.calibrate import apply, calibrate_validation
from pipeline.category import Scored
from pipeline.options import RunOptions
from pipeline.plan import Plan

Save = Callable[[SemiOrthogonal], Future]  # starts writing a calibrated model's file (in the background)


def backbone_key(config: Config, weights: str) -> tuple:
    """What tells two variants' backbones apart: random weights are drawn from the seed."""
    return config.backbone, config.seed if weights == "random" else None, config.layers, config.pre_relu


def build_model(options: RunOptions, plan: Plan, device: torch.device, extractors: dict) -> SemiOrthogonal:
    """A new model sharing the cached backbone, or the --resume file's model with its sums."""
    if options.resume is not None:
        model = SemiOrthogonal.load(options.resume, device, finalize=False)
        model.config = plan.config
        return model
    c = plan.config
    key = backbone_key(c, options.weights)
    if key not in extractors:
        try:
            extractors[key] = build_extractor(c.backbone, options.weights, c.seed, c.layers, c.pre_relu).to(device)
        except UserError as e:  # the model speaks of weights; the user needs the flag
            raise UserError(f"--weights {options.weights}: {e}; --weights PATH and --weights random also work") \
                from None
    return SemiOrthogonal(plan.config, extractor=extractors[key]).to(device)


def shared_features(models: list[SemiOrthogonal], images: torch.Tensor) -> Iterator[tuple[list[torch.Tensor],
                                                                                          list[int]]]:
    """The stage outputs of a batch (a tiled model's: its tiles, a batch's count at a time), once per
    distinct backbone, with the indices of the models they are for."""
    by_backbone: dict[int, list[int]] = {}
    for i, model in enumerate(models):
        by_backbone.setdefault(id(model.extractor), []).append(i)
    for indices in by_backbone.values():
        for features in models[indices[0]].features_of([images]):
            yield features, indices


class Stacked:
    """`count` rows written in place as batches come back, in one array allocated at the first batch's
    shape: never a list of batches joined at the end (a copy, and pieces the allocator keeps, which the
    metrics phase would then add to)."""

    def __init__(self, count: int, dtype: type):
        self.count, self.dtype, self.filled = count, dtype, 0
        self._array: np.ndarray | None = None

    def add(self, rows: np.ndarray) -> None:
        if self._array is None:
            self._array = np.empty((self.count, *rows.shape[1:]), dtype=self.dtype)
        self._array[self.filled:self.filled + len(rows)] = rows
        self.filled += len(rows)

    @property
    def array(self) -> np.ndarray:
        assert self._array is not None  # filled: add() was called
        return self._array[:self.filled]


def images_of(batches: Iterable[Batch], masks: Stacked, labels: Stacked) -> Iterator[torch.Tensor]:
    """Each batch's images, its masks and labels kept as it goes: in the order the maps come back in."""
    for batch in batches:
        masks.add(batch.mask.numpy())
        labels.add(batch.label.numpy())
        yield batch.image


@torch.no_grad()
def score_together(models: list[SemiOrthogonal], batches: Iterable[Batch], count: int) -> list[results.Scores | None]:
    """Each model's score maps (float32, on the host), image scores, masks and labels of the `count` images
    of `batches`; None if there are none."""
    scorers = [Scorer(model) for model in models]
    maps = [Stacked(count, np.float32) for _ in models]
    image_scores = [Stacked(count, np.float32) for _ in models]

    def keep(i: int, done: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        for batch_maps, batch_scores in done:
            maps[i].add(batch_maps.float().cpu().numpy())
            image_scores[i].add(batch_scores.float().cpu().numpy())
    masks, labels = Stacked(count, np.uint8), Stacked(count, np.int8)
    for images in images_of(batches, masks, labels):
        for features, indices in shared_features(models, images):
            for i in indices:
                keep(i, scorers[i].add(features))
        for i, scorer in enumerate(scorers):
            keep(i, scorer.end_batch())
    for i, scorer in enumerate(scorers):
        keep(i, scorer.flush())
    if not masks.filled:
        return [None for _ in models]
    return [results.Scores(maps=maps[i].array, image_scores=image_scores[i].array, masks=masks.array,
                           labels=labels.array) for i in range(len(models))]


def score(model: SemiOrthogonal, batches: Iterable[Batch], count: int) -> results.Scores | None:
    """score_together for one model."""
    return score_together([model], batches, count)[0]


def fit_together(models: list[SemiOrthogonal], batches: Iterable[Batch]) -> None:
    """Each model's sums over the batches (the fitters hold the sums only while this runs: a model drops them
    once its file is written)."""
    fitters = [Fitter(model) for model in models]
    for batch in batches:
        for features, indices in shared_features(models, batch.image):
            for i in indices:
                fitters[i].add(features)
    for fitter in fitters:
        fitter.flush()


@torch.no_grad()
def fit_and_score(options: RunOptions, plans: list[Plan], data: SegmentedLoader, device: torch.device,
                  stagings: list[Path | None], rank: int = 0, world: int = 1, extractors: dict | None = None,
                  saves: Sequence[Save | None] | None = None) -> list[Scored]:
    """Fits, calibrates and scores one category's variants (`plans`, one per variant) from one pass over its
    segments of `data`; under torchrun only rank 0 (the one with staging folders) goes past the fit. Each
    `saves` entry starts writing its calibrated model (save_model in the background); None: no model file."""
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    extractors = {} if extractors is None else extractors
    models = [build_model(options, plan, device, extractors) for plan in plans]
    for model, plan in zip(models, plans, strict=True):
        # what the model is of and which image files its sums hold (the --resume file's kept and extended):
        # merge_stats refuses mixed categories, and --resume and merges images counted twice
        model.meta, model.fitted, model.provenance = dict(plan.meta), plan.fitted, dict(plan.provenance)
        if rank != 0 and model.stats is not None:  # resumed sums are counted once, by rank 0
            model.stats = None
    first = plans[0]

    t = time.perf_counter()
    fit_together(models, progress.track(data.next_segment(), f"{first.category} fit", len(first.fit)))
    if world > 1:
        for model in models:
            all_reduce_stats(model.running_stats())  # fit() made them, or extended the resumed ones
    seconds["fit"] = time.perf_counter() - t
    say = print if options.verbose and rank == 0 else (lambda *a, **k: None)
    for model, plan in zip(models, plans, strict=True):
        assert model.stats is not None
        c = plan.config
        say(f"{plan.name}: fit {model.stats.n} {'tiles' if c.tile else 'images'} in {seconds['fit']:.2f} s: "
            f"{model.positions} positions, F = {model.W.shape[0]}, k = {c.k}, --approx {c.approx}, "
            f"sums {nbytes(model.stats.state()) / 1e9:.3f} GB", flush=True)
    if rank != 0:
        return []
    saves = saves or [None] * len(plans)
    own: list[dict[str, float]] = [dict(seconds) for _ in plans]
    n_fitted = []
    for model, plan, save, times in zip(models, plans, saves, own, strict=True):
        assert model.stats is not None
        n_fitted.append(model.stats.n)
        t = time.perf_counter()
        model.finalize()  # the packed sums stay beside the factor until model.pt is written
        if save is None:
            model.stats = None
        times["precision"] = time.perf_counter() - t
        say(f"{plan.name}: precision in {times['precision']:.2f} s: {precision_bytes(model) / 1e9:.3f} GB",
            flush=True)

    t = time.perf_counter()
    validation = score_together(models, progress.track(data.next_segment(), f"{first.category} validation",
                                                       len(first.val)), len(first.val))
    if validation[0] is None:
        warn_no_validation(first.category)
    thresholds = [calibrate_validation(model, v.maps, v.image_scores, plan.val, options.alpha, options.val_fpr,
                                       plan.name) if v is not None else apply(model, None, [], "train.py")
                  for model, plan, v in zip(models, plans, validation, strict=True)]
    del validation
    for times in own:
        times["calibrate"] = time.perf_counter() - t
    for plan, limits in zip(plans, thresholds, strict=True):
        say(f"{plan.name}: calibrate on {limits.get('n_val', 0)} images in {own[0]['calibrate']:.2f} s", flush=True)
    # model.pt is complete now (sums and thresholds): written once, in the background, while the test
    # images are scored; the sums are dropped once it is written.
    saved = [save(model) if save is not None else None for model, save in zip(models, saves, strict=True)]
    t = time.perf_counter()
    try:
        tests = score_together(models, progress.track(data.next_segment(), f"{first.category} test",
                                                      len(first.splits.test)), len(first.splits.test))
    except BaseException:
        wait([s for s in saved if s is not None])  # the caller removes the staging folders: not while written
        raise
    scored = []
    for plan, staging, scores, limits, times, n, done in zip(plans, stagings, tests, thresholds, own, n_fitted, saved,
                                                             strict=True):
        times["score"] = time.perf_counter() - t
        say(f"{plan.name}: score {0 if scores is None else len(scores)} test images in {times['score']:.2f} s",
            flush=True)
        times["device_total"] = time.perf_counter() - start
        if scores is not None:  # None: no test images (a folder dataset of normal images only)
            scores.defects = np.array([s.defect for s in plan.splits.test])
            # absolute: the report reads the images from wherever it is run, not only where training ran
            scores.paths = np.array([str(Path(s.image).absolute()) for s in plan.splits.test])
        assert staging is not None  # rank 0, the only one here, has the staging folders
        scored.append(Scored(plan, staging, scores, limits, times, n, done))
    return scored


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
