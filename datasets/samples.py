"""What every dataset loader produces: a list of `Sample`s per split (`Splits`), decoded by datasets/base.py."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from models.config import Config


@dataclass(frozen=True)
class Sample:
    image: Path  # or a PIL image in memory (api.py), decoded as its file would be (datasets/readers.py)
    mask: Path | None = None  # None: defect-free (all-zero mask); with label 1: no mask, image metrics only
    label: int = 0  # 1 when the image has a defect
    defect: str = "good"


@dataclass
class Splits:
    """One category of a dataset: training images (normal only) and test images."""
    train: list[Sample]
    test: list[Sample]
    image_size: tuple[int, int] = Config.image_size  # (H, W) the dataset's protocol resizes to
    eps: float = Config.eps  # the dataset's protocol eps
    notes: list[str] = field(default_factory=list)  # warnings worth printing (skipped duplicates...)
    val: list[Sample] | None = None  # the dataset's own normal validation images; None: every 10th of train
