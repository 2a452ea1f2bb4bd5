"""predict.py's (and tools/recalibrate.py's) side of the images: listing --input, decoding them as the
model was fitted (an unreadable file reported, not fatal), the model's checks before decoding, and a
score map put back at the image's original size."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import UserError, printable
from datasets.base import IMAGE_SUFFIXES, ImageDataset, center_crop_box
from datasets.batch import Item
from datasets.listing import glob_files
from datasets.transforms import covered_box, pipeline_of
from models import SemiOrthogonal
from models.blocks import BlockedStats
from pipeline.estimate import (
    block_rows,
    blocked_estimate,
    check_room,
    default_budget,
    embedding_bytes,
    resident_bytes,
    shown,
)
from pipeline.predict_files import in_out_folder


def find_images(spec: str, out: Path | None = None, flag: str = "--input") -> list[Path]:
    """The images of `flag` (a file, a folder searched recursively or a glob), none from --out (a run's own
    heat maps are not inputs of the next)."""
    path = Path(spec)
    if out is not None and in_out_folder(Path(os.path.realpath(path)), Path(os.path.realpath(out))):
        raise UserError(f"{flag} {printable(spec)} is inside --out {printable(out)}, which the run replaces; "
                        "pass an --out outside the inputs")
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.is_file():
        found = [path]
    else:
        found = glob_files(spec)  # glob.glob's matches, without looping through a link to a parent folder
    if out is not None:
        real_out = Path(os.path.realpath(out))
        found = [p for p in found if not in_out_folder(Path(os.path.realpath(p)), real_out)]
    if not found:
        raise UserError(f"{flag} {printable(spec)}: no image files found")
    return found


class PredictDataset(ImageDataset):
    """ImageDataset that reports an unreadable file instead of stopping the run."""

    def __getitem__(self, index: int) -> Item:
        try:
            item = super().__getitem__(index)
        except UserError as error:
            item = Item(image=torch.zeros(3, *self.output_size), mask=torch.zeros(self.output_size, dtype=torch.uint8),
                        label=0, index=index, error=str(error))
        return item


def to_original_size(score_map: np.ndarray, model: SemiOrthogonal, size: tuple[int, int]) -> np.ndarray:
    """Maps an input-size score map back onto the original (H, W); outside a centre crop (and, under the
    paper's MVTec AD pipeline, outside the centre square of a non-square image) scores are 0."""
    config = model.config
    top, left, h, w = center_crop_box(config.image_size, config.crop)
    full = np.zeros(config.image_size, dtype=np.float32)
    full[top:top + h, left:left + w] = score_map
    top, left, h, w = covered_box(model.meta.get("dataset", ""), config.protocol, size)
    resized = F.interpolate(torch.from_numpy(full)[None, None], size=(h, w), mode="bilinear", align_corners=False)
    original = np.zeros(size, dtype=np.float32)
    original[top:top + h, left:left + w] = resized[0, 0].numpy()
    return original


def rows_per_block(model: SemiOrthogonal, images: int, model_path: str, out: Path, max_memory: int | None,
                   batch_size: int, workers: int) -> int | None:
    """A model fitted in blocks: the most feature-map rows per block that fit `max_memory`; None otherwise."""
    if not isinstance(getattr(model, "stats", None), BlockedStats):  # an ONNX model has none
        return None
    budget = max_memory if max_memory is not None else default_budget()
    baseline = resident_bytes()
    rows = block_rows(model.config, budget, lambda r: blocked_estimate(model.config, r, 0, images, batch_size,
                                                                       workers, False, baseline))
    if rows is None:
        raise UserError(f"{model_path} needs more than {shown(budget)} even in blocks of one feature-map row; "
                        "raise --max-memory or lower --batch-size")
    check_room(out, embedding_bytes(model.config, images), "scoring", "embeddings", "--out")
    return rows


def check_pipeline(model: SemiOrthogonal, path: str | Path) -> None:
    """A --protocol paper model decodes new images by its dataset's pipeline: without one it cannot score."""
    dataset_name = model.meta.get("dataset", "")
    if model.config.protocol == "paper" and pipeline_of(dataset_name) is None:
        raise UserError(f"{path} was fitted with --protocol paper but names no paper dataset "
                        f"({dataset_name or 'none'}); refit it with train.py")
