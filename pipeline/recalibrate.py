"""New thresholds for a fitted model (tools/recalibrate.py), without refitting: normal images the model
was not fitted on are scored as train.py scores its validation images, and the same calibration code
(pipeline/calibrate.py) sets the thresholds. Works on merged and resumed models; refuses images in the
model's fit (its recorded file digests) and an alpha those images cannot guarantee, before decoding."""
from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from common import UserError, printable
from datasets.base import ImageDataset, Sample
from datasets.batch import loader
from datasets.folder import mask_index, match_mask
from models.calibration import Calibration, calibrate, calibrate_f1, conformal_rank, needed_images
from models.semi_ortho import SemiOrthogonal
from pipeline.calibrate import apply
from pipeline.plan import file_digest
from pipeline.predict_images import check_pipeline
from pipeline.shared_pass import score


def check_not_fitted(state: dict, samples: list[Sample], model_path: Path) -> None:
    """Refuses calibration images the model was fitted on (path, size and mtime, as recorded at fit time):
    their scores are lower than a new image's, and the guarantee would not hold."""
    fitted = state.get("fitted")
    fitted = set() if fitted is None else set(fitted.tolist())
    again = [s.image for s in samples if file_digest(s.image) in fitted]
    if again:
        raise UserError(f"{printable(again[0])} is one of the images {model_path} was fitted on ({len(again)} of these "
                        f"{len(samples)}); calibrate on normal images the model has not seen")
    if len(fitted) < int(state["stats"]["n"]):
        print(f"warning: {model_path} records {len(fitted)} of its {int(state['stats']['n'])} fitted images (older "
              "files record none): cannot check that the calibration images were not fitted", file=sys.stderr)


def check_enough(n: int, alpha: float | None) -> None:
    """One line when n images cannot hold alpha: the flag, the images it needs, the alpha they can hold."""
    if alpha is not None and conformal_rank(n, alpha) > n:
        raise UserError(f"--alpha {alpha:g} needs at least {needed_images(alpha)} normal images, --normal has {n}; "
                        f"add images or pass --alpha {float(Fraction(1, n + 1)):.4g} or more")


def defect_samples(images: list[Path], masks: Path) -> list[Sample]:
    """The defective calibration images, each with its mask from `masks` (by stem, with or without _mask)."""
    if not masks.is_dir():
        raise UserError(f"--masks {printable(masks)} is not a folder; pass the folder of the defects' masks")
    index = mask_index(masks)
    samples = [Sample(path, match_mask(path, index), 1, "defect") for path in images]
    missing = [s.image for s in samples if s.mask is None]
    if missing:
        raise UserError(f"--defects {printable(missing[0])} has no mask {printable(masks / missing[0].stem)}"
                        f"[_mask].<ext> in --masks ({len(missing)} without one); add it")
    return samples


def scored(model: SemiOrthogonal, samples: list[Sample], batch_size: int, workers: int):
    """train.py's scoring of its validation images: the same decoding, batches and score maps."""
    c = model.config
    dataset = ImageDataset(samples, c.image_size, c.crop, c.protocol, model.meta.get("dataset", ""))
    dataset.check_masks()
    found = score(model, loader(dataset, batch_size=batch_size, num_workers=workers), len(samples))
    assert found is not None  # samples is not empty
    return found


def recalibrate(model_path: Path, state: dict, normal: list[Sample], defects: list[Sample], alpha: float | None,
                device: torch.device, batch_size: int, workers: int) -> Calibration:
    """Scores the images, sets `state`'s thresholds and calibration; what the calibration found. With
    `defects` (labelled, masked) the rule is f1, else conformal at `alpha` (None: 1 / (n + 1))."""
    model = SemiOrthogonal.load(model_path, device)
    check_pipeline(model, model_path)
    good = scored(model, normal, batch_size, workers)
    if defects:
        bad = scored(model, defects, batch_size, workers)
        found = calibrate_f1(good.maps, good.image_scores, bad.maps, bad.image_scores, bad.masks)
    else:
        found = calibrate(good.maps, good.image_scores, alpha=alpha)
    apply(model, found, normal + defects, "tools/recalibrate.py")
    state["thresholds"] = dict(model.thresholds)
    state["calibration"] = dict(model.calibration)
    return found


def summary_line(found: Calibration, n_defects: int) -> str:
    """What the new thresholds are and what they promise."""
    t = found.thresholds
    values = f"image threshold {t['image']:.6g}, pixel threshold {t['pixel']:.6g}"
    if found.rule == "f1":
        return (f"{values} (F1-optimal on {found.scores.size} normal and {n_defects} defective images: F1 "
                f"{t['image_f1']:.3f} per image, {t['pixel_f1']:.3f} per pixel; no false-alarm guarantee)")
    return (f"{values} (conformal on {found.scores.size} normal images: a new normal image is flagged with "
            f"probability at most {np.float64(found.alpha):.4g})")
