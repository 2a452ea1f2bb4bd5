"""The image pipelines behind `--protocol`.

`standard` (datasets/base.py): one bilinear resize to the model's size, masks by nearest neighbour, > 0; what
the exact metrics of today's literature assume. `paper`: each paper dataset's transforms exactly as the
authors' code applies them (torchvision transforms on PIL images), so that the paper's tables can be
reproduced. With the model's size S x S or H x W (the authors' sizes in brackets):

- mvtecad: RGB, Resize(1.25 S) [320] of the shorter side, Resize(S) [256], CenterCrop(S). Masks: read as
  RGB, the same three transforms, ToTensor, Normalize(ImageNet), channel 0 > 0.5, i.e. a resized value
  above 0.485 + 0.5 x 0.229 (152.9 / 255): thin defects shrink or vanish.
- kolektor: grayscale (L), Resize((H, W)) [(704, 256) half, (1408, 512) full], ToTensor, repeated to 3
  channels. Masks: L, the same Resize, ToTensor, stored as integers (truncated: only a resized value of
  exactly 1.0 survives), > 0. A part is defective when that mask is (the authors' label and training set).
- kolektor2: RGB, Resize((H, W)); masks as kolektor.
- mstc: RGB, Resize((H, W)) [(256, 256)] twice (the authors' cache, then their split transform: the second
  is a no-op). Masks: RGB, the same resizes, ToTensor, channel 0 > 0: the authors' mSTC rule (their code:
  "bicubic makes value < 1"), applied to our lossless PNG masks.

All of them: ToTensor, Normalize(ImageNet mean, std) for the image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torchvision.transforms as T

from common import UserError
from datasets.base import IMAGENET_MEAN, IMAGENET_STD, read_image, read_mask

PROTOCOLS = ("paper", "standard")
PAPER_DATASETS = ("mvtecad", "kolektor", "kolektor2", "mstc")


def default_protocol(dataset: str) -> str:
    """paper for the paper's four datasets (the sweep scripts reproduce its tables), standard otherwise."""
    return "paper" if dataset in PAPER_DATASETS else "standard"


def check_protocol(dataset: str, protocol: str, image_size: tuple[int, int] | None) -> None:
    """Refuses a protocol the dataset has no pipeline for, before any image is decoded."""
    if protocol not in PROTOCOLS:
        raise UserError(f"--protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if protocol == "paper" and dataset not in PAPER_DATASETS:
        raise UserError(f"--protocol paper is the authors' pipeline of {', '.join(PAPER_DATASETS)}; "
                        f"--dataset {dataset} has --protocol standard only")
    if protocol == "paper" and dataset == "mvtecad" and image_size and image_size[0] != image_size[1]:
        raise UserError(f"--image-size {image_size[0]} {image_size[1]}: --protocol paper crops MVTec AD images to "
                        "a square (the authors' Resize(320), Resize(256), CenterCrop(256)); pass one size or "
                        "--protocol standard")


def resizes(dataset: str, size: tuple[int, int]) -> T.Compose:
    """The authors' geometric transforms (PIL -> PIL) for an output of `size` (H, W)."""
    if dataset == "mvtecad":
        side = size[0]
        return T.Compose([T.Resize(round(side * 1.25)), T.Resize(side), T.CenterCrop(side)])
    if dataset in ("kolektor", "kolektor2"):
        return T.Compose([T.Resize(size)])
    if dataset == "mstc":
        return T.Compose([T.Resize(size), T.Resize(size)])
    raise UserError(f"--protocol paper has no pipeline for --dataset {dataset}; use --protocol standard")


def paper_pixels(path: Path, dataset: str, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """The uint8 (H, W, 3) image after the authors' resizes, and the original (width, height).

    ToTensor and Normalize follow in ImageDataset, computed exactly as torchvision does; a grey
    KolektorSDD image is repeated to three channels, as the authors' code repeats its tensor.
    """
    original = read_image(path, "L" if dataset == "kolektor" else "RGB")
    array = np.asarray(resizes(dataset, size)(original))
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return array, original.size


def paper_mask_array(path: Path, dataset: str, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """The (H, W) uint8 0/1 mask by the authors' rule, and the label file's (width, height)."""
    kolektor = dataset in ("kolektor", "kolektor2")
    label = read_mask(path, "L" if kolektor else "RGB")
    m = T.ToTensor()(resizes(dataset, size)(label))
    if dataset == "mvtecad":
        defect = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(m)[0] > 0.5
    elif kolektor:
        defect = m[0].long() > 0  # a float copied into the authors' LongTensor truncates towards zero
    else:
        defect = m[0] > 0
    return defect.numpy().astype(np.uint8), label.size


# The least mask value (8 bits, channel 0 as the rule reads it) that the authors' rule can keep; resizing
# never lifts a pixel above the mask's maximum, so a mask whose maximum is below it loses every defect pixel.
# MVTec AD: a value above 0.485 + 0.5 x 0.229 (152.9 / 255); KolektorSDD(2): exactly 1.0 after ToTensor.
_PEAK_FLOOR = {"mvtecad": 153, "kolektor": 255, "kolektor2": 255}


def peak_floor(dataset: str) -> int | None:
    """The least mask value the `paper` rule of `dataset` keeps; None where any non-zero value counts (mSTC)."""
    return _PEAK_FLOOR.get(dataset)


def mask_peak(path: Path, dataset: str) -> int:
    """The largest value of the mask channel that the `paper` rule of `dataset` thresholds."""
    label = read_mask(path, "L" if dataset in ("kolektor", "kolektor2") else "RGB")
    return int(label.getextrema()[0][1] if label.mode == "RGB" else label.getextrema()[1])


def check_mask_peaks(peaks: list[tuple[Path, int]], dataset: str) -> None:
    """One line naming the first mask (and how many) whose defect pixels all fall below the rule's cut."""
    floor = peak_floor(dataset)
    faint = [(path, peak) for path, peak in peaks if floor is not None and 0 < peak < floor]
    if not faint:
        return
    path, peak = faint[0]
    more = f" (and {len(faint) - 1} more masks)" if len(faint) > 1 else ""
    cut = "above 152.9 of 255" if dataset == "mvtecad" else "of 255"
    raise UserError(f"mask {path} has maximum {peak}{more}: --protocol paper keeps only mask pixels {cut} (the "
                    f"authors' rule), so every defect pixel would be dropped; save the masks as 0/255 or pass "
                    "--protocol standard (any non-zero pixel is a defect)")


def paper_mask(path: Path, dataset: str, size: tuple[int, int]) -> np.ndarray:
    return paper_mask_array(path, dataset, size)[0]


def covered_box(dataset: str, protocol: str, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the part of an (H, W) original that the model's image shows."""
    h, w = size
    if protocol == "paper" and dataset == "mvtecad":  # the centre square of the shorter side
        side = min(h, w)
        return (h - side) // 2, (w - side) // 2, side, side
    return 0, 0, h, w
