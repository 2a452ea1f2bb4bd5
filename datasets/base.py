"""What every dataset loader produces: a list of `Sample`s per split, read by `ImageDataset`."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from common import UserError
from datasets.cache import ImageCache

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path | None = None  # None: defect-free (all-zero mask); with label 1: no mask, image metrics only
    label: int = 0  # 1 when the image has a defect
    defect: str = "good"


@dataclass
class Splits:
    """One category of a dataset: training images (normal only) and test images."""
    train: list[Sample]
    test: list[Sample]
    image_size: tuple[int, int] = (256, 256)  # (H, W) the dataset's protocol resizes to
    eps: float = 0.01  # the dataset's protocol eps
    notes: list[str] = field(default_factory=list)  # warnings worth printing (skipped duplicates...)
    val: list[Sample] | None = None  # the dataset's own normal validation images; None: every 10th of train


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_image(path: Path, mode: str = "RGB") -> Image.Image:
    """RGB image (or `mode`); grayscale is repeated to 3 channels. Unreadable or truncated files raise UserError.

    16-bit images keep their high byte (value >> 8), for grayscale as Pillow already does for 48-bit
    RGB, so a 16-bit file decodes like its 8-bit version however many channels it has. Floating-point
    images (mode F, e.g. float32 TIFF) must hold values in [0, 1], scaled to 0..255; others are refused.
    An EXIF orientation (phone and camera JPEGs) is applied, so the image is read upright, as viewers
    show it and as its mask was drawn.
    """
    return _read(path, mode, "image")


def read_mask(path: Path, mode: str = "L") -> Image.Image:
    """Grayscale mask (or `mode`); any non-zero pixel marks a defect, also in a 16-bit mask."""
    return _read(path, mode, "mask")


def _read(path: Path, mode: str, what: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # a no-op without an Orientation tag (MVTec AD...)
            if img.mode.startswith("I"):  # I;16 (16-bit PNG, TIFF) or I: convert() would clip at 255
                img = _to_8bit(np.asarray(img), keep_nonzero=what == "mask")
            elif img.mode == "F":  # convert() would clip [0, 1] data to black
                img = _float_to_8bit(np.asarray(img), path, what)
            return img.convert(mode)
    except Image.DecompressionBombError as e:  # raised on the header alone, before decoding a byte
        raise UserError(f"cannot read {what} {path}: {str(e).rstrip('.')}; if it is a real image, "
                        "downscale it first") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise UserError(f"cannot read {what} {path}: {e}; replace or remove the file") from None


def _to_8bit(values: np.ndarray, keep_nonzero: bool) -> Image.Image:
    """16-bit values -> 8 bits by their high byte; a mask keeps faint labels (1..255) as non-zero."""
    values = np.clip(values.astype(np.int64), 0, 65535)
    scaled = values >> 8
    if keep_nonzero:
        scaled = np.where(values > 0, np.maximum(scaled, 1), 0)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def _float_to_8bit(values: np.ndarray, path: Path, what: str) -> Image.Image:
    """Floating-point values in [0, 1] -> 0..255, rounded (v / 255 gives v back); a mask keeps faint labels."""
    finite = np.isfinite(values).all()
    if not finite or values.min() < 0 or values.max() > 1:
        found = "non-finite values" if not finite else f"values {values.min():g}..{values.max():g}"
        raise UserError(f"cannot read {what} {path}: floating-point pixels must lie in [0, 1], found {found}; "
                        "save it as an 8- or 16-bit image or scaled to [0, 1]")
    scaled = np.rint(values.astype(np.float64) * 255)
    if what == "mask":
        scaled = np.where(values > 0, np.maximum(scaled, 1), 0)
    return Image.fromarray(scaled.astype(np.uint8))  # 2-D uint8: mode L


def center_crop_box(size: tuple[int, int], crop: tuple[int, int] | None) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the centre crop of an (H, W) image; the whole image without crop."""
    h, w = size
    if crop is None:
        return 0, 0, h, w
    ch, cw = crop
    return (h - ch) // 2, (w - cw) // 2, ch, cw


