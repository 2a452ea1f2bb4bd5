"""Fit, save, load and score from Python, without the command line: a thin layer over what train.py and
predict.py run, so a model fitted here scores as theirs do and its file is theirs.

    import api
    model = api.fit(train_paths, val_images=val_paths)   # train.py's defaults: WRN-50-2, ImageNet, 256 x 256
    model.save("model.pt")                               # the file train.py writes; predict.py reads it
    result = api.load("model.pt").predict("new.png")     # score map at the image's size, score, mask

Images are decoded as train.py and predict.py decode them under `--protocol standard` (datasets/base.py):
RGB, one bilinear resize to `image_size`, an optional centre crop, ImageNet normalisation. Bad input
(a missing or unreadable image, a bad setting) raises common.UserError with one line naming it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import UserError
from datasets.base import ImageDataset, Sample, read_image
from datasets.batch import loader
from models import Config, SemiOrthogonal, default_k, feature_dim
from models.backbone import ALL_LAYERS, BACKBONES, build_extractor, check_layers, feature_size
from models.embedding import APPROXIMATIONS
from models.lowrank import check_feasible
from pipeline.calibrate import calibrate_validation
from pipeline.options import FLOAT_RANGES, RunOptions, seed_value
from pipeline.plan import file_digests
from pipeline.predict_images import check_pipeline, to_original_size
from pipeline.shared_pass import score

ImageSource = str | Path | Image.Image


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value to compare by
class Prediction:
    """One image's result, at the image's original size, exactly as predict.py computes it.

    `is_anomalous` and `mask` are None for a model without thresholds (fitted without validation images,
    or merged): there is nothing honest to compare the scores with."""
    score_map: np.ndarray  # float32 (H, W): Mahalanobis distances, 0 outside what the model saw (a crop)
    image_score: float  # the maximum of the map at the model's input size
    is_anomalous: bool | None  # image_score above the calibrated image threshold
    mask: np.ndarray | None  # bool (H, W): pixels scoring above the calibrated pixel threshold


class Model:
    """A fitted semi-orthogonal model (models.SemiOrthogonal, kept as `.core`) with its thresholds."""

    def __init__(self, core: SemiOrthogonal):
        self.core = core

    @property
    def config(self) -> Config:
        return self.core.config

    @property
    def thresholds(self) -> dict[str, float]:
        """models.calibrate's "image" and "pixel" thresholds and summary; {} when not calibrated."""
        return self.core.thresholds

    def save(self, path: str | Path, embed_backbone: bool = False) -> None:
        """Writes model.pt as train.py does (models/model_file.py), atomically: predict.py, tools/export.py,
        `train.py --resume` and tools/merge_stats.py read it. ImageNet weights are named by digest unless
        embed_backbone."""
        self.core.save(path, embed_backbone)

    def predict(self, image: ImageSource) -> Prediction:
        """Scores one image file (or a PIL image, decoded as its file would be) with predict.py's
        decoding, scoring and mapping back to the original size, and the model's calibrated thresholds."""
        c, dataset = self.config, self.core.meta.get("dataset", "")
        # an ImageDataset of one: the decoding train.py fitted with, and the one predict.py scores with
        pixels = ImageDataset([Sample(image)], c.image_size, c.crop, c.protocol, dataset)[0].image
        maps, scores = self.core.predict(pixels[None])
        original = read_image(image)
        score_map = to_original_size(maps[0].float().cpu().numpy(), self.core, (original.height, original.width))
        image_score = float(scores[0])
        pixel, image_threshold = self.thresholds.get("pixel"), self.thresholds.get("image")
        return Prediction(score_map=score_map, image_score=image_score,
                          is_anomalous=None if image_threshold is None else image_score > image_threshold,
                          mask=None if pixel is None else score_map > pixel)


