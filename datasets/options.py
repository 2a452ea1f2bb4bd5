"""The options every dataset loader reads: typed, built once from the command line."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataOptions:
    """What a loader may need beyond its root folder and category.

    Each field belongs to the datasets that read it; the others ignore it.
    """
    dataset: str = "mvtecad"
    seed: int = 1111  # seeded draws (mSTC training frames)
    fold: int | None = None  # KolektorSDD: one of folds 0..2, None = all three
    split_file: Path | None = None  # KolektorSDD: split.pyb (None: <dataroot>-training-splits/split.pyb)
    scale: str = "half"  # KolektorSDD / KSDD2: half = 704 x 256, full = 1408 x 512
    startidx: int = 0  # mSTC: test frames with index % 5 == startidx
    train_frames: int = 5000  # mSTC: training frames sampled
    protocol: str | None = "standard"  # image pipeline and splits: standard or paper (datasets/transforms.py);
    # None (train.py --resume without --protocol): the model file's
    image_size: tuple[int, int] | None = None  # --image-size; KolektorSDD under paper labels parts at this size
    # folder (--dataset folder): paths relative to --dataroot when it is given
    normal_dir: Path | None = None  # defect-free images (required)
    abnormal_dir: Path | None = None  # defective images (None: fit and calibrate only, no metrics)
    mask_dir: Path | None = None  # masks of the abnormal images, matched by stem (with or without _mask)
    normal_test_dir: Path | None = None  # defect-free test images (None: hold out normal_test_ratio)
    normal_test_ratio: float = 0.2  # seeded share of normal_dir held out for testing
    allow_missing_masks: bool = False  # abnormal images without a mask: image-level metrics only
    name: str | None = None  # the category's name (None: normal_dir's folder name)
