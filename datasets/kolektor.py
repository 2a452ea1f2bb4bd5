"""KolektorSDD (`--dataset kolektor`) loader; datasets/kolektor2.py reuses its labelling helpers.

KolektorSDD, as distributed::

    <dataroot>/kos01/Part0.jpg, Part0_label.bmp, ... Part7.jpg, Part7_label.bmp   (kos21 has 7 parts)
    ...
    <dataroot>/kos50/...
    <dataroot>-training-splits/split.pyb    (official split file; or pass --split-file PATH)

`split.pyb` is a pickle `[train_split, test_split, all]`; `train_split[fold]` and `test_split[fold]`
list the kos folder names of fold 0..2. It is read with a restricted unpickler (only plain lists,
tuples, dicts and strings), never with `pickle.load`. A part is defective when its label bitmap has a
non-zero pixel (an all-zero bitmap = defect-free). Unsupervised protocol: train on the defect-free
parts of the fold's train folders, test on every part of the fold's test folders. Categories are
`fold0`, `fold1`, `fold2` (`--fold N` keeps one; `--category all` = the three). Images are resized to
704 x 256 (H x W, `--scale half`, the paper) or 1408 x 512 (`--scale full`). Under `--protocol paper` a
part is defective when its label survives the authors' mask transform at that size
(datasets/transforms.py), as in their code: that decides both the training set and the test labels.
"""
from __future__ import annotations

import argparse
import io
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import UserError
from datasets.options import DataOptions, given
from datasets.readers import read_mask
from datasets.samples import Sample, Splits
from datasets.spec import DatasetSpec, PaperPipeline, Resize

FOLDS = (0, 1, 2)
SCALES = {"half": (704, 256), "full": (1408, 512)}
PART_RE = re.compile(r"^Part(\d+)\.jpg$", re.IGNORECASE)


@dataclass(frozen=True)
class ScaleOptions(DataOptions):
    """KolektorSDD's and KolektorSDD2's options: `--scale`."""
    scale: str = "half"  # half = 704 x 256, full = 1408 x 512


@dataclass(frozen=True)
class KolektorOptions(ScaleOptions):
    fold: int | None = None  # one of folds 0..2, None = all three
    split_file: Path | None = None  # split.pyb (None: <dataroot>-training-splits/split.pyb)


def add_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--fold", type=int, default=None, help="KolektorSDD fold 0..2 (default: all three)")
    group.add_argument("--split-file", default=None,
                       help="KolektorSDD split.pyb (default: <dataroot>-training-splits/split.pyb)")
    group.add_argument("--scale", choices=list(SCALES), default=None,
                       help=f"KolektorSDD input scale (default {ScaleOptions.scale})")


def options_from_args(args: argparse.Namespace, common: DataOptions) -> KolektorOptions:
    return KolektorOptions(**vars(common), **given(args, "scale"), fold=args.fold,
                           split_file=Path(args.split_file) if args.split_file else None)


def scale_options(args: argparse.Namespace, common: DataOptions) -> ScaleOptions:
    """KolektorSDD2 reads `--scale` (a flag datasets/kolektor.py adds) and nothing else of its own."""
    return ScaleOptions(**vars(common), **given(args, "scale"))


def image_size(options: ScaleOptions) -> tuple[int, int]:
    scale = options.scale or ScaleOptions.scale
    if scale not in SCALES:
        raise UserError(f"--scale {scale!r} is not one of {', '.join(SCALES)}; use --scale half (704 x 256) "
                        "or --scale full (1408 x 512)")
    return SCALES[scale]


def has_defect(mask_path: Path) -> bool:
    return bool(np.asarray(read_mask(mask_path)).any())


class _SplitUnpickler(pickle.Unpickler):
    """Only builtin containers and strings: the split file is data, never code."""
    ALLOWED = {("builtins", "list"), ("builtins", "str"), ("builtins", "dict"), ("builtins", "tuple"),
               ("__builtin__", "list"), ("__builtin__", "str"), ("__builtin__", "dict"),
               ("__builtin__", "tuple"), ("__builtin__", "unicode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return {"list": list, "str": str, "unicode": str, "dict": dict, "tuple": tuple}[name]
        raise pickle.UnpicklingError(f"forbidden object {module}.{name}")


def split_file_path(root: Path, options: KolektorOptions) -> Path:
    given = options.split_file
    if given:
        return Path(given)
    root = Path(os.path.abspath(root))  # "." or "..": the folder's own name; symlinks are not followed
    return root.parent / f"{root.name}-training-splits" / "split.pyb"


def read_split_file(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    """(train_split, test_split), each a list of 3 lists of kos folder names."""
    if not path.is_file():
        raise UserError(f"KolektorSDD split file {path} not found; download the official training splits "
                        "next to the dataset (<dataroot>-training-splits/split.pyb) or pass --split-file PATH")
    try:
        data = _SplitUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except Exception as e:  # any unpickling failure is a bad file the user has to replace
        raise UserError(f"cannot read KolektorSDD split file {path}: {e}; use the official split.pyb") from None

    def folders(seq, what):
        if not isinstance(seq, (list, tuple)) or len(seq) < len(FOLDS):
            raise UserError(f"KolektorSDD split file {path}: {what} is not a list of {len(FOLDS)} folds; "
                            "use the official split.pyb")
        out = []
        for fold in FOLDS:
            names = seq[fold]
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, bytes)) for n in names):
                raise UserError(f"KolektorSDD split file {path}: {what}[{fold}] is not a list of folder "
                                "names; use the official split.pyb")
            out.append([n.decode() if isinstance(n, bytes) else n for n in names])
        return out

    if not isinstance(data, (list, tuple)) or len(data) < 2:
        raise UserError(f"KolektorSDD split file {path} is not [train_split, test_split, all]; "
                        "use the official split.pyb")
    return folders(data[0], "train_split"), folders(data[1], "test_split")


