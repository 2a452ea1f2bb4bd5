"""What a fitted model is: the settings stored in its file and needed to rebuild and score it.

Their defaults are the method's defaults everywhere: train.py's flags, the run and data options and the
Python API read them from here (this module imports nothing, so torch-free code may read it too)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Approx(StrEnum):
    """--approx: how W is drawn (models/embedding.py) and which statistics score (models/pooled.py, lowrank.py).
    A member is its string: "ortho" == Approx.ORTHO, and files, JSON and CSV hold the plain value."""
    ORTHO = "ortho"  # the paper: random semi-orthogonal W
    SAMPLE = "sample"  # PaDiM: k channels drawn
    GAUSSIAN = "gaussian"
    FULL = "full"  # W = I, the exact per-position covariance
    GLOBAL = "global"  # W = I, one covariance pooled over positions
    LOWRANK = "lowrank"
    LOWRANKI = "lowranki"
    NULL = "null"


class Protocol(StrEnum):
    """--protocol: the image pipeline and splits (datasets/transforms.py)."""
    PAPER = "paper"  # the authors' transforms, to compare with the paper's tables
    STANDARD = "standard"  # one resize, nearest-neighbour masks


@dataclass(frozen=True)
class Config:
    backbone: str = "wide_resnet50_2"
    k: int = 300  # the default backbone's row's k (models/backbone.py)
    approx: Approx = Approx.ORTHO
    seed: int = 1111
    image_size: tuple[int, int] = (256, 256)  # (H, W) images are resized to
    crop: tuple[int, int] | None = None  # centre crop after resizing: the network's input size
    eps: float = 0.01
    unbiased: bool = False
    sigma: float = 4.0
    backbone_dtype: str = "float32"  # or "bfloat16": the backbone alone runs in it; W, statistics stay float32
    protocol: Protocol = Protocol.STANDARD  # image pipeline (datasets/transforms.py); files older than it were standard
    layers: tuple[int, ...] = (1, 2, 3)  # stages tapped as x (ablation; files without it used all three)
    pre_relu: bool = False  # ResNets: tap each stage before its final ReLU (ablation)
    # one Gaussian per position of a tile (H, W) fitted on every tile of every image (models/tiles.py);
    # None: one per position of the whole input. Files written before it have none.
    tile: tuple[int, int] | None = None
    tile_stride: tuple[int, int] | None = None  # None: the tile's size (no overlap)

    def __post_init__(self) -> None:  # a string from a flag or a file becomes its member; ValueError if none
        object.__setattr__(self, "approx", Approx(self.approx))
        object.__setattr__(self, "protocol", Protocol(self.protocol))

    @property
    def input_size(self) -> tuple[int, int]:
        return self.crop or self.image_size

    @property
    def model_size(self) -> tuple[int, int]:
        """What the backbone sees: the tile, or the whole input; its grid is the model's positions."""
        return self.tile or self.input_size

    @property
    def stride(self) -> tuple[int, int] | None:
        """The tiles' stride (the tile's size unless given), None for an untiled model."""
        return (self.tile_stride or self.tile) if self.tile else None

    def stored(self) -> dict[str, Any]:
        """The settings as model files hold them: plain lists and strings, which torch.load(weights_only) reads."""
        return {key: list(v) if isinstance(v, tuple) else v.value if isinstance(v, StrEnum) else v
                for key, v in asdict(self).items()}
