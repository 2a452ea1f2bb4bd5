"""MPDD, the Metal Parts Defect Detection set (`--dataset mpdd`): MVTec AD's layout and protocol::

    <dataroot>/<category>/train/good, test/<defect>, ground_truth/<defect>/NNN_mask.png

Its six categories are listed by name (other folders under the root are ignored); loading is
MVTec AD's (datasets/mvtec.py). 256 x 256 unless `--image-size`.
"""
from __future__ import annotations

from pathlib import Path

from common import UserError
from datasets import mvtec
from datasets.options import DataOptions
from datasets.samples import Splits
from datasets.spec import DatasetSpec

CATEGORIES = ("bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes")


def categories(root: Path | None, options: DataOptions) -> list[str]:
    assert root is not None  # needs_root: train.py refuses to run without the dataset folder
    found = [c for c in CATEGORIES if (Path(root) / c / "train" / "good").is_dir()]
    if not found:
        raise UserError(f"no MPDD category under {root}: expected {Path(root) / CATEGORIES[0] / 'train' / 'good'} "
                        f"(categories {', '.join(CATEGORIES)})")
    return found


def load(root: Path | None, category: str, options: DataOptions) -> Splits:
    if category not in CATEGORIES:
        raise UserError(f"MPDD has no category {category!r}; its categories are {', '.join(CATEGORIES)}")
    return mvtec.load(root, category, options)


DATASET = DatasetSpec(name="mpdd", title="MPDD", categories=categories, load=load, order=7,
                      env_var="MPDD_DATA", folder_name="MPDD")