def fit(train_images: Sequence[str | Path], *, backbone: str = RunOptions.backbone, k: int | None = None,
        weights: str = RunOptions.weights, approx: str = Config.approx,
        image_size: int | tuple[int, int] = Config.image_size, crop: int | tuple[int, int] | None = Config.crop,
        eps: float = Config.eps, unbiased: bool = Config.unbiased, seed: int = Config.seed,
        layers: tuple[int, ...] = ALL_LAYERS, val_images: Sequence[str | Path] | None = None,
        alpha: float | None = RunOptions.alpha, val_fpr: float | None = RunOptions.val_fpr,
        device: str | torch.device = "cpu", batch_size: int = 8, workers: int = 0) -> Model:
    """Fits a model on defect-free images, as train.py fits one (same defaults and `--protocol standard`
    decoding), streaming `batch_size` images at a time: memory does not grow with the number of images.

    Thresholds: with `val_images` (defect-free, not among the training images) they are calibrated as
    train.py calibrates on its held-out images: a new normal image is flagged with probability at most
    `alpha` (default 1 / (n + 1)), or with `val_fpr` the former rule (models/calibration.py). Without them the
    model has none: predict() then gives scores but no is_anomalous or mask, and predict.py needs
    --threshold and --image-threshold. train.py holds out every 10th image: `val_images=paths[9::10]`
    with the others as `train_images` does the same. `k` None: train.py's default (300 for WRN-50-2,
    else 100; F for --approx full / global). `weights`: imagenet, random, or a state-dict file.
    """
    train, val = _paths(train_images, "train_images"), _paths(val_images or [], "val_images")
    if not train:
        raise UserError("train_images is empty; pass at least one defect-free image path")
    config = _config(backbone, k, approx, _pair(image_size, "image_size"), _pair(crop, "crop"), eps, unbiased,
                     seed, layers)
    for name, value in (("alpha", alpha), ("val_fpr", val_fpr)):
        if value is not None:
            _check_range(name, value)
    if alpha is not None and val_fpr is not None:
        raise UserError("alpha and val_fpr are two rules for the same thresholds; pass one")
    if batch_size < 1 or workers < 0:
        raise UserError(f"batch_size {batch_size} must be at least 1 and workers {workers} at least 0")
    fitted = file_digests([Sample(p) for p in train])  # also: a missing training image, named, before any decoding
    try:
        extractor = build_extractor(config.backbone, weights, config.seed, config.layers, config.pre_relu)
    except UserError as e:  # the model speaks of weights; here the argument is `weights`
        raise UserError(f"weights={weights!r}: {e}") from None
    core = SemiOrthogonal(config, extractor=extractor).to(_device(device))
    # a plain folder of images, as train.py --dataset folder records it: --resume and merges read meta
    core.meta, core.fitted = {"dataset": "folder", "weights": weights}, fitted
    core.fit(batch.image for batch in _batches(train, config, batch_size, workers))
    core.finalize()  # the sums stay: save() writes them
    if val:
        validation = score(core, _batches(val, config, batch_size, workers), len(val))
        calibrate_validation(core, validation.maps, validation.image_scores, [Sample(p) for p in val], alpha, val_fpr,
                             "val_images")
    return Model(core)


def load(path: str | Path, device: str | torch.device = "cpu") -> Model:
    """A model.pt written by train.py or Model.save(), on `device`; a missing or damaged file is a UserError."""
    core = SemiOrthogonal.load(path, _device(device))
    check_pipeline(core, path)
    return Model(core)


def _device(device: str | torch.device) -> torch.device:
    found = torch.device(device)
    if found.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device}: no CUDA device is available; pass device='cpu'")
    return found


def _check_range(name: str, value: float) -> None:
    """train.py's range of the flag of the same name (pipeline/options.py), finite as there."""
    allowed, inside = FLOAT_RANGES[name]
    if not (math.isfinite(value) and inside(value)):
        raise UserError(f"{name} {value} must be {allowed}")


def _batches(paths: list[Path], config: Config, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    """Batches decoded one at a time (train.py's ImageDataset, standard protocol), never all at once."""
    dataset = ImageDataset([Sample(p) for p in paths], config.image_size, config.crop, config.protocol)
    return loader(dataset, batch_size=batch_size, num_workers=workers)


def _paths(images: Sequence[str | Path], name: str) -> list[Path]:
    """A list of paths; one path given alone (a str is a sequence of characters) is refused, not split."""
    if isinstance(images, (str, Path)):
        raise UserError(f"{name} {images}: pass a list of image paths, e.g. sorted(Path(folder).glob('*.png'))")
    return [Path(p) for p in images]


def _pair(size: int | tuple[int, int] | None, name: str) -> tuple[int, int] | None:
    """S or (H, W) -> (H, W), as train.py's --image-size S / H W."""
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise UserError(f"{name} {size}: pass a positive integer or (height, width)")
    return pair


def _config(backbone: str, k: int | None, approx: str, image_size: tuple[int, int],
            crop: tuple[int, int] | None, eps: float, unbiased: bool, seed: int, layers: tuple[int, ...]) -> Config:
    """The Config train.py would build from the same flags, refused as train.py refuses them."""
    if backbone not in BACKBONES:
        raise UserError(f"backbone {backbone!r} is not one of {', '.join(BACKBONES)}")
    if approx not in APPROXIMATIONS:
        raise UserError(f"approx {approx!r} is not one of {', '.join(APPROXIMATIONS)}")
    layers = check_layers(backbone, tuple(layers))
    F = feature_dim(backbone, layers)
    if k is not None and approx not in ("full", "global") and not 1 <= k <= F:
        raise UserError(f"k {k} must be between 1 and F = {F} for {backbone}")
    k = F if approx in ("full", "global") else min(F, k or default_k(backbone))
    _check_range("eps", eps)
    if crop and (crop[0] > image_size[0] or crop[1] > image_size[1]):
        raise UserError(f"crop {crop} is larger than image_size {image_size}")
    config = Config(backbone=backbone, k=k, approx=approx, seed=seed_value(seed), image_size=image_size, crop=crop,
                    eps=eps, unbiased=unbiased, layers=layers)
    check_feasible(config.approx, F, config.k, feature_size(config.model_size, config.backbone))
    return config
