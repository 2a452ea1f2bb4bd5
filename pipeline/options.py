"""The settings of one train.py run, typed: what the pipeline reads instead of the argparse namespace, and
the checks of their values that need no image (ranges, output names).

RunOptions' defaults are the command line's: train.py's flags default to None and `defaults()` fills what
the user left out from here (the model's settings from models/config.py), so each default is written once."""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from common import UserError
from datasets.options import DataOptions
from metrics.bootstrap import Bootstrap
from metrics.registry import HEADLINES
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


def add_run_flags(group: argparse._ArgumentGroup) -> None:
    """train.py's flags of how a run goes and what it writes (not what it fits)."""
    group.add_argument("--batch-size", type=int, default=None, help="images per batch (default 8 on CPU, 32 on GPU)")
    group.add_argument("--workers", type=int, default=None,
                       help="image-decoding processes (default: 0 with 2 cores or fewer, where they slow the "
                            "model down; else 2 on CPU, up to 12 with a GPU)")
    group.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    group.add_argument("--fpr", type=float, default=None,
                       help=f"FPR limit of the PRO integral; recall limit of paper_ap (default {DEFAULTS.fpr})")
    group.add_argument("--metric", choices=HEADLINES, default=None,
                       help="the headline printed: auproc (SEG AUPROC), auroc (SEG/DET AUROC), ap (SEG AP: the "
                            "authors' average precision up to recall --fpr), fpr (the authors' FPR curve against "
                            "itself up to --fpr: it measures the threshold grid, not the model; default "
                            f"{DEFAULTS.metric})")
    group.add_argument("--label", default=None, help="a free tag stored in metrics.json and results.csv; the authors' "
                       "convention (ResNet-18: trailing _64/_128/_256 = --layers 1/2/3, _448 = all; preReLU anywhere "
                       "= --pre-relu) sets those flags")
    group.add_argument("--verbose", action="store_true", help="print per-phase timings and sizes as the run goes")
    group.add_argument("--nsamples", type=int, default=None,
                       help=f"thresholds of the paper's PRO/ROC protocol (default {DEFAULTS.nsamples})")
    group.add_argument("--max-memory", default=None, metavar="SIZE",
                       help="this run's memory budget, e.g. 16G: a run predicted to need more is refused before "
                            "any image is decoded (default: the memory available, less 1 GiB)")
    group.add_argument("--experiment", default=None, help="output folder (default: a new runs/<date-time>)")
    group.add_argument("--report", default=None, help="results CSV to append to (default: <experiment>/results.csv)")
    group.add_argument("--overwrite", action="store_true", help="replace results of an earlier run in --experiment")
    group.add_argument("--quiet", action="store_true",
                       help="no progress bars (shown on stderr only when it is a terminal; stdout is the same)")
    group.add_argument("--cache", default=None, metavar="DIR",
                       help="store decoded, resized images here and reuse them in later runs (sweeps); a changed "
                            "file or size is decoded again (default: no cache)")
    group.add_argument("--no-save-model", dest="save_model", action="store_false",
                       help="write no model.pt (sweeps that need only metrics; scores and the report still work)")
    group.add_argument("--embed-backbone", action="store_true",
                       help="store ImageNet backbone weights in model.pt instead of naming them (for machines without "
                            "them; 99 MB more for WRN-50-2); random and file weights are always stored")


def from_args(args: Any, experiment: Path) -> RunOptions:
    """The settings of a checked train.py command line: each field from its flag (FLAG_DESTS where the names
    differ); the report defaults to the experiment's results.csv."""
    given = {f.name: getattr(args, FLAG_DESTS.get(f.name, f.name)) for f in fields(RunOptions)
             if f.name not in ("report", "resume")}
    return RunOptions(**given, report=Path(args.report or experiment / "results.csv"),
                      resume=Path(args.resume) if args.resume else None)


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
