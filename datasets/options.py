"""The options every dataset loader reads; a dataset's own options extend `DataOptions` in its module."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.config import Config, Protocol


@dataclass(frozen=True)
class DataOptions:
    """What every loader may read beyond its root folder and category; built once from the command line.

    A dataset with flags of its own subclasses it in its module (e.g. `KolektorOptions` in
    datasets/kolektor.py) and builds it in its `DatasetSpec.options_from_args`.
    """
    dataset: str = "mvtecad"
    seed: int = Config.seed  # seeded draws (mSTC training frames, the folder dataset's held-out images)
    protocol: Protocol | None = Config.protocol  # image pipeline and splits (datasets/transforms.py); None
    # (train.py --resume without --protocol): the model file's
    image_size: tuple[int, int] | None = None  # --image-size; KolektorSDD under paper labels parts at this size

    def __post_init__(self) -> None:  # --protocol's string becomes its member
        if self.protocol is not None:
            object.__setattr__(self, "protocol", Protocol(self.protocol))


def given(args: Any, *names: str) -> dict[str, Any]:
    """The flags among `names` the user gave (argparse defaults are None): the options dataclass's defaults
    stand for the others, so that each default is written once, in the dataclass."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
