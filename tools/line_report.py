"""What a fitted model does on a category's test split at its calibrated thresholds, as a line would see
it: false alarms on the good images beside alpha, and the regions on the defects.

    python predict.py --model MODEL --input CATEGORY/test --out PRED
    python tools/line_report.py --model MODEL --category CATEGORY --predictions PRED

CATEGORY in MVTec AD's layout (test/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png). Prints
Markdown: the share of good test images flagged (false alarms) beside alpha and what the calibration
promises, (n + 1 - r) / (n + 1); the same averaged over --splits random calibration/test splits of the
pooled normal scores (the model's n calibration scores and the good test images'), as the guarantee is
stated (over the draw of the calibration images); then per defect type the defect regions (8-connected
components of the ground truth) and how many a predicted box touches (region recall), and the boxes on
the good images.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import _root  # noqa: F401  # the repository on sys.path
import numpy as np
import torch
from scipy import ndimage

from common import UserError, csv_text, run_cli
from datasets.readers import read_mask
from pipeline.regions import EIGHT


def read_predictions(folder: Path, test: Path) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """predict.py's rows and regions, by the image's path under `test` (defect/stem)."""
    def key(path: str) -> str:
        return Path(path).resolve().relative_to(test.resolve()).with_suffix("").as_posix()

    for name in ("predictions.csv", "regions.jsonl"):
        if not (folder / name).is_file():
            raise UserError(f"--predictions {folder} has no {name}; run predict.py --input <category>/test "
                            f"--out {folder}")
    rows = {key(csv_text(r["path"])): r for r in csv.DictReader(open(folder / "predictions.csv", encoding="utf-8"))}
    lines = [json.loads(line) for line in (folder / "regions.jsonl").read_text(encoding="utf-8").splitlines()]
    return rows, {key(line["path"]): line["regions"] for line in lines}


def hits(truth: np.ndarray, boxes: list[dict]) -> tuple[int, int, int]:
    """(defect regions, those a box touches, boxes touching no defect pixel)."""
    labels, count = ndimage.label(truth, structure=EIGHT)
    touched: set[int] = set()
    stray = 0
    for region in boxes:
        left, top, right, bottom = region["box"]
        inside = set(np.unique(labels[top:bottom, left:right]).tolist()) - {0}
        touched |= inside
        stray += not inside
    return count, len(touched), stray


def random_splits(pool: np.ndarray, n: int, rank: int, splits: int, seed: int) -> tuple[float, float]:
    """Mean false-alarm rate and its standard error over random splits: n calibration scores, whose rank-th
    smallest is the threshold (the model's conformal rank), the rest tested."""
    rng = np.random.default_rng(seed)
    rates = np.empty(splits)
    for i in range(splits):
        order = rng.permutation(len(pool))
        threshold = np.sort(pool[order[:n]])[rank - 1]
        rates[i] = (pool[order[n:]] > threshold).mean()
    return float(rates.mean()), float(rates.std(ddof=1) / np.sqrt(splits))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the model.pt predict.py scored with")
    p.add_argument("--category", required=True, help="the category folder (test/, ground_truth/)")
    p.add_argument("--predictions", required=True, help="predict.py's --out for <category>/test")
    p.add_argument("--splits", type=int, default=2000, help="random calibration/test splits (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    category, folder = Path(args.category), Path(args.predictions)
    calibration = torch.load(args.model, map_location="cpu", weights_only=True).get("calibration") or {}
    if calibration.get("rule") != "conformal" or not calibration.get("finite"):
        raise UserError(f"--model {args.model} has no conformal calibration; recalibrate it with tools/recalibrate.py")
    rows, regions = read_predictions(folder, category / "test")
    good = [k for k in rows if k.startswith("good/")]
    if not good:
        raise UserError(f"--predictions {folder} has no test/good images")
    scores = np.array([float(rows[k]["image_score"]) for k in good])
    calibrated = calibration["scores"].numpy()
    n, alpha = len(calibrated), float(calibration["alpha"])
    threshold = float(json.loads((folder / "summary.json").read_text())["image_threshold"])
    r = int((calibrated <= threshold).sum())
    flagged = int((scores > threshold).sum())
    mean, se = random_splits(np.r_[calibrated, scores], n, int(calibration["rank"]), args.splits, args.seed)
    print("| alpha | calibration images | good test images | flagged | false-alarm rate | promised at most "
          f"| over {args.splits} random splits (mean, s.e.) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {alpha:.3g} | {n} | {len(good)} | {flagged} | {flagged / len(good):.3f} | {(n + 1 - r) / (n + 1):.3f} "
          f"| {mean:.3f} ({se:.3f}) |")
    print("\n| defect | images | defect regions | touched by a box | region recall | boxes touching no defect |")
    print("|---|---|---|---|---|---|")
    for truth_folder in sorted(p for p in (category / "ground_truth").iterdir() if p.is_dir()):
        images = regions_found = touched = stray = 0
        for mask in sorted(truth_folder.glob("*")):
            key = f"{truth_folder.name}/{mask.stem.removesuffix('_mask')}"
            if key not in regions:
                raise UserError(f"no prediction for test/{key}; predict all of {category / 'test'}")
            count, hit, missed = hits(np.asarray(read_mask(mask)) > 0, regions[key])
            images, regions_found, touched, stray = images + 1, regions_found + count, touched + hit, stray + missed
        print(f"| {truth_folder.name} | {images} | {regions_found} | {touched} | {touched / max(regions_found, 1):.2f} "
              f"| {stray} |")
    boxes = [len(regions[k]) for k in good]
    print(f"\ngood test images: {np.mean(boxes):.3f} boxes per image, {np.mean(np.array(boxes) > 0):.3f} with a box")
    return 0


if __name__ == "__main__":
    run_cli(main)
