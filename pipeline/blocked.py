"""One category fitted and scored in blocks of feature-map rows (models/blocks.py), when the estimate
finds that its state does not fit the memory budget in one piece (pipeline/estimate.py sets plan.block_rows).

Each image is decoded and goes through the backbone once: its embeddings go to files in the category's
staging folder, which every block reads again. The model's sums file is written there too and is
committed with model.pt; the embeddings are removed first.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import torch

import results
from datasets.base import SegmentedLoader
from datasets.batch import Batch
from models import SemiOrthogonal
from models.blocks import BlockedStats, EmbeddingFile, fit_and_score, score_in_blocks
from pipeline import progress
from pipeline.calibrate import apply, calibrate_validation
from pipeline.category import Scored
from pipeline.options import RunOptions
from pipeline.plan import Plan
from pipeline.shared_pass import Stacked, build_model, images_of, warn_no_validation

MAP_BATCH = 8  # distance maps upsampled and blurred at a time


def embed_into(model: SemiOrthogonal, images: Iterable[torch.Tensor], file: EmbeddingFile) -> None:
    """Each batch of images through the backbone and W, its embeddings appended to `file` in the fit's groups."""
    for z, _ in model.gather(model.features_of(images)):
        file.append(z)


def maps_of(model: SemiOrthogonal, distances: torch.Tensor, batch: int = MAP_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """(N, h, w) distances -> score maps (N, H, W) and image scores (N,), `batch` maps at a time."""
    maps = np.empty((len(distances), *model.config.input_size), dtype=np.float32)
    for start in range(0, len(distances), batch):
        maps[start:start + batch] = model.smooth(distances[start:start + batch]).numpy()
    return maps, maps.reshape(len(maps), -1).max(axis=1) if len(maps) else np.empty(0, np.float32)


def fit_and_score_blocked(options: RunOptions, plan: Plan, data: SegmentedLoader, device: torch.device,
                          staging: Path, extractors: dict | None = None,
                          save: Callable[[SemiOrthogonal], Future] | None = None) -> Scored:
    """pipeline.shared_pass.fit_and_score for one plan, in blocks of plan.block_rows feature-map rows."""
    assert plan.block_rows is not None
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    model = build_model(options, plan, device, {} if extractors is None else extractors)
    model.meta, model.fitted, model.provenance = dict(plan.meta), plan.fitted, dict(plan.provenance)
    c = plan.config
    P, k = model.positions, model.W.shape[1]
    files = [EmbeddingFile(staging / f".embeddings-{name}", P, k) for name in ("fit", "val", "test")]
    counts = (len(plan.val), len(plan.splits.test))
    masks, labels = [Stacked(n, np.uint8) for n in counts], [Stacked(n, np.int8) for n in counts]
    try:
        t = time.perf_counter()
        fitting = progress.track(data.next_segment(), f"{plan.category} fit", len(plan.fit))
        embed_into(model, (batch.image for batch in fitting), files[0])
        seconds["fit"] = time.perf_counter() - t
        t = time.perf_counter()
        for i, (name, count) in enumerate(zip(("validation", "test"), counts, strict=True)):
            scoring = progress.track(data.next_segment(), f"{plan.category} {name}", count)
            embed_into(model, images_of(scoring, masks[i], labels[i]), files[i + 1])
        seconds["embed"] = time.perf_counter() - t
        t = time.perf_counter()
        model.stats, (val, test) = fit_and_score(files[0], files[1:], model.feature_size, plan.block_rows, c.eps,
                                                 c.unbiased, staging / results.SUMS_FILE, device)
        seconds["blocks"] = time.perf_counter() - t
    finally:
        for file in files:
            file.close()
    if options.verbose:
        print(f"{plan.category}: {files[0].n} images fitted in blocks of {plan.block_rows} feature-map rows "
              f"({model.feature_size[0]} rows, {P} positions, k = {c.k}) in {seconds['blocks']:.2f} s, "
              f"embeddings in {seconds['fit'] + seconds['embed']:.2f} s", flush=True)
    t = time.perf_counter()
    if len(val):
        val_maps, val_scores = maps_of(model, val)
        thresholds = calibrate_validation(model, val_maps, val_scores, plan.val, options.alpha, options.val_fpr,
                                          plan.category)
        del val_maps
    else:
        warn_no_validation(plan.category)
        thresholds = apply(model, None, [], "train.py")
    seconds["calibrate"] = time.perf_counter() - t
    saved = save(model) if save is not None else None
    t = time.perf_counter()
    scores = None
    if len(test):
        maps, image_scores = maps_of(model, test)
        scores = results.Scores(maps=maps, image_scores=image_scores, masks=masks[1].array, labels=labels[1].array)
        scores.defects = np.array([s.defect for s in plan.splits.test])
        scores.paths = np.array([str(Path(s.image).absolute()) for s in plan.splits.test])
    seconds["score"] = time.perf_counter() - t
    seconds["device_total"] = time.perf_counter() - start
    if save is None:
        (staging / results.SUMS_FILE).unlink(missing_ok=True)
    return Scored(plan, staging, scores, thresholds, seconds, files[0].n, saved)


def predict_batches(model: SemiOrthogonal, batches: Iterable[Batch], folder: Path, rows: int | None
                    ) -> Iterator[tuple[Batch, torch.Tensor, torch.Tensor]]:
    """Each batch with its score maps and image scores, as SemiOrthogonal.predict gives them. A model
    whose sums stay in their file (BlockedStats) embeds every batch first, into a file in `folder`, then
    scores block by block of `rows` feature-map rows; the batches come back without their images."""
    stats = getattr(model, "stats", None)  # an ONNX model has none
    if not isinstance(stats, BlockedStats):
        for batch in batches:
            yield (batch, *model.predict(batch.image))
        return
    assert rows is not None
    held: list[Batch] = []

    def images() -> Iterable[torch.Tensor]:
        for batch in batches:
            held.append(Batch(batch.image[:0], batch.mask[:0], batch.label, batch.index, batch.error))
            yield batch.image

    file = EmbeddingFile(folder / ".embeddings", model.positions, model.W.shape[1])
    try:
        for z, _ in model.gather(model.features_of(images())):
            file.append(z)
        (distances,) = score_in_blocks(stats, [file], model.feature_size, rows, model.config.eps,
                                       model.config.unbiased, model.device)
    finally:
        file.close()
    first = 0
    for batch in held:
        maps = model.smooth(distances[first:first + len(batch.index)])
        first += len(batch.index)
        yield batch, maps, maps.flatten(1).amax(dim=1)
