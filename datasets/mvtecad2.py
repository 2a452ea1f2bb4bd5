"""MVTec AD 2 (`--dataset mvtecad2`), as distributed::

    <dataroot>/<category>/train/good/*.png
    <dataroot>/<category>/validation/good/*.png
    <dataroot>/<category>/test_public/good/*.png
    <dataroot>/<category>/test_public/bad/*.png
    <dataroot>/<category>/test_public/ground_truth/bad/<name>_mask.png
    <dataroot>/<category>/test_private/, test_private_mixed/   (no masks published)

8 categories (can, fabric, fruit_jelly, rice, sheet_metal, vial, wallplugs, walnuts). Fit on
train/good; validation/good calibrates the thresholds (instead of every 10th training image); test on
test_public. The private test sets have no masks: score them with predict.py and submit the maps to
the benchmark server. 256 x 256 unless `--image-size`.
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
    found = sorted(p.name for p in Path(root).iterdir() if (p / "train" / "good").is_dir())
    if not found:
        raise UserError(f"no MVTec AD 2 category under {root}: expected {Path(root) / '<category>' / 'train' / 'good'}")
    return found


def folder_of(path: Path, what: str) -> list[Path]:
    if not path.is_dir():
        raise UserError(f"MVTec AD 2 folder {path} not found; it holds the {what} (re-extract the category)")
    listed = list_images(path)
    if not listed:
        raise UserError(f"MVTec AD 2 folder {path} holds no images; it should hold the {what}")
    return listed


def load(root: Path | None, category: str, options: DataOptions) -> Splits:
    assert root is not None  # needs_root: train.py refuses to run without the dataset folder
    folder = Path(root) / category
    if not (folder / "train" / "good").is_dir():
        raise UserError(f"no category {category!r}: {folder / 'train' / 'good'} not found; check --category "
                        "and --dataroot")
    train = [Sample(p) for p in folder_of(folder / "train" / "good", "training images")]
    val = [Sample(p) for p in folder_of(folder / "validation" / "good", "validation images")]
    public = folder / "test_public"
    test = [Sample(p) for p in folder_of(public / "good", "defect-free test images")]
    for image in folder_of(public / "bad", "defective test images"):
        mask = public / "ground_truth" / "bad" / f"{image.stem}_mask.png"
        if not mask.is_file():
            raise UserError(f"defective image {image} has no mask {mask}; restore test_public/ground_truth")
        test.append(Sample(image, mask, 1, "bad"))
    return Splits(train=train, test=test, val=val)


DATASET = DatasetSpec(name="mvtecad2", title="MVTec AD 2", categories=categories, load=load, order=5,
                      env_var="MVTEC2_DATA", folder_name="mvtec_ad_2")
