"""VisA (`--dataset visa`), read in place through its official 1-class split.

As distributed::

    <dataroot>/split_csv/1cls.csv        object,split,label,image,mask (paths relative to dataroot)
    <dataroot>/<category>/Data/Images/Normal/NNNN.JPG
    <dataroot>/<category>/Data/Images/Anomaly/NNN.JPG
    <dataroot>/<category>/Data/Masks/Anomaly/NNN.png   (defect pixels non-zero)

12 categories (candle, capsules, cashew, chewinggum, fryum, macaroni1, macaroni2, pcb1..pcb4,
pipe_fryum). Train on the `train` rows (all `normal`), test on the `test` rows. Images (about
1500 x 1000 to 2000 x 1000) are resized to 256 x 256 like MVTec AD unless `--image-size`.
"""
from __future__ import annotations

import csv
from pathlib import Path

from common import UserError
from datasets.options import DataOptions
from datasets.samples import Sample, Splits
from datasets.spec import DatasetSpec

SPLIT_FILE = Path("split_csv") / "1cls.csv"
COLUMNS = ("object", "split", "label", "image", "mask")


def read_split(root: Path) -> list[dict[str, str]]:
    path = Path(root) / SPLIT_FILE
    if not path.is_file():
        raise UserError(f"VisA split file {path} not found; --dataroot must be the VisA folder holding "
                        f"{SPLIT_FILE} (as distributed)")
    with open(path, newline="", encoding="utf-8-sig") as f:  # a spreadsheet may have saved it with a BOM
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"VisA split file {path} lacks the columns {', '.join(missing)}; "
                            f"expected {','.join(COLUMNS)}")
        rows = list(reader)
    for i, row in enumerate(rows, start=2):
        if row["split"] not in ("train", "test") or row["label"] not in ("normal", "anomaly"):
            raise UserError(f"VisA split file {path} line {i}: split {row['split']!r} / label {row['label']!r}; "
                            "expected train|test and normal|anomaly")
    return rows


def categories(root: Path | None, options: DataOptions) -> list[str]:
    assert root is not None  # needs_root: train.py refuses to run without the dataset folder
    return sorted({row["object"] for row in read_split(root)})


def existing(root: Path, relative: str, what: str) -> Path:
    path = Path(root) / relative
    if not relative or not path.is_file():
        raise UserError(f"VisA {what} {path} listed in {Path(root) / SPLIT_FILE} not found; re-extract VisA there")
    return path


def load(root: Path | None, category: str, options: DataOptions) -> Splits:
    assert root is not None  # needs_root: train.py refuses to run without the dataset folder
    rows = [row for row in read_split(root) if row["object"] == category]
    if not rows:
        raise UserError(f"no category {category!r} in {Path(root) / SPLIT_FILE} (found: "
                        f"{', '.join(categories(root, options))})")
    train: list[Sample] = []
    test: list[Sample] = []
    for row in rows:
        image = existing(root, row["image"], "image")
        if row["label"] == "normal":
            (train if row["split"] == "train" else test).append(Sample(image))
        elif row["split"] == "train":
            raise UserError(f"VisA split file {Path(root) / SPLIT_FILE} puts anomaly {row['image']} in train; "
                            "use the official 1cls.csv")
        else:
            test.append(Sample(image, existing(root, row["mask"], "mask"), 1, "anomaly"))
    if not train or not test:
        raise UserError(f"VisA {category}: {len(train)} train and {len(test)} test rows in "
                        f"{Path(root) / SPLIT_FILE}; use the official 1cls.csv")
    return Splits(train=train, test=test)


DATASET = DatasetSpec(name="visa", title="VisA", categories=categories, load=load, order=4,
                      env_var="VISA_DATA", folder_name="VisA")