def parse_fold(category: str) -> int:
    match = re.fullmatch(r"(?:fold)?(\d+)", str(category))
    fold = int(match.group(1)) if match else None
    if fold not in FOLDS:
        raise UserError(f"KolektorSDD fold {category!r} is outside 0..2; use --fold 0, 1 or 2 "
                        "(or --category fold0|fold1|fold2|all)")
    return fold


def categories(root: Path | None, options: KolektorOptions) -> list[str]:
    fold = options.fold
    if fold is not None:
        return [f"fold{parse_fold(str(fold))}"]
    return [f"fold{f}" for f in FOLDS]


def kos_parts(root: Path, folder: str, paper_size: tuple[int, int] | None = None) -> list[Sample]:
    """Every part of one kos folder, in part order, labelled by reading its label bitmap."""
    path = Path(root) / folder
    if not path.is_dir():
        raise UserError(f"KolektorSDD folder {path} (named in the split file) not found; check --dataroot "
                        "points at the folder holding kos01..kos50")
    parts = sorted((int(m.group(1)), p) for p in path.iterdir() if (m := PART_RE.match(p.name)))
    if not parts:
        raise UserError(f"KolektorSDD folder {path} holds no PartN.jpg images; re-extract the dataset")
    return [labelled(image, image.with_name(f"{image.stem}_label.bmp"), "KolektorSDD label", paper_size)
            for _, image in parts]


def paper_size_of(options: ScaleOptions) -> tuple[int, int] | None:
    """The decoding size when parts are labelled by the authors' mask transform (--protocol paper), else None."""
    if getattr(options, "protocol", "standard") != "paper":
        return None
    return getattr(options, "image_size", None) or image_size(options)


def labelled(image: Path, mask: Path, what: str, paper_size: tuple[int, int] | None = None) -> Sample:
    """A sample whose label comes from its mask: an all-zero mask means defect-free (with `paper_size`: the
    mask after the authors' transform to that size)."""
    if not mask.is_file():
        raise UserError(f"{what} {mask} not found; re-extract the dataset")
    if paper_size is None:
        defect = has_defect(mask)
    else:
        # torchvision only when labelling under paper: the registry (summarize, run.sh) reads this module without it
        from datasets.transforms import check_mask_peaks, mask_peak, paper_mask

        check_mask_peaks([(mask, mask_peak(mask, "kolektor"))], "kolektor")  # a 0/1 label would pass as good
        defect = bool(paper_mask(mask, "kolektor", paper_size).any())
    if defect:
        return Sample(image=image, mask=mask, label=1, defect="defect")
    return Sample(image=image, mask=None, label=0, defect="good")


def load(root: Path | None, category: str, options: KolektorOptions) -> Splits:
    assert root is not None  # needs_root: train.py refuses to run without the dataset folder
    root = Path(root)
    fold = parse_fold(category)
    size = image_size(options)
    train_split, test_split = read_split_file(split_file_path(root, options))
    train_folders, test_folders = train_split[fold], test_split[fold]
    notes = []
    overlap = sorted(set(train_folders) & set(test_folders))
    if overlap:
        notes.append(f"KolektorSDD fold {fold}: folders in both train and test splits: {', '.join(overlap)}")
    paper = paper_size_of(options)
    train = []
    for folder in train_folders:
        for sample in kos_parts(root, folder, paper):
            if sample.label == 0:
                train.append(sample)
    test = [s for folder in test_folders for s in kos_parts(root, folder, paper)]
    if not train:
        raise UserError(f"KolektorSDD fold {fold}: no defect-free training images in {root}; check the "
                        "dataset and split file")
    return Splits(train=train, test=test, image_size=size, notes=notes)


def paper_steps(size: tuple[int, int]) -> tuple[Resize, ...]:
    """Resize((H, W)): the authors' KolektorSDD and KolektorSDD2 transform."""
    return (Resize(size),)


# grey images repeated to 3 channels; a mask pixel survives only at exactly 1.0 after the resize
PAPER = PaperPipeline(steps=paper_steps, mask_rule="truncate", image_mode="L", mask_mode="L", peak_floor=255,
                      cut="of 255")

DATASET = DatasetSpec(name="kolektor", title="KolektorSDD", categories=categories, load=load, order=1,
                      add_flags=add_flags, options_from_args=options_from_args, paper=PAPER, paper_fits_all=True,
                      env_var="KOLEKTOR_DATA", folder_name="KolektorSDD",
                      sweep_args=("--category", "all", "--model", "resnet18", "--k", "100", "--metric", "auroc"))