class ImageDataset(torch.utils.data.Dataset):
    """Decodes samples to ImageNet-normalised (3, H, W) float tensors and binary (H, W) uint8 masks.

    protocol "standard": images are resized to `image_size` (H, W) with bilinear filtering, masks with
    nearest neighbour; "paper": `dataset`'s pipeline in the authors' code (datasets/transforms.py). Then
    both are centre-cropped to `crop` when given.
    """

    def __init__(self, samples: Sequence[Sample], image_size: tuple[int, int],
                 crop: tuple[int, int] | None = None, protocol: str = "standard", dataset: str = "",
                 cache: ImageCache | None = None):
        self.samples = list(samples)
        self.image_size = image_size
        self.crop = crop
        self.protocol = protocol
        self.dataset = dataset
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        self.cache = cache  # --cache: decoded uint8 arrays stored per source file and transform_key()

    def transform_key(self) -> str:
        """Every setting that shapes the uint8 arrays: all attributes but the samples, the cache and the
        normalisation (applied after the cache), so a setting added later is part of the key by itself."""
        settings = {k: v for k, v in vars(self).items() if k not in ("samples", "cache", "mean", "std")}
        return repr(sorted(settings.items()))

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def output_size(self) -> tuple[int, int]:
        return self.crop or self.image_size

    def _crop(self, array: np.ndarray) -> np.ndarray:
        top, left, h, w = center_crop_box(self.image_size, self.crop)
        return array[top:top + h, left:left + w]

    @property
    def pipeline(self) -> str:
        """What decodes the images besides size and crop: "standard", or "paper-<dataset>"."""
        return "standard" if self.protocol == "standard" else f"paper-{self.dataset}"

    def _decode_image(self, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        """uint8 (H, W, 3) resized and cropped, and the file's (width, height)."""
        if self.protocol == "paper":
            from datasets.transforms import paper_pixels  # imports this module

            array, size = paper_pixels(path, self.dataset, self.image_size)
            return np.array(self._crop(array)), size
        original = read_image(path)
        image = original.resize(self.image_size[::-1], Image.BILINEAR)
        return np.array(self._crop(np.asarray(image))), original.size  # a writable copy

    def _decode_mask(self, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        """uint8 (H, W) of 0 and 1, resized and cropped, and the file's (width, height)."""
        if self.protocol == "paper":
            from datasets.transforms import paper_mask_array

            mask, size = paper_mask_array(path, self.dataset, self.image_size)
            return np.ascontiguousarray(self._crop(mask)), size
        original = read_mask(path)
        mask = np.asarray(original.resize(self.image_size[::-1], Image.NEAREST))
        return np.ascontiguousarray(self._crop(mask) > 0).astype(np.uint8), original.size

    def _load(self, kind: str, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        decode = self._decode_image if kind == "image" else self._decode_mask
        if self.cache is None:
            return decode(path)
        shape = (*self.output_size, 3) if kind == "image" else self.output_size
        return self.cache.get(kind, path, self.transform_key(), lambda: decode(path), shape)

    def check_masks(self) -> None:
        """Refuses, before anything is fitted, masks that the `paper` rule would empty (datasets/transforms.py:
        a 0/1 mask under MVTec AD's 152.9 / 255 cut). Reads each mask's maximum, from the cache when it has it."""
        from datasets.transforms import check_mask_peaks, mask_peak, peak_floor

        if self.protocol != "paper" or peak_floor(self.dataset) is None:
            return
        masks = [s.mask for s in self.samples if s.mask is not None]

        def peak(path: Path) -> int:
            if self.cache is None:
                return mask_peak(path, self.dataset)
            array, _ = self.cache.get("peak", path, self.pipeline,
                                      lambda: (np.array([mask_peak(path, self.dataset)], np.uint8), (1, 1)), (1,))
            return int(array[0])
        check_mask_peaks([(path, peak(path)) for path in masks], self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        array, size = self._load("image", sample.image)
        # as torchvision's ToTensor and Normalize compute it, bit for bit, for either protocol
        pixels = torch.from_numpy(array).permute(2, 0, 1).float().div_(255)
        if sample.mask is None:
            mask = np.zeros(self.output_size, dtype=np.uint8)
        else:
            mask, mask_size = self._load("mask", sample.mask)
            if mask_size != size:  # stretching it would mark the wrong pixels as defects
                raise UserError(f"mask {sample.mask} is {mask_size[0]} x {mask_size[1]} but its image {sample.image} "
                                f"is {size[0]} x {size[1]}; the mask must match its image's size")
        return {
            "image": (pixels - self.mean) / self.std,
            "mask": torch.from_numpy(np.ascontiguousarray(mask)),
            "label": sample.label,
            "index": index,
        }


class SegmentedLoader:
    """One DataLoader over consecutive segments (datasets), e.g. fit, validation and test images of
    every category in turn.

    Batches never straddle a segment, and next_segment() yields the next segment's batches. One
    loader for a whole run means the workers start once and keep decoding ahead while the model
    works on the previous segment (the precision, another category's metrics).
    """

    def __init__(self, segments: Sequence[ImageDataset], batch_size: int, workers: int, pin_memory: bool = False):
        batches, self.counts, start = [], [], 0
        for segment in segments:
            stop = start + len(segment)
            chunks = [list(range(i, min(i + batch_size, stop))) for i in range(start, stop, batch_size)]
            batches.extend(chunks)
            self.counts.append(len(chunks))
            start = stop
        dataset = torch.utils.data.ConcatDataset(segments) if segments else []
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                                             pin_memory=pin_memory) if batches else []
        self._batches = iter(loader)
        self._next = 0

    def next_segment(self):
        index, self._next = self._next, self._next + 1
        for _ in range(self.counts[index]):
            yield next(self._batches)
