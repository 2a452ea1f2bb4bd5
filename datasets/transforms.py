"""The image pipelines behind `--protocol`: the shared machinery; each dataset declares its own steps.

`standard` (datasets/base.py): one bilinear resize to the model's size, masks by nearest neighbour, > 0; what
the exact metrics of today's literature assume. `paper`: each paper dataset's transforms exactly as the
authors' code applies them (torchvision transforms on PIL images), so that the paper's tables can be
reproduced. A dataset declares them as its `DatasetSpec.paper` (datasets/spec.py: the read modes, the
geometric steps, the mask rule). With the model's size S x S or H x W (the authors' sizes in brackets):

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
from typing import cast

import numpy as np
import torchvision.transforms as T

from common import UserError
from datasets import find, spec, specs
from datasets.geometry import centre_square
from datasets.readers import read_image, read_mask
from datasets.spec import PaperPipeline, Resize, Step
from models.config import Protocol

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROTOCOLS = tuple(Protocol)


def paper_datasets() -> list[str]:
    """The datasets with the authors' pipeline, in the registry's order."""
    return [s.name for s in specs() if s.paper is not None]


def pipeline_of(dataset: str) -> PaperPipeline | None:
    found = find(dataset)
    return None if found is None else found.paper


def default_protocol(dataset: str) -> str:
    """paper for the datasets that declare the authors' pipeline (the sweep scripts reproduce its tables),
    standard otherwise."""
    found = find(dataset)
    return "standard" if found is None else found.default_protocol


def check_protocol(dataset: str, protocol: str, image_size: tuple[int, int] | None) -> None:
    """Refuses a protocol the dataset has no pipeline for, before any image is decoded."""
    if protocol not in PROTOCOLS:
        raise UserError(f"--protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    pipeline = pipeline_of(dataset)
    if protocol == "paper" and pipeline is None:
        raise UserError(f"--protocol paper is the authors' pipeline of {', '.join(paper_datasets())}; "
                        f"--dataset {dataset} has --protocol standard only")
    two_sizes = image_size is not None and image_size[0] != image_size[1]
    if protocol == "paper" and pipeline is not None and pipeline.square and image_size is not None and two_sizes:
        title = spec(dataset).title
        raise UserError(f"--image-size {image_size[0]} {image_size[1]}: --protocol paper crops {title} images to "
                        f"a square ({pipeline.square}); pass one size or --protocol standard")


def _required(dataset: str) -> PaperPipeline:
    pipeline = pipeline_of(dataset)
    if pipeline is None:
        raise UserError(f"--protocol paper has no pipeline for --dataset {dataset}; use --protocol standard")
    return pipeline


def _torchvision(step: Step) -> T.Resize | T.CenterCrop:
    return T.Resize(step.size) if isinstance(step, Resize) else T.CenterCrop(step.size)


def resizes(dataset: str, size: tuple[int, int]) -> T.Compose:
    """The authors' geometric transforms (PIL -> PIL) for an output of `size` (H, W)."""
    return T.Compose([_torchvision(step) for step in _required(dataset).steps(size)])


def paper_pixels(path: Path, dataset: str, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """The uint8 (H, W, 3) image after the authors' resizes, and the original (width, height).

    ToTensor and Normalize follow in ImageDataset, computed exactly as torchvision does; a grey
    KolektorSDD image is repeated to three channels, as the authors' code repeats its tensor.
    """
    original = read_image(path, _required(dataset).image_mode)
    array = np.asarray(resizes(dataset, size)(original))
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return array, original.size


def paper_mask_array(path: Path, dataset: str, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """The (H, W) uint8 0/1 mask by the authors' rule, and the label file's (width, height)."""
    pipeline = _required(dataset)
    label = read_mask(path, pipeline.mask_mode)
    m = T.ToTensor()(resizes(dataset, size)(label))
    if pipeline.mask_rule == "imagenet":
        defect = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(m)[0] > 0.5
    elif pipeline.mask_rule == "truncate":
        defect = m[0].long() > 0  # a float copied into the authors' LongTensor truncates towards zero
    else:
        defect = m[0] > 0
    return defect.numpy().astype(np.uint8), label.size


def peak_floor(dataset: str) -> int | None:
    """The least mask value the `paper` rule of `dataset` keeps; None where any non-zero value counts (mSTC).

    Resizing never lifts a pixel above the mask's maximum, so a mask whose maximum is below it loses every
    defect pixel."""
    pipeline = pipeline_of(dataset)
    return None if pipeline is None else pipeline.peak_floor


def mask_peak(path: Path, dataset: str) -> int:
    """The largest value of the mask channel that the `paper` rule of `dataset` thresholds."""
    label = read_mask(path, _required(dataset).mask_mode)
    if label.mode == "RGB":  # one (min, max) per band
        return int(cast(tuple[tuple[int, int], ...], label.getextrema())[0][1])
    return int(cast(tuple[int, int], label.getextrema())[1])


def check_mask_peaks(peaks: list[tuple[Path, int]], dataset: str) -> None:
    """One line naming the first mask (and how many) whose defect pixels all fall below the rule's cut."""
    floor = peak_floor(dataset)
    faint = [(path, peak) for path, peak in peaks if floor is not None and 0 < peak < floor]
    if not faint:
        return
    path, peak = faint[0]
    more = f" (and {len(faint) - 1} more masks)" if len(faint) > 1 else ""
    raise UserError(f"mask {path} has maximum {peak}{more}: --protocol paper keeps only mask pixels "
                    f"{_required(dataset).cut} (the authors' rule), so every defect pixel would be dropped; save the "
                    "masks as 0/255 or pass --protocol standard (any non-zero pixel is a defect)")


def paper_mask(path: Path, dataset: str, size: tuple[int, int]) -> np.ndarray:
    return paper_mask_array(path, dataset, size)[0]


def covered_box(dataset: str, protocol: str, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the part of an (H, W) original that the model's image shows."""
    pipeline = pipeline_of(dataset)
    if protocol == "paper" and pipeline is not None and pipeline.square:  # the centre square of the shorter side
        return centre_square(size)
    h, w = size
    return 0, 0, h, w

