"""Recall per defect type at the calibrated threshold, at the images' own resolution: predict.py's masks
(`<name>_mask.png`, pixels above the model's pixel threshold) against the ground truth of a category in
MVTec AD's layout. For the synthetic `sheet` category the defect types are the scratch widths.

    python predict.py --model runs/e/synthetic/sheet/model.pt --input CATEGORY/test --out predictions/
    python tools/defect_recall.py --category CATEGORY --predictions predictions/

Prints a Markdown table: per defect type the images, the defect pixels, the share of them flagged
(pixel recall) and the share of defects with at least one flagged pixel; then the share of pixels
flagged on the defect-free test images (the false alarms at that threshold).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import _root  # noqa: F401  # the repository on sys.path
import numpy as np

from common import UserError, run_cli
from datasets.readers import list_images, read_mask


def flagged(predictions: Path, relative: Path) -> np.ndarray:
    path = predictions / relative.parent / f"{relative.stem}_mask.png"
    if not path.is_file():
        raise UserError(f"no prediction {path}; run predict.py with --input <category>/test --out {predictions}")
    return np.asarray(read_mask(path)) > 0


def recall_rows(category: Path, predictions: Path) -> list[tuple[str, int, int, float, float]]:
    """(defect, images, defect pixels, pixel recall, share of defects found) per defect type, sorted."""
    rows = []
    for folder in sorted(p for p in (category / "ground_truth").iterdir() if p.is_dir()):
        hits = pixels = found = images = 0
        for truth in list_images(folder):
            stem = truth.stem.removesuffix("_mask")
            defect = np.asarray(read_mask(truth)) > 0
            mask = flagged(predictions, Path(folder.name) / stem)
            if mask.shape != defect.shape:
                raise UserError(f"{truth} is {defect.shape} but its prediction is {mask.shape}")
            hits, pixels = hits + int((mask & defect).sum()), pixels + int(defect.sum())
            found, images = found + bool((mask & defect).any()), images + 1
        rows.append((folder.name, images, pixels, hits / max(pixels, 1), found / max(images, 1)))
    return rows


def false_alarms(category: Path, predictions: Path) -> float:
    """The share of pixels flagged on the defect-free test images."""
    masks = [flagged(predictions, Path("good") / p.stem) for p in list_images(category / "test" / "good")]
    return float(np.mean([m.mean() for m in masks])) if masks else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--category", required=True, help="the category folder (train/, test/, ground_truth/)")
    p.add_argument("--predictions", required=True, help="predict.py's --out for <category>/test")
    args = p.parse_args(argv)
    category, predictions = Path(args.category), Path(args.predictions)
    if not (category / "ground_truth").is_dir():
        raise UserError(f"--category {category} has no ground_truth/ folder; pass a category in MVTec AD's layout")
    print("| defect | images | defect pixels | pixel recall | defects found |")
    print("|---|---|---|---|---|")
    for defect, images, pixels, recall, found in recall_rows(category, predictions):
        print(f"| {defect} | {images} | {pixels} | {recall:.3f} | {found:.2f} |")
    print(f"\nflagged on defect-free test images: {false_alarms(category, predictions):.4f} of their pixels")
    return 0


if __name__ == "__main__":
    run_cli(main)
