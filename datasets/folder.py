"""Your own images (`--dataset folder`), as anomalib's Folder datamodule reads them.

    --normal-dir good/  [--abnormal-dir bad/ [--mask-dir masks/]]  [--normal-test-dir good_test/]

No layout is imposed. Without `--normal-test-dir`, a seeded `--normal-test-ratio` (0.2) of the
normal images is held out for testing and never fitted. Masks are matched to abnormal images by
file stem, with or without a `_mask` suffix, any image extension; an abnormal image without one is
an error naming it, unless `--allow-missing-masks` (it then counts for the image AUROC only).

Without abnormal images nothing can be measured: the held-out (or --normal-test-dir) normal images
calibrate the thresholds instead, there is no test split, and the run writes the model and says that
no metrics were computed. One category: `--category`, else the normal folder's name. Paths are
relative to `--dataroot` when it is given. 256 x 256 unless `--image-size`.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import UserError
from datasets.options import DataOptions, given
from datasets.readers import IMAGE_SUFFIXES, list_images
from datasets.samples import Sample, Splits
from datasets.spec import DatasetSpec


@dataclass(frozen=True)
class FolderOptions(DataOptions):
    """Its folders, relative to --dataroot when it is given."""
    normal_dir: Path | None = None  # defect-free images (required)
    abnormal_dir: Path | None = None  # defective images (None: fit and calibrate only, no metrics)
    mask_dir: Path | None = None  # masks of the abnormal images, matched by stem (with or without _mask)
    normal_test_dir: Path | None = None  # defect-free test images (None: hold out normal_test_ratio)
    normal_test_ratio: float = 0.2  # seeded share of normal_dir held out for testing
    allow_missing_masks: bool = False  # abnormal images without a mask: image-level metrics only
    name: str | None = None  # the category's name (None: normal_dir's folder name)


def add_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--normal-dir", default=None, help="folder: the defect-free images (required)")
    group.add_argument("--abnormal-dir", default=None,
                       help="folder: defective test images (default: none; then fit and calibrate, no metrics)")
    group.add_argument("--mask-dir", default=None,
                       help="folder: masks of the abnormal images, named by the image's stem, with or without _mask")
    group.add_argument("--normal-test-dir", default=None,
                       help="folder: defect-free test images (default: hold out --normal-test-ratio of --normal-dir)")
    group.add_argument("--normal-test-ratio", type=float, default=None,
                       help="folder: seeded share of --normal-dir held out for testing, never fitted (default "
                            f"{FolderOptions.normal_test_ratio})")
    group.add_argument("--allow-missing-masks", action="store_true",
                       help="folder: abnormal images without a mask count for the image AUROC only")


def optional_path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def options_from_args(args: argparse.Namespace, common: DataOptions) -> FolderOptions:
    return FolderOptions(**vars(common), normal_dir=optional_path(args.normal_dir),
                         abnormal_dir=optional_path(args.abnormal_dir), mask_dir=optional_path(args.mask_dir),
                         normal_test_dir=optional_path(args.normal_test_dir),
                         **given(args, "normal_test_ratio"), allow_missing_masks=args.allow_missing_masks,
                         name=args.category if args.category != "all" else None)


def resolve(root: Path | None, path: Path | None) -> Path | None:
    if path is None:
        return None
    return Path(root) / path if root is not None else Path(path)  # an absolute path stays itself


def folder(root: Path | None, path: Path | None, flag: str, what: str) -> Path | None:
    found = resolve(root, path)
    if found is not None and not found.is_dir():
        raise UserError(f"{flag} {found} is not a folder; pass the folder of {what}")
    return found


def images(path: Path, flag: str) -> list[Path]:
    listed = list_images(path)
    if not listed:
        raise UserError(f"{flag} {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return listed


def categories(root: Path | None, options: FolderOptions) -> list[str]:
    if options.normal_dir is None:
        raise UserError("--dataset folder needs --normal-dir, the folder of defect-free images")
    normal = folder(root, options.normal_dir, "--normal-dir", "defect-free images")
    assert normal is not None  # normal_dir is set: checked above
    name = options.name or normal.resolve().name
    if "," in name:
        raise UserError(f"--dataset folder has one category; --category {name} names it, without commas")
    return [name]


def hold_out(normal: list[Path], ratio: float, seed: int) -> tuple[list[Path], list[Path]]:
    """(fit, held out): a seeded `ratio` of the images (rounded half up, at least one, never all), both kept
    in file order."""
    if len(normal) < 2:
        raise UserError(f"{len(normal)} normal image: holding out --normal-test-ratio {ratio} needs at least 2 "
                        "(or pass --normal-test-dir)")
    n_test = min(len(normal) - 1, max(1, math.floor(ratio * len(normal) + 0.5)))
    held = set(np.random.default_rng(seed).permutation(len(normal))[:n_test].tolist())
    return ([p for i, p in enumerate(normal) if i not in held], [p for i, p in enumerate(normal) if i in held])


def mask_index(mask_dir: Path) -> dict[str, Path]:
    """Masks by stem; two masks with one stem (a.png, a.bmp) would be a guess, so they are refused."""
    index: dict[str, Path] = {}
    for path in list_images(mask_dir):
        if path.stem in index:
            raise UserError(f"--mask-dir holds two masks named {path.stem}: {index[path.stem].name} and {path.name}; "
                            "keep one")
        index[path.stem] = path
    return index


def match_mask(image: Path, index: dict[str, Path]) -> Path | None:
    return index.get(image.stem) or index.get(f"{image.stem}_mask")


def abnormal_samples(abnormal: Path, mask_dir: Path | None, allow_missing: bool, notes: list[str]) -> list[Sample]:
    defect = abnormal.resolve().name
    listed = images(abnormal, "--abnormal-dir")
    if mask_dir is None:
        notes.append("no --mask-dir: image-level metrics only (AU-PRO and pixel AUROC are nan)")
        return [Sample(path, None, 1, defect) for path in listed]
    index = mask_index(mask_dir)
    samples = [Sample(path, match_mask(path, index), 1, defect) for path in listed]
    missing = [s.image for s in samples if s.mask is None]
    if missing and not allow_missing:
        raise UserError(f"abnormal image {missing[0]} has no mask {mask_dir / missing[0].stem}[_mask].<ext> "
                        f"({len(missing)} without one); add it or pass --allow-missing-masks")
    if missing:
        notes.append(f"{len(missing)} abnormal images without a mask (first {missing[0]}): "
                     "they count for the image AUROC only")
    return samples


def load(root: Path | None, category: str, options: FolderOptions) -> Splits:
    normal_dir = folder(root, options.normal_dir, "--normal-dir", "defect-free images")
    abnormal = folder(root, options.abnormal_dir, "--abnormal-dir", "defective images")
    mask_dir = folder(root, options.mask_dir, "--mask-dir", "masks")
    normal_test_dir = folder(root, options.normal_test_dir, "--normal-test-dir", "defect-free test images")
    if mask_dir is not None and abnormal is None:
        raise UserError("--mask-dir needs --abnormal-dir, the images the masks belong to")
    assert normal_dir is not None  # categories(), called before any load, refuses a run without it
    normal = images(normal_dir, "--normal-dir")
    if normal_test_dir is not None:
        fit, normal_test = normal, images(normal_test_dir, "--normal-test-dir")
    else:
        fit, normal_test = hold_out(normal, options.normal_test_ratio, options.seed)
    notes: list[str] = []
    held = [Sample(path) for path in normal_test]
    train = [Sample(path) for path in fit]
    if abnormal is None:  # nothing to measure: the held-out normal images calibrate the thresholds
        notes.append(f"{category}: no --abnormal-dir: the {len(held)} normal test images calibrate the "
                     "thresholds; no metrics are computed")
        return Splits(train=train, test=[], val=held, notes=notes)
    test = held + abnormal_samples(abnormal, mask_dir, options.allow_missing_masks, notes)
    return Splits(train=train, test=test, notes=notes)


# no --dataroot needed: the folders are given by flag (relative to --dataroot if one is)
DATASET = DatasetSpec(name="folder", title="Image folders", categories=categories, load=load, order=8,
                      needs_root=False, add_flags=add_flags, options_from_args=options_from_args,
                      exclusive_flags=("normal_dir", "abnormal_dir", "mask_dir", "normal_test_dir"))
