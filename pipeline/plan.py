"""Planning a category: its images listed and its model configured before any image is decoded."""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

from common import UserError
from datasets import loader
from datasets.base import ImageDataset, Sample, Splits
from datasets.options import DataOptions
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


def split_validation(train: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """Every 10th training image is held out as (normal) validation, as the paper does."""
    return ([s for i, s in enumerate(train) if i % 10 != 9], [s for i, s in enumerate(train) if i % 10 == 9])


def plan_category(options: RunOptions, data: DataOptions, root: Path | None, category: str, out_dir: Path) -> Plan:
    splits = loader(options.dataset).load(root, category, data)
    for note in splits.notes:
        print(f"warning: {note}", file=sys.stderr)
    fit, val = split_validation(splits.train)
    if not fit:
        raise UserError(f"no training images for {options.dataset}/{category}")
    image_size = options.image_size or splits.image_size
    eps = splits.eps if options.eps is None else options.eps
    if options.resume is None:
        config = Config(backbone=options.backbone, k=options.k, approx=options.approx, seed=options.seed,
                        image_size=image_size, crop=options.crop, eps=eps, unbiased=options.unbiased,
                        backbone_dtype=options.backbone_dtype, layers=options.layers, pre_relu=options.pre_relu)
        check_feasible(config.approx, feature_dim(config.backbone, config.layers), config.k,
                       feature_size(config.input_size))
        if config.crop and (config.crop[0] > image_size[0] or config.crop[1] > image_size[1]):
            raise UserError(f"--crop {config.crop} is larger than --image-size {image_size}")
        return Plan(category, out_dir, splits, fit, val, config)
    stored = config_from_state(read_model_file(options.resume))
    check_resume(options, stored)
    # eps and n versus n - 1 are not part of the sums: they may change
    return Plan(category, out_dir, splits, fit, val, replace(stored, eps=eps, unbiased=options.unbiased))


def check_resume(options: RunOptions, stored: Config) -> None:
    """Refuses flags that differ from what the --resume file's sums were fitted with."""
    requested = {"--model": (options.backbone, stored.backbone), "--k": (options.k, stored.k),
                 "--approx": (options.approx, stored.approx), "--seed": (options.seed, stored.seed),
                 "--image-size": (options.image_size, stored.image_size), "--crop": (options.crop, stored.crop),
                 "--backbone-dtype": (options.backbone_dtype, stored.backbone_dtype),
                 "--layers": (options.layers, stored.layers), "--pre-relu": (options.pre_relu, stored.pre_relu)}
    for flag, (asked, have) in requested.items():
        if asked is not None and asked != have:
            raise UserError(f"--resume {options.resume} was fitted with {flag} {have}, not {asked}; "
                            f"fit a new model or pass {flag} {have}")


def segments_of(plan: Plan, rank: int, world: int) -> list[ImageDataset]:
    """What this rank decodes for a category: its shard of the fit images; rank 0 also validation and test."""
    parts = [shard(plan.fit, rank, world)] + ([plan.val, plan.splits.test] if rank == 0 else [])
    return [ImageDataset(part, plan.config.image_size, plan.config.crop) for part in parts]
