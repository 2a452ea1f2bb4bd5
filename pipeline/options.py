"""The settings of one train.py run, typed: what the pipeline reads instead of the argparse namespace, and
the checks of their values that need no image (ranges, output names).

RunOptions' defaults are the command line's: train.py's flags default to None and `defaults()` fills what
the user left out from here (the model's settings from models/config.py), so each default is written once."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import UserError
from datasets.options import DataOptions
from metrics.bootstrap import Bootstrap
from models.config import Approx, Config
from pipeline import outputs


@dataclass(frozen=True)
class RunOptions:
    """Resolved settings. With `resume`, a None backbone/k/approx/seed/size means "as stored in the file"."""
    dataset: str
    report: Path
    backbone: str | None = Config.backbone
    weights: str = "imagenet"
    approx: Approx | None = Config.approx
    k: int | None = None  # None: the backbone's row's k (models/backbone.py), F for full and global
    eps: float | None = None  # None: the dataset's protocol value
    unbiased: bool = Config.unbiased
    seed: int | None = Config.seed
    image_size: tuple[int, int] | None = None  # None: the dataset's protocol size
    native_size: bool = False  # --image-size native: each category at its first training image's size
    crop: tuple[int, int] | None = Config.crop
    backbone_dtype: str | None = Config.backbone_dtype
    resume: Path | None = None
    alpha: float | None = None  # conformal thresholds' false-alarm rate; None: 1 / (n + 1) (models/calibration.py)
    val_fpr: float | None = None  # the former empirical rule instead, when given
    fpr: float = 0.3
    nsamples: int = 1000
    overwrite: bool = False
    save_model: bool = True  # False (--no-save-model): scores, metrics and the report only
    embed_backbone: bool = False  # ImageNet weights stored in model.pt rather than named (--embed-backbone)
    metric: str = "auproc"  # the headline; fpr also computes paper_fpr
    label: str = ""  # free tag, stored in metrics.json and results.csv
    layers: tuple[int, ...] | None = Config.layers
    pre_relu: bool | None = Config.pre_relu
    verbose: bool = False
    tile: tuple[int, int] | None = Config.tile
    tile_stride: tuple[int, int] | None = Config.tile_stride
    ci: float | None = None  # --ci: the level of every metric's bootstrap interval, in percent; None: none
    bootstrap: int = Bootstrap.resamples  # --ci's resamples

    def __post_init__(self) -> None:  # --approx's string becomes its member
        if self.approx is not None:
            object.__setattr__(self, "approx", Approx(self.approx))


DEFAULTS = RunOptions(dataset=DataOptions.dataset, report=Path("<experiment>/results.csv"))
RESUMED = ("backbone", "weights", "approx", "seed", "layers", "pre_relu", "backbone_dtype")  # None: the file's
FLAG_DESTS = {"backbone": "model"}  # the argparse name of a field, where they differ


def defaults(args: Any) -> None:
    """Fills every flag the user left out (None) with RunOptions' default; with --resume, the model's own
    settings stay None: the model file holds them."""
    for name in vars(DEFAULTS).keys() - {"dataset", "report"}:  # the dataset: resolve_resume; the report: train.py
        dest = FLAG_DESTS.get(name, name)
        if getattr(args, dest, 0) is None and not (args.resume is not None and name in RESUMED):
            setattr(args, dest, getattr(DEFAULTS, name))


# Every float flag and its range; a comparison with nan is False, but inf passes "> 0", hence isfinite too.
# --eps stops at 1e12, far above any covariance scale and far below where float32 distances underflow.
FLOAT_RANGES = {"normal_test_ratio": ("in (0, 1)", lambda v: 0 < v < 1),
                "fpr": ("in (0, 1]", lambda v: 0 < v <= 1),
                "val_fpr": ("in [0, 1)", lambda v: 0 <= v < 1),
                "alpha": ("in (0, 1)", lambda v: 0 < v < 1),
                "eps": ("positive and at most 1e12 (the paper uses 0.01; mSTC 0.3)", lambda v: 0 < v <= 1e12)}
SEED_MAX = 2**63 - 1  # what every seeded draw accepts (torch generators, numpy's default_rng, the synthetic set)


def check_float_flags(args: Any) -> None:
    """Each float flag finite and in its range, one line naming it."""
    for name, (allowed, inside) in FLOAT_RANGES.items():
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and inside(value)):
            raise UserError(f"--{name.replace('_', '-')} {value} must be {allowed}")
    if getattr(args, "alpha", None) is not None and getattr(args, "val_fpr", None) is not None:
        raise UserError("--alpha and --val-fpr are two rules for the same thresholds; pass one (--alpha: a "
                        "guarantee on new images)")


def seed_value(text: str | int | None) -> int | None:
    """--seed as an integer in 0 .. 2^63 - 1: parsed here, not by argparse, so that "1e20" is one line, and range
    checked, so that 10^20 is not a traceback from torch."""
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= SEED_MAX:
        raise UserError(f"--seed {text} must be an integer in 0 .. 2^63 - 1 ({SEED_MAX})")
    return value


def check_output_names(experiment: str | Path | None, categories: list[str]) -> None:
    """Refuses a category whose output folder's staging name (pipeline/outputs.py) would pass the file
    system's name limit: that fails only when the results are written, after the whole fit."""
    existing = Path(experiment or "runs").absolute()
    while not existing.exists():
        existing = existing.parent
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for category in categories:
        name = Path(category).name
        longest = max(len(os.fsencode(outputs._sibling(Path(name), kind).name))
                      for kind in (outputs.STAGING, outputs.OLD))
        longest += 7 - len(str(os.getpid()))  # a later process id may be longer (up to 7 digits, pid_max 4194304)
        if longest > limit:
            raise UserError(f"--category {category[:40]}... ({len(os.fsencode(name))} bytes) is too long for an output "
                            f"folder: with its staging suffix ({longest - len(os.fsencode(name))} bytes) it passes the "
                            f"file system's {limit}-byte name limit; pass a shorter --category (or rename its folder)")
