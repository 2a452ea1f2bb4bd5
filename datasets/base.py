"""The dataset class: `ImageDataset` decodes a split's samples to tensors; `SegmentedLoader`, the run-wide loader.

The loaders' types and the readers live in datasets/samples.py, readers.py and geometry.py; their names are
also importable from here, as before.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import UserError
from datasets.batch import Batch, Item, loader
from datasets.cache import ImageCache
from datasets.geometry import center_crop_box
from datasets.readers import IMAGE_SUFFIXES, list_images, read_image, read_mask
from datasets.samples import Sample, Splits
from datasets.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_mask_peaks,
    mask_peak,
    paper_mask_array,
    paper_pixels,
    peak_floor,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_SUFFIXES", "ImageDataset", "Sample", "SegmentedLoader", "Splits",
           "center_crop_box", "list_images", "read_image", "read_mask"]


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
            array, size = paper_pixels(path, self.dataset, self.image_size)
            return np.array(self._crop(array)), size
        original = read_image(path)
        image = original.resize(self.image_size[::-1], Image.Resampling.BILINEAR)
        return np.array(self._crop(np.asarray(image))), original.size  # a writable copy

    def _decode_mask(self, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        """uint8 (H, W) of 0 and 1, resized and cropped, and the file's (width, height)."""
        if self.protocol == "paper":
            mask, size = paper_mask_array(path, self.dataset, self.image_size)
            return np.ascontiguousarray(self._crop(mask)), size
        original = read_mask(path)
        mask = np.asarray(original.resize(self.image_size[::-1], Image.Resampling.NEAREST))
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

    def __getitem__(self, index: int) -> Item:
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
        return Item(image=(pixels - self.mean) / self.std, mask=torch.from_numpy(np.ascontiguousarray(mask)),
                    label=sample.label, index=index)


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
        batched: Iterable[Batch] = []
        if batches:
            batched = loader(torch.utils.data.ConcatDataset(segments), batch_sampler=batches, num_workers=workers,
                             pin_memory=pin_memory)
        self._batches = iter(batched)
        self._next = 0

    def next_segment(self):
        index, self._next = self._next, self._next + 1
        for _ in range(self.counts[index]):
            yield next(self._batches)
