"""What a dataset declares about itself: `DatasetSpec`, and `PaperPipeline` for `--protocol paper`.

Each dataset module holds one module-level `DATASET = DatasetSpec(...)`; datasets/__init__.py finds them.
Nothing here imports torch: tools/summarize.py and script/run.sh read these declarations cheaply.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from datasets.options import DataOptions
from datasets.samples import Splits

Size = tuple[int, int]  # (H, W)


@dataclass(frozen=True)
class Resize:
    """torchvision's Resize: an int resizes the shorter side to it, (H, W) both sides."""
    size: int | Size


@dataclass(frozen=True)
class CenterCrop:
    size: int | Size


Step = Resize | CenterCrop
# How the authors turn a resized mask (ToTensor, channel 0) into defect pixels: "imagenet": normalised with the
# ImageNet mean and std, then > 0.5 (MVTec AD); "truncate": copied into a LongTensor (only 1.0 survives), > 0
# (KolektorSDD); "nonzero": > 0 (mSTC).
MaskRule = Literal["imagenet", "truncate", "nonzero"]


@dataclass(frozen=True)
class PaperPipeline:
    """The authors' transforms of one dataset, applied by datasets/transforms.py under `--protocol paper`."""
    steps: Callable[[Size], tuple[Step, ...]]  # the geometric transforms for a model input of (H, W)
    mask_rule: MaskRule
    image_mode: str = "RGB"  # as the authors' code reads the image ("L": grey, repeated to 3 channels)
    mask_mode: str = "RGB"  # as it reads the mask; the rule looks at channel 0
    peak_floor: int | None = None  # the least 8-bit mask value the rule keeps; None: any non-zero value
    cut: str = ""  # that floor in words, for the refusal of a mask that would lose every defect pixel
    square: str = ""  # non-empty: the steps crop to a square, as this names them; two --image-size are refused


def no_flags(group: argparse._ArgumentGroup) -> None:
    """A dataset without flags of its own."""


def common_options(args: argparse.Namespace, common: DataOptions) -> DataOptions:
    """A dataset that reads only the options every dataset has."""
    return common


@dataclass(frozen=True)
class DatasetSpec:
    """Everything about one dataset that the rest of the code asks: train.py, the pipeline, the scripts and
    the tables read these fields and never switch on a dataset's name."""
    name: str  # --dataset NAME, and the results' dataset column
    title: str  # the tables' heading (tools/summarize.py)
    categories: Callable[[Path | None, Any], list[str]]  # (root, options) -> its category names
    load: Callable[[Path | None, str, Any], Splits]  # (root, category, options) -> the category's images
    needs_root: bool = True  # --dataroot (or $DATA) is required; False: it works without one
    add_flags: Callable[[argparse._ArgumentGroup], None] = no_flags  # adds its flags to train.py's data group
    options_from_args: Callable[[argparse.Namespace, DataOptions], DataOptions] = common_options
    exclusive_flags: tuple[str, ...] = ()  # its flags (argparse dests) that another --dataset refuses
    paper: PaperPipeline | None = None  # the authors' pipeline; None: --protocol standard only
    paper_fits_all: bool = False  # under paper, the validation images are fitted too (the authors hold none out)
    env_var: str | None = None  # script/run.sh: the variable naming its root, e.g. BTAD_DATA (folder: BTAD_NAME)
    folder_name: str | None = None  # script/run.sh: the folder script/find_up.sh looks for without env_var
    sweep_args: tuple[str, ...] = ("--category", "all")  # script/run.sh: train.py flags before the caller's
    order: int = 100  # where its tables come in tools/summarize.py (and its flags in --help)

    @property
    def default_protocol(self) -> str:
        """paper where the authors' pipeline is known (the sweeps reproduce the paper's tables), else standard."""
        return "standard" if self.paper is None else "paper"

    @property
    def name_var(self) -> str | None:
        """script/run.sh: the variable that renames the folder it looks for (BTAD_DATA -> BTAD_NAME)."""
        return None if self.env_var is None else self.env_var.removesuffix("_DATA") + "_NAME"
