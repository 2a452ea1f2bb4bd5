"""What a fitted model is: the settings stored in its file and needed to rebuild and score it.

Their defaults are the method's defaults everywhere: train.py's flags, the run and data options and the
Python API read them from here (this module imports nothing, so torch-free code may read it too)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    backbone: str = "wide_resnet50_2"
    k: int = 300  # the default backbone's row's k (models/backbone.py)
    approx: str = "ortho"
    seed: int = 1111
    image_size: tuple[int, int] = (256, 256)  # (H, W) images are resized to
    crop: tuple[int, int] | None = None  # centre crop after resizing: the network's input size
    eps: float = 0.01
    unbiased: bool = False
    sigma: float = 4.0
    backbone_dtype: str = "float32"  # or "bfloat16": the backbone alone runs in it; W, statistics stay float32
    protocol: str = "standard"  # image pipeline (datasets/transforms.py); files older than it were standard
    layers: tuple[int, ...] = (1, 2, 3)  # stages tapped as x (ablation; files without it used all three)
    pre_relu: bool = False  # ResNets: tap each stage before its final ReLU (ablation)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.crop or self.image_size
