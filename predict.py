"""Run a fitted model on new images: heat maps, overlays, binary masks and predictions.csv.

    python predict.py --model runs/exp/mvtecad/carpet/model.pt --input new_images/ --out predictions/

For every image it writes <name>_heatmap.png, <name>_overlay.png and <name>_mask.png at the image's
original size, where <name> is the image's path relative to --input (or to the glob's common folder)
without its suffix, so sub/a.png gives sub/a_heatmap.png; images that would share a name (a.png and
a.jpg) keep their suffix (a.png_heatmap.png), and a last tie gets ~2, ~3. A name too long for the
file system stops the run before any image is decoded. The mask marks pixels scoring above the pixel
threshold calibrated on the normal validation images at fit time (or --threshold). predictions.csv
has one row per image: path, image_score, is_anomalous (image score above the image threshold),
anomalous_area (fraction of pixels in the mask); it is UTF-8, a name's bytes that are not UTF-8 are
written as \\xNN, and a cell a spreadsheet would run as a formula (=, +, -, @) starts with a quote.
Unreadable files are reported and skipped; the exit code is then 1. `--model model.onnx`
(tools/export.py) runs the same graph with onnxruntime instead of torch (pip install -r requirements-export.txt).

--out is written whole or not at all: the files go into a hidden folder beside it, which replaces
--out only once every file is complete, so a failed, killed or concurrent run leaves no partial
outputs (a killed run's leftovers are removed by the next run) and of two runs into one --out the
second is refused. An --out with earlier predictions is replaced only with --overwrite; one holding
files predict.py does not write is never replaced. Files inside --out are never read as inputs.
"""
from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import UserError, atomic_write, one_line, os_error_line, printable, run_cli
from datasets.base import Sample, read_image
from datasets.batch import loader
from models import SemiOrthogonal
from pipeline import outputs, progress
from pipeline.blocked import predict_batches
from pipeline.estimate import parse_bytes
from pipeline.predict_files import (
    CSV_NAME,
    check_names,
    claim,
    output_folder,
    output_names,
    output_paths,
    write_csv,
)
from pipeline.predict_images import PredictDataset, check_pipeline, find_images, rows_per_block, to_original_size


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt written by train.py, or its ONNX export (.onnx)")
    p.add_argument("--input", required=True, help="an image, a folder (searched recursively) or a quoted glob")
    p.add_argument("--out", required=True, help="output folder, written whole (see above)")
    p.add_argument("--threshold", type=float, default=None, help="pixel threshold (default: the calibrated one)")
    p.add_argument("--image-threshold", type=float, default=None, help="image threshold (default: calibrated)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="memory budget for a model fitted in blocks (model.sums beside model.pt), scored block "
                        "by block within it (default: the memory available, less 1 GiB)")
    p.add_argument("--overwrite", action="store_true", help="replace an --out folder that holds predictions")
    p.add_argument("--quiet", action="store_true", help="no progress bar (there is none unless stderr is a terminal)")
    return p.parse_args(argv)


def check_flags(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} must be at least 1")
    if args.workers < 0:
        raise UserError(f"--workers {args.workers} must be at least 0")
    if args.max_memory is not None:  # checked whatever the model, before it is read
        parse_bytes(args.max_memory)
    for flag, value in (("--threshold", args.threshold), ("--image-threshold", args.image_threshold)):
        # scores are distances: NaN or infinity would flag nothing (or everything) and flatten the colours
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UserError(f"{flag} {value} must be a finite number of at least 0 (a score is a distance)")


def colour(score_map: np.ndarray, low: float, high: float) -> np.ndarray:
    import matplotlib

    normalised = np.clip((score_map - low) / max(high - low, 1e-12), 0, 1)
    return (matplotlib.colormaps["jet"](normalised)[..., :3] * 255).astype(np.uint8)


