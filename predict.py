"""Run a fitted model on new images: heat maps, overlays, binary masks and predictions.csv.

    python predict.py --model runs/exp/mvtecad/carpet/model.pt --input new_images/ --out predictions/

For every image it writes <name>_heatmap.png, <name>_overlay.png and <name>_mask.png at the image's
original size, where <name> is the image's path relative to --input (or to the glob's common folder)
without its suffix, so sub/a.png gives sub/a_heatmap.png; images that would share a name (a.png and
a.jpg) keep their suffix (a.png_heatmap.png), and a last tie gets ~2, ~3. No existing file in --out
is replaced without --overwrite, and none is written until every output name was checked. The mask
marks pixels scoring above the pixel threshold calibrated on the normal validation images at fit
time (or --threshold). predictions.csv has one row per image: path, image_score, is_anomalous (image
score above the image threshold), anomalous_area (fraction of pixels in the mask). Unreadable files
are reported and skipped; the exit code is then 1. `--model model.onnx` (tools/export.py) runs the
same graph with onnxruntime instead of torch (pip install onnxruntime) and writes the same outputs.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from common import UserError, atomic_write, one_line, run_cli
from datasets.base import IMAGE_SUFFIXES, ImageDataset, Sample, center_crop_box, read_image
from datasets.listing import glob_files
from datasets.transforms import PAPER_DATASETS, covered_box
from models import SemiOrthogonal


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt written by train.py, or its ONNX export (.onnx)")
    p.add_argument("--input", required=True, help="an image, a folder (searched recursively) or a quoted glob")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--threshold", type=float, default=None, help="pixel threshold (default: the calibrated one)")
    p.add_argument("--image-threshold", type=float, default=None, help="image threshold (default: calibrated)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--overwrite", action="store_true", help="write into an --out folder that has predictions")
    return p.parse_args(argv)


def find_images(spec: str) -> list[Path]:
    path = Path(spec)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.is_file():
        found = [path]
    else:
        found = glob_files(spec)  # glob.glob's matches, without looping through a link to a parent folder
    if not found:
        raise UserError(f"--input {spec}: no image files found")
    return found


class PredictDataset(ImageDataset):
    """ImageDataset that reports an unreadable file instead of stopping the run."""

    def __getitem__(self, index: int) -> dict:
        try:
            item = super().__getitem__(index)
            item["error"] = ""
        except UserError as error:
            item = {"image": torch.zeros(3, *self.output_size),
                    "mask": torch.zeros(self.output_size, dtype=torch.uint8),
                    "label": 0, "index": index, "error": str(error)}
        return item


def to_original_size(score_map: np.ndarray, model: SemiOrthogonal, size: tuple[int, int]) -> np.ndarray:
    """Maps an input-size score map back onto the original (H, W); outside a centre crop (and, under the
    paper's MVTec AD pipeline, outside the centre square of a non-square image) scores are 0."""
    config = model.config
    top, left, h, w = center_crop_box(config.image_size, config.crop)
    full = np.zeros(config.image_size, dtype=np.float32)
    full[top:top + h, left:left + w] = score_map
    top, left, h, w = covered_box(model.meta.get("dataset", ""), config.protocol, size)
    resized = F.interpolate(torch.from_numpy(full)[None, None], size=(h, w), mode="bilinear", align_corners=False)
    original = np.zeros(size, dtype=np.float32)
    original[top:top + h, left:left + w] = resized[0, 0].numpy()
    return original


def colour(score_map: np.ndarray, low: float, high: float) -> np.ndarray:
    import matplotlib

    normalised = np.clip((score_map - low) / max(high - low, 1e-12), 0, 1)
    return (matplotlib.colormaps["jet"](normalised)[..., :3] * 255).astype(np.uint8)


def save_png(array: np.ndarray, path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


def output_names(paths: list[Path], spec: str) -> list[str]:
    """Each image's output name: its path relative to the input folder, without the suffix; unique
    also on case-insensitive file systems, and stable for a given set of inputs (they come sorted)."""
    base = spec if Path(spec).is_dir() else os.path.commonpath([os.path.abspath(p.parent) for p in paths])
    relative = [Path(os.path.relpath(os.path.abspath(p), os.path.abspath(base))) for p in paths]
    stems = [r.with_suffix("").as_posix() for r in relative]
    counts = Counter(stem.casefold() for stem in stems)
    preferred = [r.as_posix() if counts[stem.casefold()] > 1 else stem for r, stem in zip(relative, stems)]
    reserved = {name.casefold() for name in preferred}
    names: list[str] = []
    used: set[str] = set()
    for name in preferred:
        candidate, n = name, 1
        while candidate.casefold() in used or (n > 1 and candidate.casefold() in reserved):
            n += 1
            candidate = f"{name}~{n}"  # only A.PNG beside a.png gets here
        used.add(candidate.casefold())
        names.append(candidate)
    return names


def output_paths(out: Path, name: str) -> dict[str, Path]:
    return {kind: out / f"{name}_{kind}.png" for kind in ("heatmap", "overlay", "mask")}


def check_outputs(out: Path, names: list[str], overwrite: bool) -> None:
    """Refuses before any image is decoded when a planned output exists (without --overwrite) or cannot be written."""
    planned = [out / "predictions.csv"] + [p for name in names for p in output_paths(out, name).values()]
    for path in planned:
        blocking = [parent for parent in path.parents if out in parent.parents and parent.exists()
                    and not parent.is_dir()]
        if blocking or path.is_dir():
            raise UserError(f"--out {out}: {blocking[0] if blocking else path} is in the way of {path.name}; "
                            "move it or pass another --out")
    existing = [path for path in planned if path.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more files this run would write)" if len(existing) > 1 else ""
        raise UserError(f"--out {out} already holds {existing[0].relative_to(out).as_posix()}{more}; "
                        "pass --overwrite or another --out")


def load_model(path: str, device: torch.device) -> SemiOrthogonal:
    """model.pt, or a model.onnx from tools/export.py run by onnxruntime (optional: imported only then)."""
    if Path(path).suffix.lower() == ".onnx":
        from onnx_model import OnnxScorer

        return OnnxScorer(path, device)  # config, thresholds and predict(), as SemiOrthogonal
    return SemiOrthogonal.load(path, device)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} must be at least 1")
    if args.workers < 0:
        raise UserError(f"--workers {args.workers} must be at least 0")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder for the outputs")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and device.type != "cuda":
        raise UserError("--device cuda: no CUDA device is available")
    model = load_model(args.model, device)
    pixel_threshold = args.threshold if args.threshold is not None else model.thresholds.get("pixel")
    image_threshold = args.image_threshold if args.image_threshold is not None else model.thresholds.get("image")
    if pixel_threshold is None or image_threshold is None:
        raise UserError(f"{args.model} has no calibrated thresholds (fitted without validation images or merged); "
                        "pass --threshold and --image-threshold")
    dataset_name = model.meta.get("dataset", "")
    if model.config.protocol == "paper" and dataset_name not in PAPER_DATASETS:
        raise UserError(f"{args.model} was fitted with --protocol paper but names no paper dataset "
                        f"({dataset_name or 'none'}); refit it with train.py")
    paths = find_images(args.input)
    names = output_names(paths, args.input)
    check_outputs(out, names, args.overwrite)  # before any image is decoded or any file written
    dataset = PredictDataset([Sample(p) for p in paths], model.config.image_size, model.config.crop,
                             model.config.protocol, dataset_name)  # the pipeline the model was fitted with
    data = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    # the colour scale puts the pixel threshold in the middle, anchored at the normal median
    low = model.thresholds.get("val_pixel_median", 0.0)
    high = 2 * pixel_threshold - low
    rows, failures = [], 0
    from tqdm import tqdm

    with tqdm(total=len(paths), unit="img", disable=None, file=sys.stderr) as progress:
        for batch in data:
            maps, scores = model.predict(batch["image"])
            for i, index in enumerate(batch["index"].tolist()):
                progress.update(1)
                path = paths[index]
                if batch["error"][i]:
                    failures += 1
                    print(f"skipped: {one_line(UserError(batch['error'][i]))}", file=sys.stderr)
                    continue
                original = read_image(path)
                score_map = to_original_size(maps[i].float().cpu().numpy(), model, (original.height, original.width))
                mask = score_map > pixel_threshold
                heat = colour(score_map, low, high)
                overlay = (0.55 * np.asarray(original) + 0.45 * heat).astype(np.uint8)
                files = output_paths(out, names[index])
                save_png(heat, files["heatmap"])
                save_png(overlay, files["overlay"])
                save_png(mask.astype(np.uint8) * 255, files["mask"])
                score_value = float(scores[i])
                rows.append({"path": str(path), "image_score": f"{score_value:.6f}",
                             "is_anomalous": int(score_value > image_threshold),
                             "anomalous_area": f"{mask.mean():.6f}"})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["path", "image_score", "is_anomalous", "anomalous_area"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "predictions.csv", lambda tmp: Path(tmp).write_text(buffer.getvalue()))
    flagged = sum(r["is_anomalous"] for r in rows)
    print(f"{len(rows)} images scored, {flagged} anomalous; {failures} unreadable; results: {out / 'predictions.csv'}")
    return 1 if failures else 0


if __name__ == "__main__":
    run_cli(main)
