"""Run a fitted model on new images: heat maps, overlays, masks, predictions.csv and regions.jsonl.

    python predict.py --model runs/exp/mvtecad/carpet/model.pt --input new_images/ --out predictions/

For every image it writes <name>_heatmap.png, <name>_overlay.png and <name>_mask.png at the image's
original size, where <name> is the image's path relative to --input (or to the glob's common folder)
without its suffix, so sub/a.png gives sub/a_heatmap.png; images that would share a name (a.png and
a.jpg) keep their suffix (a.png_heatmap.png), and a last tie gets ~2, ~3. A name too long for the
file system stops the run before any image is decoded. The mask marks pixels scoring above the pixel
threshold calibrated on normal images (train.py's validation images, or tools/recalibrate.py's; or
--threshold); the overlay boxes each region on the image, with a colour bar (thresholds marked) to its
right and the score, verdict and p-value below.
predictions.csv has one row per image: path, image_score, is_anomalous (image score above the image
threshold), anomalous_area (fraction of pixels in the mask), p_value (its conformal p-value against the
calibration images' scores: (1 + #{s_i >= s}) / (n + 1); empty for a model without them) and n_regions;
it is UTF-8, a name's bytes that are not UTF-8 are written as \\xNN, and a cell a spreadsheet would run
as a formula (=, +, -, @) starts with a quote. regions.jsonl has one JSON line per image: path,
image_score, is_anomalous, p_value and its regions (8-connected, at the pixel threshold, at least
--min-area pixels): box [left, top, right, bottom] in pixels of the original image (right and bottom
exclusive), area in pixels, max and mean score. summary.json compares the run with what the calibration
promises (pipeline/drift.py): the fraction flagged against the false-alarm rate of normal parts, and the
uniformity of the unflagged images' p-values; a drift warning says when the line no longer looks like the
calibration (a lighting change, a new camera, or many defects).
Unreadable files are reported and skipped; the exit code is then 1. `--model model.onnx`
(tools/export.py) runs the same graph with onnxruntime instead of torch, `--runtime openvino` with OpenVINO
on the CPU (pip install -r requirements-export.txt).

--out is written whole or not at all: the files go into a hidden folder beside it, which replaces
--out only once every file is complete, so a failed, killed or concurrent run leaves no partial
outputs (a killed run's leftovers are removed by the next run) and of two runs into one --out the
second is refused. An --out with earlier predictions is replaced only with --overwrite; one holding
files predict.py does not write is never replaced. Files inside --out are never read as inputs.

--watch DIR instead of --input scores images as they arrive in DIR (a file renamed into place at once,
one written in place once its size is stable for --settle seconds) until Ctrl-C or SIGTERM, and --out is
appended to, image by image, instead of written whole: each image's files, then its regions line, then
its row, each line whole and fsync'ed, so a kill loses at most the image being written and a restart
scores it again and no other (an image is known by its path; names keep their suffix, sub/a.png gives
sub/a.png_heatmap.png). A bad file is reported and skipped. summary.json covers the --drift-window most
recent images. A throughput line ends the run (and comes every 10 s on stderr while images arrive).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from common import UserError, one_line, os_error_line, printable, run_cli, write_json
from models import SemiOrthogonal
from models.blocks import BlockedStats
from pipeline import outputs, progress
from pipeline.budget import parse_bytes
from pipeline.predict_files import (
    CSV_NAME,
    REGIONS_NAME,
    SUMMARY_NAME,
    check_names,
    claim,
    output_folder,
    output_names,
    write_csv,
    write_regions,
)
from pipeline.predict_images import check_pipeline, find_images, rows_per_block
from pipeline.predict_score import Judge, Result, Skipped, judge_of, note_uncalibrated, run_summary, score_images
from pipeline.predict_watch import watch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt written by train.py, or its ONNX export (.onnx)")
    p.add_argument("--input", default=None, help="an image, a folder (searched recursively) or a quoted glob")
    p.add_argument("--watch", default=None, metavar="DIR",
                   help="instead of --input: score images as they arrive in DIR until Ctrl-C or SIGTERM (see above)")
    p.add_argument("--out", required=True, help="output folder, written whole (see above; --watch: appended to)")
    p.add_argument("--threshold", type=float, default=None, help="pixel threshold (default: the calibrated one)")
    p.add_argument("--image-threshold", type=float, default=None, help="image threshold (default: calibrated)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--runtime", choices=["onnxruntime", "openvino"], default=None,
                   help="what runs an ONNX --model (default onnxruntime); openvino runs on the CPU")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="memory budget for a model fitted in blocks (model.sums beside model.pt), scored block "
                        "by block within it (default: the memory available, less 1 GiB)")
    p.add_argument("--min-area", type=int, default=1, metavar="PIXELS",
                   help="regions smaller than this (pixels of the original image) are left out of regions.jsonl, "
                        "n_regions and the overlay's boxes (default 1: every region)")
    p.add_argument("--settle", type=float, default=1.0, metavar="SECONDS",
                   help="--watch: a file not renamed into place is taken once its size is stable this long (default 1)")
    p.add_argument("--poll", type=float, default=0.25, metavar="SECONDS", help="--watch: time between looks (0.25)")
    p.add_argument("--drift-window", type=int, default=500, metavar="N",
                   help="--watch: summary.json's drift check over the N most recent images (default 500)")
    p.add_argument("--overwrite", action="store_true", help="replace an --out folder that holds predictions")
    p.add_argument("--quiet", action="store_true", help="no progress bar (there is none unless stderr is a terminal)")
    return p.parse_args(argv)


def check_flags(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} must be at least 1")
    if args.workers < 0:
        raise UserError(f"--workers {args.workers} must be at least 0")
    if args.min_area < 1:
        raise UserError(f"--min-area {args.min_area} must be at least 1 (pixels)")
    if (args.input is None) == (args.watch is None):
        raise UserError("pass --input (images to score now) or --watch (a folder to score as images arrive)")
    for flag, value in (("--settle", args.settle), ("--poll", args.poll)):
        if not (math.isfinite(value) and 0 <= value <= 3600):
            raise UserError(f"{flag} {value} must be between 0 and 3600 seconds")
    if args.watch is not None and not Path(args.watch).is_dir():
        raise UserError(f"--watch {printable(args.watch)} is not a folder; pass the folder new images arrive in")
    if args.drift_window < 1:
        raise UserError(f"--drift-window {args.drift_window} must be at least 1")
    if args.runtime is not None and Path(args.model).suffix.lower() != ".onnx":
        raise UserError(f"--runtime {args.runtime} runs an ONNX model (tools/export.py); --model "
                        f"{printable(args.model)} runs with torch: drop --runtime or pass the .onnx")
    if args.runtime == "openvino" and args.device == "cuda":
        raise UserError("--runtime openvino runs on the CPU: drop --device cuda, or use --runtime onnxruntime")
    if args.max_memory is not None:  # checked whatever the model, before it is read
        parse_bytes(args.max_memory)
    for flag, value in (("--threshold", args.threshold), ("--image-threshold", args.image_threshold)):
        # scores are distances: NaN or infinity would flag nothing (or everything) and flatten the colours
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UserError(f"{flag} {value} must be a finite number of at least 0 (a score is a distance)")


def load_model(path: str, device: torch.device, runtime: str | None = None) -> SemiOrthogonal:
    """model.pt, or a model.onnx from tools/export.py run by onnxruntime or OpenVINO (optional: imported only
    then). A model fitted in blocks keeps its sums in their file, to be scored block by block."""
    if Path(path).suffix.lower() == ".onnx":
        from onnx_model import scorer

        return scorer(path, device, runtime)  # config, thresholds and predict(), as SemiOrthogonal
    return SemiOrthogonal.load(path, device, sums_in_memory=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_flags(args)
    out = output_folder(args.out)
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and device.type != "cuda":
        raise UserError("--device cuda: no CUDA device is available")
    model = load_model(args.model, device, args.runtime)
    judge = judge_of(model, args.model, args.threshold, args.image_threshold, args.min_area)
    check_pipeline(model, args.model)
    if args.watch is not None:
        if isinstance(getattr(model, "stats", None), BlockedStats):
            raise UserError(f"{args.model} was fitted in blocks: --watch would read all of its sums for every "
                            "image; score it with --input")
        return watch(model, args.model, judge, Path(args.watch), out, args.settle, args.poll, args.drift_window,
                     args.batch_size, args.workers)
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
        results, failures = score_all(model, paths, names, staging, judge, args, block)
        write_csv(staging / CSV_NAME, [r.row() for r in results])
        write_regions(staging / REGIONS_NAME, [r.line() for r in results])
        found = run_summary(results, failures, judge, model)
        write_json(staging / SUMMARY_NAME, found)
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
    note_uncalibrated(judge, args.model)  # after the run: a failure stays one line
    if found["warning"]:
        print(f"warning: {found['warning']} (summary.json)", file=sys.stderr)
    flagged = sum(r.flagged for r in results)
    print(f"{len(results)} images scored, {flagged} anomalous; {failures} unreadable; "
          f"results: {printable(out / CSV_NAME)}")
    return 1 if failures else 0


def score_all(model: SemiOrthogonal, paths: list[Path], names: list[str], folder: Path, judge: Judge,
              args: argparse.Namespace, block: int | None) -> tuple[list[Result], int]:
    """Every image scored into `folder`, with a progress bar; (results, unreadable files)."""
    from tqdm import tqdm

    results, failures = [], 0
    with tqdm(total=len(paths), unit="img", disable=not progress.wanted(args.quiet), file=sys.stderr) as bar:
        for item in score_images(model, paths, names, folder, judge, args.batch_size, args.workers, block):
            bar.update(1)
            if isinstance(item, Skipped):
                failures += 1
                print(f"skipped: {one_line(UserError(item.error))}", file=sys.stderr)
            else:
                results.append(item)
    return results, failures


if __name__ == "__main__":
    run_cli(main)
