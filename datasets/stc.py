"""mSTC (ShanghaiTech Campus as an anomaly segmentation benchmark), `--dataset mstc`.

Reads the PREPROCESSED tree that `tools/stc_preprocess.sh <archives> <output>` writes (`--dataroot` is
`<output>`; a `<output>/converted` sub-folder with the same layout is accepted too)::

    <output>/train/<video>/<N>.jpg        frames of training video <video> (e.g. 01_001), N = 0, 1, ...
    <output>/test/<clip>/<N>.jpg          test frames of clip <clip> (e.g. 01_0014), as distributed
    <output>/pixel_mask/<clip>/<N>.png    pixel mask of test frame N (0/255, lossless PNG)
    <output>/stc_preprocess.json          written last by the tool; its absence = unfinished output

Frame numbers are parsed as integers (any zero padding); hidden folders (the tool's unfinished
`.<name>.partial` folders) are ignored.

Protocol (the paper): one model for all scenes, one category `mstc`. Training: all training frames
listed in order (video name, frame number), then `args.train_frames` (5,000) of them drawn without
replacement by `numpy.random.default_rng(args.seed).choice`, kept in listing order (train.py holds out
10% of them for validation). Under `--protocol paper` the authors' draw instead: frames in ImageFolder order
(video name, then file name as text: 0, 1, 10, 100, ...), Python's `random.seed(str(seed))` (their seed is
the command-line string '1111'), `random.sample(frames, 5000)`, kept in the order drawn.
Test: every 5th frame of every test clip, `frame_number % 5 == args.startidx` (0..4); label 1 when its
pixel mask has any positive pixel. 256 x 256, eps 0.3.
"""
from __future__ import annotations

import argparse
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import UserError
from datasets.options import DataOptions, given
from datasets.readers import read_mask
from datasets.samples import Sample, Splits
from datasets.spec import DatasetSpec, PaperPipeline, Resize

MARKER = "stc_preprocess.json"
FRAME_RE = re.compile(r"^(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)
STRIDE = 5


@dataclass(frozen=True)
class StcOptions(DataOptions):
    startidx: int = 0  # test frames with index % 5 == startidx
    train_frames: int = 5000  # training frames sampled


def add_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--startidx", type=int, default=None,
                       help=f"mSTC: test frames with index %% 5 == startidx (default {StcOptions.startidx})")
    group.add_argument("--train-frames", type=int, default=None,
                       help=f"mSTC: training frames sampled (default {StcOptions.train_frames})")


def options_from_args(args: argparse.Namespace, common: DataOptions) -> StcOptions:
    return StcOptions(**vars(common), **given(args, "startidx", "train_frames"))


def resolve_root(root: Path) -> Path:
    root = Path(root)
    if not (root / "train").is_dir() and (root / "converted" / "train").is_dir():
        return root / "converted"
    return root


def numbered_frames(folder: Path) -> dict[int, Path]:
    """{frame number: path} of the numbered frames in `folder`; two files with one number is an error."""
    frames: dict[int, Path] = {}
    for p in folder.iterdir():
        m = FRAME_RE.match(p.name)
        if not m or not p.is_file():
            continue
        n = int(m.group(1))
        if n in frames:
            raise UserError(f"mSTC folder {folder} has two files for frame {n} ({frames[n].name}, {p.name}); "
                            "remove one")
        frames[n] = p
    return frames


def clip_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _int_arg(args, name: str, default: int) -> int:
    value = getattr(args, name, None)
    return default if value is None else int(value)


def categories(root: Path | None, args) -> list[str]:
    return ["mstc"]


def load(root: Path | None, category: str, args) -> Splits:
    assert root is not None  # needs_root: train.py refuses to run without the dataset folder
    if category not in ("mstc", "all"):
        raise UserError(f"mSTC has one category, mstc, not {category!r}; use --category mstc")
    root = resolve_root(root)
    if not (root / MARKER).is_file():
        raise UserError(f"{root} is not a finished mSTC preprocessing output ({MARKER} missing); run "
                        f"tools/stc_preprocess.sh <archives folder> {root} and pass that output as --dataroot")
    startidx = _int_arg(args, "startidx", StcOptions.startidx)
    if not 0 <= startidx < STRIDE:
        raise UserError(f"--startidx {startidx} is outside 0..{STRIDE - 1}; it picks frames N with N % 5 == startidx")
    n_frames = _int_arg(args, "train_frames", StcOptions.train_frames)
    if n_frames < 1:
        raise UserError(f"--train-frames {n_frames} must be at least 1")
    seed = _int_arg(args, "seed", StcOptions.seed)
    notes: list[str] = []

    # training frames, listed in a fixed order, then a seeded draw without replacement
    paper = getattr(args, "protocol", "standard") == "paper"
    listing: list[Path] = []
    for video in clip_folders(root / "train"):
        if paper:  # torchvision's ImageFolder order: file names sorted as text
            listing.extend(sorted(numbered_frames(video).values(), key=lambda p: p.name))
        else:
            listing.extend(path for _, path in sorted(numbered_frames(video).items()))
    if not listing:
        raise UserError(f"no training frames under {root / 'train'}; rerun tools/stc_preprocess.sh")
    if n_frames > len(listing):
        notes.append(f"mSTC: only {len(listing)} training frames, fewer than --train-frames {n_frames}; "
                     "using all of them")
    if paper:  # the authors' draw, kept in the order drawn (train.py's validation is index % 10 == 0)
        train = [Sample(p) for p in random.Random(str(seed)).sample(listing, min(n_frames, len(listing)))]
    elif n_frames >= len(listing):
        train = [Sample(p) for p in listing]
    else:
        chosen = np.sort(np.random.default_rng(seed).choice(len(listing), size=n_frames, replace=False))
        train = [Sample(listing[i]) for i in chosen]

    # test frames: every 5th frame of every clip, labelled by its pixel mask
    test: list[Sample] = []
    for clip in clip_folders(root / "test"):
        mask_dir = root / "pixel_mask" / clip.name
        if not mask_dir.is_dir():
            raise UserError(f"mSTC pixel masks {mask_dir} not found for test clip {clip}; "
                            "rerun tools/stc_preprocess.sh")
        masks = numbered_frames(mask_dir)
        for n, image in sorted(numbered_frames(clip).items()):
            if n % STRIDE != startidx:
                continue
            mask = masks.get(n)
            if mask is None:
                raise UserError(f"mSTC test frame {image} has no pixel mask {mask_dir}/{n:03d}.png; "
                                "rerun tools/stc_preprocess.sh")
            if np.asarray(read_mask(mask)).any():
                test.append(Sample(image, mask, 1, "anomaly"))
            else:
                test.append(Sample(image, None, 0, "good"))
    if not test:
        raise UserError(f"no mSTC test frames under {root / 'test'} with frame number % 5 == {startidx}")
    return Splits(train=train, test=test, eps=0.3, notes=notes)


def paper_steps(size: tuple[int, int]) -> tuple[Resize, ...]:
    """Resize((H, W)) twice: the authors' cache, then their split transform (a no-op)."""
    return Resize(size), Resize(size)


DATASET = DatasetSpec(name="mstc", title="mSTC", categories=categories, load=load, order=3,
                      add_flags=add_flags, options_from_args=options_from_args,
                      paper=PaperPipeline(steps=paper_steps, mask_rule="nonzero"),  # "bicubic makes value < 1"
                      env_var="STC_DATA", folder_name="mSTC",
                      sweep_args=("--category", "mstc", "--model", "resnet18", "--k", "100", "--seed", "5555",
                                  "--metric", "auroc"))
