"""predict.py's scoring of images, the same in a one-shot run and a watched folder: each image decoded as
the model was fitted, scored, its map put back at its size, its heat map, overlay and mask written, its
regions found, its verdict and conformal p-value against the model's calibration."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common import UserError, printable
from datasets.base import Sample, read_image
from datasets.batch import loader
from models import SemiOrthogonal
from models.calibration import p_values
from pipeline import drift
from pipeline.blocked import predict_batches
from pipeline.calibrate import calibration_scores
from pipeline.predict_draw import Scale, colour, overlay, save_png
from pipeline.predict_files import output_paths
from pipeline.predict_images import PredictDataset, to_original_size
from pipeline.regions import find_regions


@dataclass(frozen=True)
class Judge:
    """What every image is compared with: the thresholds (calibrated or given), the calibration image
    scores for p-values (None: the model has none), the colour scale and the smallest region kept."""
    pixel: float
    image: float
    calibration: np.ndarray | None
    scale: Scale
    min_area: int = 1


def judge_of(model: SemiOrthogonal, model_path: str, pixel: float | None, image: float | None,
             min_area: int = 1) -> Judge:
    """The model's calibrated thresholds unless given; a model without them is one line saying why."""
    t = model.thresholds
    pixel = pixel if pixel is not None else t.get("pixel")
    image = image if image is not None else t.get("image")
    if pixel is None or image is None:
        why = (f"its {int(t['n_val'])} validation images cannot hold alpha {t['alpha']:.3g}, which needs "
               f"{int(t['n_needed'])}" if "n_needed" in t else "fitted without validation images, or merged")
        raise UserError(f"{model_path} has no calibrated thresholds ({why}); calibrate it with tools/recalibrate.py, "
                        "or pass --threshold and --image-threshold")
    scores = calibration_scores(model)
    # the colour scale puts the pixel threshold in the middle, anchored at the normal median
    low = t.get("val_pixel_median", 0.0)
    return Judge(pixel, image, scores, Scale(low, 2 * pixel - low, pixel, image), min_area)


def note_uncalibrated(judge: Judge, model_path: str) -> None:
    """Once per run, once it starts scoring (a refusal before stays one line)."""
    if judge.calibration is None:
        print(f"note: {model_path} records no calibration scores (written before they were recorded, or merged): "
              "no p-values and no drift check; tools/recalibrate.py records them", file=sys.stderr)


@dataclass
class Result:
    """One image scored: its CSV row and its regions.jsonl line."""
    path: Path
    score: float
    flagged: bool
    area: float  # the share of its pixels above the pixel threshold
    p_value: float | None
    regions: list[dict] = field(default_factory=list)

    def row(self) -> dict:
        return {"path": str(self.path), "image_score": f"{self.score:.6f}", "is_anomalous": int(self.flagged),
                "anomalous_area": f"{self.area:.6f}", "p_value": "" if self.p_value is None else f"{self.p_value:.6g}",
                "n_regions": len(self.regions)}

    def line(self) -> dict:
        return {"path": printable(self.path), "image_score": round(self.score, 6), "is_anomalous": self.flagged,
                "p_value": self.p_value, "regions": self.regions}


@dataclass
class Skipped:
    """An image that could not be read: reported, not scored."""
    path: Path
    error: str


def run_summary(results: list[Result], skipped: int, judge: Judge, model: SemiOrthogonal) -> dict:
    """summary.json: the run's verdicts against what the calibration promises (pipeline/drift.py)."""
    found = drift.summary(np.array([r.score for r in results]), judge.image, judge.calibration,
                          getattr(model, "calibration", {}))
    return {**found, "pixel_threshold": judge.pixel, "skipped": skipped,
            "regions": sum(len(r.regions) for r in results), "min_area": judge.min_area}


def caption(result: Result, judge: Judge) -> str:
    verdict = (f"score {result.score:.3g} > {judge.image:.3g}: anomalous" if result.flagged
               else f"score {result.score:.3g} <= {judge.image:.3g}: normal")
    p = "" if result.p_value is None else f", p = {result.p_value:.3g}"
    n = len(result.regions)
    return f"{verdict}{p}, {n} region{'s' if n != 1 else ''}"


def score_images(model: SemiOrthogonal, paths: list[Path], names: list[str], folder: Path, judge: Judge,
                 batch_size: int, workers: int, block: int | None = None) -> Iterator[Result | Skipped]:
    """Scores `paths` in order of the batches, writing each image's PNGs into `folder` under its name
    before yielding it. `block`: a model fitted in blocks, scored that many feature-map rows at a time."""
    dataset = PredictDataset([Sample(p) for p in paths], model.config.image_size, model.config.crop,
                             model.config.protocol, model.meta.get("dataset", ""))  # as the model was fitted
    data = loader(dataset, batch_size=batch_size, num_workers=workers)
    for batch, maps, scores in predict_batches(model, data, folder, block):
        for i, index in enumerate(batch.index.tolist()):
            if batch.error[i]:
                yield Skipped(paths[index], batch.error[i])
                continue
            yield scored_image(model, paths[index], maps[i].float().cpu().numpy(), float(scores[i]), judge,
                               output_paths(folder, names[index]))


def scored_image(model: SemiOrthogonal, path: Path, input_map: np.ndarray, score: float, judge: Judge,
                 files: dict[str, Path]) -> Result:
    original = read_image(path)
    score_map = to_original_size(input_map, model, (original.height, original.width))
    mask = score_map > judge.pixel
    p_value = None if judge.calibration is None else float(p_values(judge.calibration, np.array([score]))[0])
    result = Result(path, score, score > judge.image, float(mask.mean()), p_value,
                    find_regions(score_map, judge.pixel, judge.min_area))
    heat = colour(score_map, judge.scale.low, judge.scale.high)
    save_png(heat, files["heatmap"])
    save_png(overlay(np.asarray(original), heat, result.regions, judge.scale, caption(result, judge), result.flagged),
             files["overlay"])
    save_png(mask.astype(np.uint8) * 255, files["mask"])
    return result
