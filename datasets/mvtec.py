"""MVTec AD as distributed: <root>/<category>/{train/good, test/<defect>, ground_truth/<defect>/NNN_mask.png}."""
from __future__ import annotations

from pathlib import Path

from common import UserError
from datasets.readers import list_images
from datasets.samples import Sample, Splits
from datasets.spec import CenterCrop, DatasetSpec, PaperPipeline, Resize


def categories(root: Path | None, args=None) -> list[str]:
    """Every folder of `root` that has train/good, sorted."""
    assert root is not None  # needs_root: train.py refuses to run without the dataset folder
    return sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())


def load(root: Path | None, category: str, args=None) -> Splits:
    assert root is not None  # needs_root: train.py refuses to run without the dataset folder
    folder = root / category
    if not (folder / "train" / "good").is_dir():
        found = ", ".join(categories(root)) or "none"
        raise UserError(f"no category '{category}' under {root} (found: {found}); check --category and --dataroot")
    train = [Sample(path) for path in list_images(folder / "train" / "good")]
    if not train:
        raise UserError(f"no training images in {folder / 'train' / 'good'}; add defect-free images there")
    test: list[Sample] = []
    test_root = folder / "test"
    if not test_root.is_dir():
        raise UserError(f"no test folder {test_root}; MVTec AD categories have test/good and test/<defect>")
    for defect_dir in sorted(p for p in test_root.iterdir() if p.is_dir()):
        defect = defect_dir.name
        for path in list_images(defect_dir):
            if defect == "good":
                test.append(Sample(path))
                continue
            mask = folder / "ground_truth" / defect / f"{path.stem}_mask.png"
            if not mask.is_file():
                raise UserError(f"defect image {path} has no mask {mask}; restore the ground_truth folder")
            test.append(Sample(path, mask, 1, defect))
    if not test:
        raise UserError(f"no test images under {test_root}")
    return Splits(train=train, test=test)


def paper_steps(size: tuple[int, int]) -> tuple[Resize | CenterCrop, ...]:
    """Resize(1.25 S) [320] of the shorter side, Resize(S) [256], CenterCrop(S): the authors' MVTec AD transforms."""
    side = size[0]
    return Resize(round(side * 1.25)), Resize(side), CenterCrop(side)


DATASET = DatasetSpec(
    name="mvtecad", title="MVTec AD", categories=categories, load=load, order=0,
    paper=PaperPipeline(steps=paper_steps, mask_rule="imagenet", image_mode="RGB", mask_mode="RGB",
                        peak_floor=153, cut="above 152.9 of 255",  # 0.485 + 0.5 x 0.229 after Normalize
                        square="the authors' Resize(320), Resize(256), CenterCrop(256)"),
    env_var="MVTEC_DATA", folder_name="MVTec_AD", sweep_args=())  # script/run_mvtecad.sh passes --category
