"""BTAD, the beanTech anomaly detection set (`--dataset btad`), as distributed::

    <dataroot>/01/train/ok/*.bmp   test/ok/*.bmp   test/ko/*.bmp   ground_truth/ko/*.png
    <dataroot>/02/... .png images, .png masks;  <dataroot>/03/... .bmp images, .bmp masks

Three products, 01, 02 and 03. A defective image's mask has its stem and any image extension.
Fit on train/ok (every 10th held out for calibration), test on test/ok and test/ko. 256 x 256
unless `--image-size`.
"""
from __future__ import annotations

from pathlib import Path

from common import UserError
from datasets.options import DataOptions
from datasets.readers import list_images
from datasets.samples import Sample, Splits
from datasets.spec import DatasetSpec


def categories(root: Path | None, options: DataOptions) -> list[str]:
    assert root is not None  # needs_root: train.py refuses to run without the dataset folder
    found = sorted(p.name for p in Path(root).iterdir() if (p / "train" / "ok").is_dir())
    if not found:
        raise UserError(f"no BTAD product under {root}: expected {Path(root) / '01' / 'train' / 'ok'} (01, 02, 03)")
    return found


def images(path: Path, what: str) -> list[Path]:
    if not path.is_dir():
        raise UserError(f"BTAD folder {path} not found; it holds the {what} (re-extract the product)")
    listed = list_images(path)
    if not listed:
        raise UserError(f"BTAD folder {path} holds no images; it should hold the {what}")
    return listed


def load(root: Path | None, category: str, options: DataOptions) -> Splits:
    assert root is not None  # needs_root: train.py refuses to run without the dataset folder
    folder = Path(root) / category
    if not (folder / "train" / "ok").is_dir():
        raise UserError(f"no BTAD product {category!r}: {folder / 'train' / 'ok'} not found; check --category "
                        "and --dataroot")
    train = [Sample(p) for p in images(folder / "train" / "ok", "defect-free training images")]
    test = [Sample(p) for p in images(folder / "test" / "ok", "defect-free test images")]
    truth = folder / "ground_truth" / "ko"
    masks = {p.stem: p for p in list_images(truth)} if truth.is_dir() else {}
    for image in images(folder / "test" / "ko", "defective test images"):
        if image.stem not in masks:
            raise UserError(f"defective image {image} has no mask {truth / image.stem}.png (or .bmp); "
                            "restore ground_truth/ko")
        test.append(Sample(image, masks[image.stem], 1, "ko"))
    return Splits(train=train, test=test)


DATASET = DatasetSpec(name="btad", title="BTAD", categories=categories, load=load, order=6,
                      env_var="BTAD_DATA", folder_name="BTech_Dataset_transformed")
