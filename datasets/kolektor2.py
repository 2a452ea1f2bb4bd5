"""KolektorSDD2 (`--dataset kolektor2`) loader.

As distributed::

    <dataroot>/train/10000.png, 10000_GT.png, ...
    <dataroot>/test/20000.png, 20000_GT.png, ...

The known duplicates `10301 (copy).png` / `10301_GT (copy).png` (and any other "(copy)" file) are
skipped with a note. Train on the defect-free train images (all-zero `_GT` mask), test on all test
images. One category, `ksdd2`; 704 x 256 (`--scale full`: 1408 x 512, as the authors' code allows).
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from common import UserError
from datasets.kolektor import PAPER, ScaleOptions, image_size, labelled, paper_size_of, scale_options
from datasets.samples import Sample, Splits
from datasets.spec import DatasetSpec

KSDD2_RE = re.compile(r"^(\d+)\.png$", re.IGNORECASE)


def ksdd2_split(root: Path, split: str, notes: list[str], paper_size: tuple[int, int] | None = None) -> list[Sample]:
    folder = Path(root) / split
    if not folder.is_dir():
        raise UserError(f"KolektorSDD2 folder {folder} not found; --dataroot must hold train/ and test/")
    images, copies = [], []
    for p in folder.iterdir():
        if not p.is_file():
            continue
        if "(copy)" in p.name:
            copies.append(p.name)
        elif m := KSDD2_RE.match(p.name):
            images.append((int(m.group(1)), p))
    if copies:
        notes.append(f"KolektorSDD2 {split}/: skipped known duplicate files {', '.join(sorted(copies))}")
    if not images:
        raise UserError(f"KolektorSDD2 folder {folder} holds no NNNNN.png images; re-extract the dataset")
    return [labelled(image, image.with_name(f"{image.stem}_GT.png"), "KolektorSDD2 mask", paper_size)
            for _, image in sorted(images)]


def categories(root: Path | None, options: ScaleOptions) -> list[str]:
    return ["ksdd2"]


def load(root: Path | None, category: str, options: ScaleOptions) -> Splits:
    assert root is not None  # needs_root: train.py refuses to run without the dataset folder
    if category not in ("ksdd2", "all"):
        raise UserError(f"KolektorSDD2 has one category, ksdd2, not {category!r}; use --category ksdd2")
    notes: list[str] = []
    paper = paper_size_of(options)  # --protocol paper: labelled by the authors' mask transform
    train_all = ksdd2_split(root, "train", notes, paper)
    test = ksdd2_split(root, "test", notes, paper)
    train = [s for s in train_all if s.label == 0]
    if not train:
        raise UserError(f"KolektorSDD2: no defect-free training images in {Path(root) / 'train'}")
    return Splits(train=train, test=test, image_size=image_size(options), notes=notes)


DATASET = DatasetSpec(name="kolektor2", title="KolektorSDD2", categories=categories, load=load, order=2,
                      options_from_args=scale_options, paper=replace(PAPER, image_mode="RGB"),
                      paper_fits_all=True, env_var="KOLEKTOR2_DATA", folder_name="KolektorSDD2",
                      sweep_args=("--category", "ksdd2", "--model", "resnet18", "--k", "100", "--metric", "auroc"))
