"""The settings of one train.py run, typed: what the pipeline reads instead of the argparse namespace."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunOptions:
    """Resolved settings. With `resume`, a None backbone/k/approx/seed/size means "as stored in the file"."""
    dataset: str
    report: Path
    backbone: str | None = "wide_resnet50_2"
    weights: str = "imagenet"
    approx: str | None = "ortho"
    k: int | None = None
    eps: float | None = None  # None: the dataset's protocol value
    unbiased: bool = False
    seed: int | None = 1111
    image_size: tuple[int, int] | None = None  # None: the dataset's protocol size
    crop: tuple[int, int] | None = None
    backbone_dtype: str | None = "float32"
    resume: Path | None = None
    val_fpr: float = 0.01
    fpr: float = 0.3
    nsamples: int = 1000
    overwrite: bool = False
    save_model: bool = True  # False (--no-save-model): scores, metrics and the report only
    embed_backbone: bool = False  # ImageNet weights stored in model.pt rather than named (--embed-backbone)
    metric: str = "auproc"  # the headline; fpr also computes paper_fpr
    label: str = ""  # free tag, stored in metrics.json and results.csv
    layers: tuple[int, ...] | None = (1, 2, 3)
    pre_relu: bool | None = False
    verbose: bool = False
