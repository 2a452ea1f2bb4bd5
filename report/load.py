"""Which category folders the command line selects, and one category's saved results, checked."""
from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common import UserError, one_line
from results import METRICS_FILE, MODEL_FILE, SCORES_FILE, read_metrics, read_scores

if TYPE_CHECKING:
    from .regions import Box


@dataclass
class Category:
    dataset: str
    name: str
    folder: Path
    info: dict[str, Any]  # metrics.json
    maps: np.ndarray  # float16 (N, H, W), as saved: converted to float32 where computed with
    masks: np.ndarray  # bool (N, H, W)
    labels: np.ndarray  # int (N,)
    image_scores: np.ndarray  # float (N,)
    defects: np.ndarray  # str (N,)
    paths: np.ndarray  # str (N,)
    # what to draw, set by render.prepare once the command line's choices are known
    threshold: float = 0.0
    threshold_source: str = ""
    vmin: float = 0.0
    vmax: float = 1.0
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    zooms: dict[int, list[Box]] = field(default_factory=dict)  # test image index: its zoomed crops, if any

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.info["image_size"]
        return int(h), int(w)

    @property
    def crop(self) -> tuple[int, int] | None:
        crop = self.info.get("crop")
        return None if crop is None else (int(crop[0]), int(crop[1]))

    @property
    def fpr_limit(self) -> float:
        return float(self.info["fpr_limit"])

    @property
    def image_threshold(self) -> float | None:
        value = (self.info.get("thresholds") or {}).get("image")
        return None if value is None else float(value)


def load_category(folder: Path, dataset: str, name: str) -> Category:
    """Read and check one category folder; every problem is a UserError naming the file."""
    scores_path, metrics_path = folder / SCORES_FILE, folder / METRICS_FILE
    if not scores_path.exists() and metrics_path.is_file() and read_metrics(metrics_path).get("n_test") == 0:
        raise UserError(f"{folder} has no test images (fitted and calibrated only, e.g. --dataset folder without "
                        "--abnormal-dir): nothing to report")
    for path in (scores_path, metrics_path):
        if not path.is_file():
            raise UserError(f"{path} is missing: {folder} is not a finished train.py category "
                            "(train it again, or pick another with --category)")
    info = read_metrics(metrics_path)
    for key in ("image_size", "fpr_limit"):
        if key not in info:
            raise UserError(f"{metrics_path} has no {key!r}: not written by train.py?")
    try:
        scores = read_scores(scores_path)
    except (EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:  # a truncated npz, beyond OSError/ValueError
        raise UserError(f"{scores_path} is corrupt ({one_line(e)}); re-run train.py for {name}") from None
    # Files train.py writes always hold both; without them the image rows could not be labelled.
    missing = [key for key in ("defects", "paths") if getattr(scores, key) is None]
    if missing:
        raise UserError(f"{scores_path} lacks {', '.join(missing)}: not written by train.py?")

    maps, masks = scores.maps, scores.masks
    if maps.ndim != 3 or masks.shape != maps.shape:
        raise UserError(f"{scores_path}: maps {maps.shape} and masks {masks.shape} must both be (N, H, W)")
    n = maps.shape[0]
    if n == 0:
        raise UserError(f"{scores_path} holds no test images")
    for key in ("labels", "image_scores", "defects", "paths"):
        shape = getattr(scores, key).shape
        if shape != (n,):
            raise UserError(f"{scores_path}: {key} has shape {shape}, expected ({n},)")
    try:
        image_size = tuple(int(v) for v in info["image_size"])
        crop = info.get("crop")
        crop = None if crop is None else tuple(int(v) for v in crop)
        float(info["fpr_limit"])
        if len(image_size) != 2 or (crop is not None and len(crop) != 2):
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"{metrics_path}: image_size, crop or fpr_limit is malformed") from None
    if (crop or image_size) != maps.shape[1:]:
        raise UserError(f"{folder}: maps are {maps.shape[1]}x{maps.shape[2]} but {METRICS_FILE} says "
                        f"image_size {list(image_size)}, crop {crop and list(crop)}; "
                        f"{SCORES_FILE} and {METRICS_FILE} come from different runs")
    return Category(
        dataset=dataset, name=name, folder=folder, info=info,
        maps=maps.astype(np.float16, copy=False), masks=masks > 0, labels=scores.labels.astype(int),
        image_scores=scores.image_scores.astype(np.float64),
        defects=scores.defects.astype(str), paths=scores.paths.astype(str),
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _looks_like_category(folder: Path) -> bool:
    return any((folder / f).exists() for f in (SCORES_FILE, METRICS_FILE, MODEL_FILE))


def resolve(ckpt: Path, dataset: str | None, category: str) -> tuple[str, list[tuple[str, Path]]]:
    """(dataset, [(category, folder), ...]) selected by the command line."""
    if not ckpt.is_dir():
        raise UserError(f"--ckpt folder {ckpt} does not exist")
    if _looks_like_category(ckpt):
        raise UserError(f"--ckpt {ckpt} is a category folder; pass the experiment folder "
                        f"(--ckpt {ckpt.parent.parent} --dataset {ckpt.parent.name} --category {ckpt.name})")
    if any(_looks_like_category(c) for c in _subfolders(ckpt)):
        raise UserError(f"--ckpt {ckpt} is a dataset folder; pass the experiment folder "
                        f"(--ckpt {ckpt.parent} --dataset {ckpt.name})")
    if dataset is None:
        candidates = _subfolders(ckpt)
        with_results = [d for d in candidates if any(_looks_like_category(c) for c in _subfolders(d))]
        candidates = with_results or candidates
        if not candidates:
            raise UserError(f"--ckpt {ckpt} holds no <dataset>/<category>/ folders: nothing trained there yet")
        if len(candidates) > 1:
            raise UserError(f"--ckpt {ckpt} holds several datasets ({', '.join(d.name for d in candidates)}); "
                            "choose one with --dataset")
        dataset = candidates[0].name
    dataset_dir = ckpt / dataset
    if not dataset_dir.is_dir():
        found = ", ".join(d.name for d in _subfolders(ckpt)) or "none"
        raise UserError(f"no dataset folder {dataset_dir} (found: {found})")
    if category == "all":
        folders = [c for c in _subfolders(dataset_dir) if _looks_like_category(c)]
        if not folders:
            raise UserError(f"no category folders with results in {dataset_dir}")
        return dataset, [(c.name, c) for c in folders]
    folder = dataset_dir / category
    if not folder.is_dir():
        found = ", ".join(c.name for c in _subfolders(dataset_dir)) or "none"
        raise UserError(f"no category folder {folder} (found: {found})")
    return dataset, [(category, folder)]
