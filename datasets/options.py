"""The options every dataset loader reads; a dataset's own options extend `DataOptions` in its module."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataOptions:
    """What every loader may read beyond its root folder and category; built once from the command line.

    A dataset with flags of its own subclasses it in its module (e.g. `KolektorOptions` in
    datasets/kolektor.py) and builds it in its `DatasetSpec.options_from_args`.
    """
    dataset: str = "mvtecad"
    seed: int = 1111  # seeded draws (mSTC training frames, the folder dataset's held-out images)
    protocol: str | None = "standard"  # image pipeline and splits: standard or paper (datasets/transforms.py);
    # None (train.py --resume without --protocol): the model file's
    image_size: tuple[int, int] | None = None  # --image-size; KolektorSDD under paper labels parts at this size
