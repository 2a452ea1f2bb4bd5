"""Planning a category: its images listed and its model configured before any image is decoded."""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

import torch

from common import UserError
from datasets import spec
from datasets.base import ImageDataset, Sample, Splits
from datasets.cache import ImageCache
from datasets.options import DataOptions
from datasets.readers import image_size_of
from datasets.transforms import check_protocol
from models import Config, config_from_state, read_model_file
from models.backbone import feature_dim, feature_size, is_reference
from models.distributed import shard
from models.lowrank import check_feasible
from models.tiles import check_tiling
from pipeline.options import RunOptions


@dataclass
class Plan:
    """One category, listed and configured before any image is decoded."""
    category: str
    out_dir: Path
    splits: Splits
    fit: list[Sample]
    val: list[Sample]
    config: Config
    dataset: str = ""  # whose paper pipeline decodes the images under --protocol paper
    meta: dict = field(default_factory=dict)  # what the model is of (the --resume file's): model.meta
    fitted: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))  # model.fitted
    estimate: dict[str, int] | None = None  # pipeline/estimate.py's prediction, stored in metrics.json
    provenance: dict = field(default_factory=dict)  # pipeline/provenance.py: metrics.json's and model.pt's
    block_rows: int | None = None  # fit in blocks of this many feature-map rows (pipeline/blocked.py); None: at once
    variant: str = ""  # a grid's variant (pipeline/grid.py): its folder name below the category's; "": the only one

    @property
    def name(self) -> str:
        """How lines and the estimate name it: the category, and its variant in a grid."""
        return f"{self.category} {self.variant}" if self.variant else self.category


def split_validation(train: list[Sample], protocol: str | None = "standard") -> tuple[list[Sample], list[Sample]]:
    """Every 10th training image is held out as (normal) validation: index % 10 == 9, or, under --protocol
    paper, index % 10 == 0 as the authors' code does."""
    held = 0 if protocol == "paper" else 9
    return ([s for i, s in enumerate(train) if i % 10 != held], [s for i, s in enumerate(train) if i % 10 == held])


def plan_category(options: RunOptions, data: DataOptions, root: Path | None, category: str, out_dir: Path) -> Plan:
    state = read_model_file(options.resume, mmap=True) if options.resume is not None else None
    stored = config_from_state(state, cast(Path, options.resume)) if state is not None else None  # read from it
    pipeline = options.dataset
    if stored is not None:  # the loader labels KolektorSDD parts with the stored pipeline and size
        assert state is not None  # stored was read from it
        data = replace(data, protocol=data.protocol or stored.protocol, image_size=data.image_size or stored.image_size)
        if data.protocol == "paper":  # new images decoded as the fitted ones were, whatever their layout
            pipeline = (state.get("meta") or {}).get("dataset", options.dataset)
        check_protocol(pipeline, cast(str, data.protocol), data.image_size)  # or stored.protocol, a str
    dataset = spec(options.dataset)
    splits = dataset.load(root, category, data)
    for note in splits.notes:
        print(f"warning: {note}", file=sys.stderr)
    if splits.val is not None:  # the dataset has its own validation images (MVTec AD 2)
        fit, val = splits.train, splits.val
    else:
        fit, val = split_validation(splits.train, data.protocol)
        if data.protocol == "paper" and dataset.paper_fits_all:  # the authors hold none out (KolektorSDD):
            fit = list(splits.train)  # the validation images, which only calibrate the thresholds, are fitted too
    if not fit:
        raise UserError(f"no training images for {options.dataset}/{category}")
    # native: read from the first training image's header; images of another size are resized to it
    image_size = image_size_of(fit[0].image) if options.native_size else options.image_size or splits.image_size
    eps = splits.eps if options.eps is None else options.eps
    if options.resume is None:
        # train.py resolves each setting of a new fit (defaults(), the backbone's k); only --resume leaves them None
        assert (options.backbone is not None and options.k is not None and options.approx is not None
                and options.seed is not None and options.backbone_dtype is not None and data.protocol is not None
                and options.layers is not None and options.pre_relu is not None)
        config = Config(backbone=options.backbone, k=options.k, approx=options.approx, seed=options.seed,
                        image_size=image_size, crop=options.crop, eps=eps, unbiased=options.unbiased,
                        backbone_dtype=options.backbone_dtype, protocol=data.protocol, layers=options.layers,
                        pre_relu=options.pre_relu, tile=options.tile, tile_stride=options.tile_stride)
        if config.crop and (config.crop[0] > image_size[0] or config.crop[1] > image_size[1]):
            raise UserError(f"--crop {config.crop} is larger than --image-size {image_size}")
        check_tiling(config)  # against the input size: the crop's, or the image size
        check_feasible(config.approx, feature_dim(config.backbone, config.layers), config.k,
                       feature_size(config.model_size, config.backbone))
        meta = {"dataset": options.dataset, "category": category, "weights": options.weights}
        return Plan(category, out_dir, splits, fit, val, config, options.dataset, meta, file_digests(fit))
    assert state is not None and stored is not None  # --resume: both read above
    check_resume(options, stored, data.protocol)
    meta = resumed_meta(options, state, category)
    fitted = new_images(options.resume, state, fit)
    # eps and n versus n - 1 are not part of the sums: they may change
    return Plan(category, out_dir, splits, fit, val, replace(stored, eps=eps, unbiased=options.unbiased),
                pipeline, meta, fitted)


