"""Planning a category: its images listed and its model configured before any image is decoded."""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

from common import UserError
from datasets import loader
from datasets.base import ImageDataset, Sample, Splits
from datasets.cache import ImageCache
from datasets.options import DataOptions
from datasets.transforms import check_protocol
from models import Config, config_from_state, read_model_file
from models.backbone import feature_dim
from models.distributed import shard
from models.lowrank import check_feasible
from models.postprocess import feature_size
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


def split_validation(train: list[Sample], protocol: str = "standard") -> tuple[list[Sample], list[Sample]]:
    """Every 10th training image is held out as (normal) validation: index % 10 == 9, or, under --protocol
    paper, index % 10 == 0 as the authors' code does."""
    held = 0 if protocol == "paper" else 9
    return ([s for i, s in enumerate(train) if i % 10 != held], [s for i, s in enumerate(train) if i % 10 == held])


# The authors fit every defect-free KolektorSDD / KSDD2 training part (they hold none out): under paper the
# validation images, which only calibrate the stored thresholds, are fitted too.
PAPER_FITS_ALL = ("kolektor", "kolektor2")


def plan_category(options: RunOptions, data: DataOptions, root: Path | None, category: str, out_dir: Path) -> Plan:
    stored = config_from_state(read_model_file(options.resume)) if options.resume is not None else None
    if stored is not None:  # the loader labels KolektorSDD parts with the stored pipeline and size
        data = replace(data, protocol=data.protocol or stored.protocol, image_size=data.image_size or stored.image_size)
        check_protocol(options.dataset, data.protocol, data.image_size)
    splits = loader(options.dataset).load(root, category, data)
    for note in splits.notes:
        print(f"warning: {note}", file=sys.stderr)
    if splits.val is not None:  # the dataset has its own validation images (MVTec AD 2)
        fit, val = splits.train, splits.val
    else:
        fit, val = split_validation(splits.train, data.protocol)
        if data.protocol == "paper" and options.dataset in PAPER_FITS_ALL:
            fit = list(splits.train)
    if not fit:
        raise UserError(f"no training images for {options.dataset}/{category}")
    image_size = options.image_size or splits.image_size
    eps = splits.eps if options.eps is None else options.eps
    if options.resume is None:
        config = Config(backbone=options.backbone, k=options.k, approx=options.approx, seed=options.seed,
                        image_size=image_size, crop=options.crop, eps=eps, unbiased=options.unbiased,
                        backbone_dtype=options.backbone_dtype, protocol=data.protocol, layers=options.layers,
                        pre_relu=options.pre_relu)
        check_feasible(config.approx, feature_dim(config.backbone, config.layers), config.k,
                       feature_size(config.input_size))
        if config.crop and (config.crop[0] > image_size[0] or config.crop[1] > image_size[1]):
            raise UserError(f"--crop {config.crop} is larger than --image-size {image_size}")
        return Plan(category, out_dir, splits, fit, val, config, options.dataset)
    check_resume(options, stored, data.protocol)
    # eps and n versus n - 1 are not part of the sums: they may change
    return Plan(category, out_dir, splits, fit, val, replace(stored, eps=eps, unbiased=options.unbiased),
                options.dataset)


def check_resume(options: RunOptions, stored: Config, protocol: str | None = None) -> None:
    """Refuses flags that differ from what the --resume file's sums were fitted with."""
    requested = {"--protocol": (protocol, stored.protocol),
                 "--model": (options.backbone, stored.backbone), "--k": (options.k, stored.k),
                 "--approx": (options.approx, stored.approx), "--seed": (options.seed, stored.seed),
                 "--image-size": (options.image_size, stored.image_size), "--crop": (options.crop, stored.crop),
                 "--backbone-dtype": (options.backbone_dtype, stored.backbone_dtype),
                 "--layers": (options.layers, stored.layers), "--pre-relu": (options.pre_relu, stored.pre_relu)}
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
