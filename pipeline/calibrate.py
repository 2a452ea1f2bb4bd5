"""A model's thresholds set from scored normal calibration images, and the record of that calibration
stored in the model file: the one code train.py (its validation images) and tools/recalibrate.py run.

The record (model.calibration) holds the rule, alpha and rank r (or val_fpr), n, the n calibration image scores
and map maxima (p-values and recalibrations need them, n floats each), when, by what, and a digest of
the calibration image files (pipeline/provenance.files_digest: paths, sizes, mtimes)."""
from __future__ import annotations

import sys
from datetime import datetime, timezone

import numpy as np
import torch

from datasets.samples import Sample
from models.calibration import Calibration, calibrate
from models.semi_ortho import SemiOrthogonal
from pipeline.provenance import files_digest


def record(found: Calibration, samples: list[Sample], source: str) -> dict:
    """model.calibration for a calibration on `samples` (the normal images and, for f1, the defective ones)."""
    return {"rule": found.rule, "alpha": found.alpha, "rank": found.rank, "val_fpr": found.val_fpr,
            "n": int(found.scores.size),
            "scores": torch.from_numpy(np.asarray(found.scores, dtype=np.float64)),
            "maxima": torch.from_numpy(np.asarray(found.maxima, dtype=np.float64)),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "source": source,
            "files": files_digest(samples), "finite": found.finite, "n_needed": found.needed,
            "n_defects": int(found.thresholds.get("n_defects", 0))}


def apply(model: SemiOrthogonal, found: Calibration | None, samples: list[Sample], source: str) -> dict[str, float]:
    """Sets model.thresholds and model.calibration (both empty without calibration images); the thresholds."""
    model.thresholds = dict(found.thresholds) if found is not None else {}
    model.calibration = record(found, samples, source) if found is not None else {}
    return model.thresholds


def calibrate_validation(model: SemiOrthogonal, maps: np.ndarray, scores: np.ndarray, samples: list[Sample],
                         alpha: float | None, val_fpr: float | None, category: str) -> dict[str, float]:
    """train.py's calibration on a category's validation images: the thresholds, after a warning when
    alpha needs more images than there are (then no threshold is stored: none would hold alpha)."""
    found = calibrate(maps, scores, alpha=alpha, val_fpr=val_fpr)
    if not found.finite:
        print(f"warning: {category}: {found.scores.size} validation images cannot hold --alpha {found.alpha:g} "
              f"(it needs {found.needed}): no thresholds stored; calibrate on more normal images with "
              "tools/recalibrate.py, or pass a larger --alpha", file=sys.stderr)
    return apply(model, found, samples, "train.py")


def calibration_scores(model: object) -> np.ndarray | None:
    """The model's calibration image scores (float64), or None for a model without them (files written
    before calibrations were recorded, merged models, fits without validation images)."""
    calibration = getattr(model, "calibration", None) or {}
    scores = calibration.get("scores")
    if scores is None:
        return None
    return np.asarray(scores.cpu().numpy() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