def resumed_meta(options: RunOptions, state: dict, category: str) -> dict:
    """The --resume file's meta, kept (merges compare it): refuses another category's model, and names
    the weights its stored backbone has (files older than that record: imagenet if named by digest)."""
    meta = dict(state.get("meta") or {})
    if meta.get("category", category) != category:
        raise UserError(f"--resume {options.resume} is a model of {meta.get('dataset', '?')} category "
                        f"{meta['category']}, not {category}; pass --category {meta['category']} or fit a new model")
    meta.setdefault("dataset", options.dataset)
    meta.setdefault("category", category)
    meta.setdefault("weights", "imagenet" if is_reference(state["backbone"]) else "stored in the model file")
    if options.weights is not None and options.weights != meta["weights"]:
        raise UserError(f"--resume {options.resume} goes on with its stored backbone (weights {meta['weights']}), "
                        f"not --weights {options.weights}; drop --weights")
    return meta


def file_digests(samples: list[Sample]) -> torch.Tensor:
    """One int64 per image file, sorted: 8 bytes of blake2b over its absolute path, size and mtime (40 kB
    for 5,000 images). A file that is moved, rewritten or touched counts as another image."""
    return torch.tensor(sorted(file_digest(s.image) for s in samples), dtype=torch.int64)


def file_digest(image: Path) -> int:
    try:
        info = os.stat(image)
    except OSError as e:
        raise UserError(f"cannot read training image {image} ({e.strerror})") from None
    key = f"{os.path.abspath(image)}\0{info.st_size}\0{info.st_mtime_ns}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little", signed=True)


def new_images(path: Path, state: dict, fit: list[Sample]) -> torch.Tensor:
    """The digests of the --resume file's images and this run's, refusing images its sums already hold."""
    stored, new = state.get("fitted"), file_digests(fit)
    stored = torch.empty(0, dtype=torch.int64) if stored is None else stored.clone()
    again = torch.isin(new, stored)
    if again.any():
        known = set(stored.tolist())
        first = next(s.image for s in fit if file_digest(s.image) in known)
        raise UserError(f"--resume {path} already holds {int(again.sum())} of these {len(fit)} training images "
                        f"(e.g. {first}); they would count twice: point it at the new images only")
    n = int(state["stats"]["n"])
    if len(stored) < n:
        print(f"warning: --resume {path} records {len(stored)} of its {n} fitted images (older files record "
              "none): cannot check that this run's images are new", file=sys.stderr)
    return torch.cat([stored, new]).sort().values


def check_resume(options: RunOptions, stored: Config, protocol: str | None = None) -> None:
    """Refuses flags that differ from what the --resume file's sums were fitted with."""
    requested = {"--protocol": (protocol, stored.protocol),
                 "--model": (options.backbone, stored.backbone), "--k": (options.k, stored.k),
                 "--approx": (options.approx, stored.approx), "--seed": (options.seed, stored.seed),
                 "--image-size": (options.image_size, stored.image_size), "--crop": (options.crop, stored.crop),
                 "--backbone-dtype": (options.backbone_dtype, stored.backbone_dtype),
                 "--layers": (options.layers, stored.layers), "--pre-relu": (options.pre_relu, stored.pre_relu),
                 "--tile": (options.tile, stored.tile), "--tile-stride": (options.tile_stride, stored.tile_stride)}
    if options.tile is not None and stored.tile is None:  # its sums are of whole images
        raise UserError(f"--resume {options.resume} is a model of whole images, not of tiles; drop --tile or fit a "
                        "new model")
    for flag, (asked, have) in requested.items():
        if asked is not None and asked != have:
            raise UserError(f"--resume {options.resume} was fitted with {flag} {have}, not {asked}; "
                            f"fit a new model or pass {flag} {have}")


def segments_of(plan: Plan, rank: int, world: int, cache: ImageCache | None = None) -> list[ImageDataset]:
    """What this rank decodes for a category: its shard of the fit images; rank 0 also validation and test."""
    parts = [shard(plan.fit, rank, world)] + ([plan.val, plan.splits.test] if rank == 0 else [])
    segments = [ImageDataset(part, plan.config.image_size, plan.config.crop, plan.config.protocol, plan.dataset,
                             cache) for part in parts]
    for segment in segments:
        segment.check_masks()  # before the fit: a mask the paper rule would empty is refused, not dropped
    return segments