def save_png(array: np.ndarray, path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


def load_model(path: str, device: torch.device) -> SemiOrthogonal:
    """model.pt, or a model.onnx from tools/export.py run by onnxruntime (optional: imported only then). A
    model fitted in blocks keeps its sums in their file, to be scored block by block."""
    if Path(path).suffix.lower() == ".onnx":
        from onnx_model import OnnxScorer

        return OnnxScorer(path, device)  # config, thresholds and predict(), as SemiOrthogonal
    return SemiOrthogonal.load(path, device, sums_in_memory=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_flags(args)
    out = output_folder(args.out)
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and device.type != "cuda":
        raise UserError("--device cuda: no CUDA device is available")
    model = load_model(args.model, device)
    pixel_threshold = args.threshold if args.threshold is not None else model.thresholds.get("pixel")
    image_threshold = args.image_threshold if args.image_threshold is not None else model.thresholds.get("image")
    if pixel_threshold is None or image_threshold is None:
        raise UserError(f"{args.model} has no calibrated thresholds (fitted without validation images or merged); "
                        "pass --threshold and --image-threshold")
    check_pipeline(model, args.model)
    paths = find_images(args.input, out)
    names = output_names(paths, args.input)
    block = rows_per_block(model, len(paths), args.model, out,
                           parse_bytes(args.max_memory) if args.max_memory is not None else None,
                           args.batch_size, args.workers)
    claim(out, args.overwrite)  # before any image is decoded or any file written
    staging = None
    try:
        staging = outputs.stage(out)
        check_names(staging, names, paths)
        rows, failures = score_into(staging, model, paths, names, (pixel_threshold, image_threshold), args,
                                     block)
        write_csv(staging / CSV_NAME, rows)
        outputs.commit(staging, out, args.overwrite, elsewhere="another --out", owned=None)
    except OSError as error:
        outputs.discard(staging)
        if os_error_line(error) is None:
            raise
        # name --out, not the hidden staging file that no longer exists
        raise OSError(error.errno, error.strerror, printable(out)) from None
    except BaseException:
        outputs.discard(staging)
        raise
    flagged = sum(r["is_anomalous"] for r in rows)
    print(f"{len(rows)} images scored, {flagged} anomalous; {failures} unreadable; "
          f"results: {printable(out / CSV_NAME)}")
    return 1 if failures else 0


def score_into(folder: Path, model: SemiOrthogonal, paths: list[Path], names: list[str],
               thresholds: tuple[float, float], args: argparse.Namespace, block: int | None = None
               ) -> tuple[list[dict], int]:
    """Scores every image, writing its three PNGs into `folder`; (CSV rows, unreadable files). `block`: a
    model fitted in blocks is scored in blocks of that many feature-map rows."""
    pixel_threshold, image_threshold = thresholds
    dataset = PredictDataset([Sample(p) for p in paths], model.config.image_size, model.config.crop,
                             model.config.protocol, model.meta.get("dataset", ""))  # as the model was fitted
    data = loader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    # the colour scale puts the pixel threshold in the middle, anchored at the normal median
    low = model.thresholds.get("val_pixel_median", 0.0)
    high = 2 * pixel_threshold - low
    rows, failures = [], 0
    from tqdm import tqdm

    with tqdm(total=len(paths), unit="img", disable=not progress.wanted(args.quiet), file=sys.stderr) as bar:
        for batch, maps, scores in predict_batches(model, data, folder, block):
            for i, index in enumerate(batch.index.tolist()):
                bar.update(1)
                path = paths[index]
                if batch.error[i]:
                    failures += 1
                    print(f"skipped: {one_line(UserError(batch.error[i]))}", file=sys.stderr)
                    continue
                original = read_image(path)
                score_map = to_original_size(maps[i].float().cpu().numpy(), model, (original.height, original.width))
                mask = score_map > pixel_threshold
                heat = colour(score_map, low, high)
                overlay = (0.55 * np.asarray(original) + 0.45 * heat).astype(np.uint8)
                files = output_paths(folder, names[index])
                save_png(heat, files["heatmap"])
                save_png(overlay, files["overlay"])
                save_png(mask.astype(np.uint8) * 255, files["mask"])
                score_value = float(scores[i])
                rows.append({"path": str(path), "image_score": f"{score_value:.6f}",
                             "is_anomalous": int(score_value > image_threshold),
                             "anomalous_area": f"{mask.mean():.6f}"})
    return rows, failures


if __name__ == "__main__":
    run_cli(main)
