"""What ImageDataset yields, typed: one decoded image (`Item`) and a DataLoader batch of them (`Batch`).

Both read by attribute (`batch.image`) and, for code written against the dict they replaced, by name
(`batch["image"]`). `loader()` is the one way this project builds a DataLoader over them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate


class _ByName:
    def __getitem__(self, name: str) -> Any:
        if name not in {f.name for f in fields(self)}:  # type: ignore[arg-type]  # every subclass is a dataclass
            raise KeyError(name)
        return getattr(self, name)


@dataclass(frozen=True)
class Item(_ByName):
    image: torch.Tensor  # (3, H, W) float32, ImageNet-normalised as torchvision's ToTensor + Normalize
    mask: torch.Tensor  # (H, W) uint8, non-zero at defect pixels (all zero for a normal image)
    label: int  # 1: defective
    index: int  # position in its dataset
    error: str = ""  # predict.py: why the file could not be decoded ("" when it was)


@dataclass(frozen=True)
class Batch(_ByName):
    image: torch.Tensor  # (B, 3, H, W)
    mask: torch.Tensor  # (B, H, W)
    label: torch.Tensor  # (B,) int64
    index: torch.Tensor  # (B,) int64
    error: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.image)

    def pin_memory(self) -> Batch:  # what DataLoader(pin_memory=True) calls on a custom batch
        return Batch(self.image.pin_memory(), self.mask.pin_memory(), self.label, self.index, self.error)


def collate(items: Sequence[Item]) -> Batch:
    # default_collate per field: in a worker it stacks straight into shared memory, as it did for the dict
    return Batch(image=default_collate([i.image for i in items]), mask=default_collate([i.mask for i in items]),
                 label=default_collate([i.label for i in items]), index=default_collate([i.index for i in items]),
                 error=tuple(i.error for i in items))


def loader(dataset: Dataset, **options: Any) -> DataLoader:
    """torch's DataLoader with this module's collate; `options` as DataLoader takes them."""
    return DataLoader(dataset, collate_fn=collate, **options)
