"""New thresholds for a fitted model, without refitting:

    python tools/recalibrate.py MODEL --normal DIR [--alpha A] --out MODEL2
    python tools/recalibrate.py MODEL --normal DIR --rule f1 --defects DIR --masks DIR --out MODEL2

Scores normal images the model was not fitted on (a folder, searched recursively, a file or a quoted
glob) as train.py scores its validation images, and writes MODEL2: MODEL with the thresholds of that
calibration and its record (rule, alpha, n, the n image scores for predict.py's p-values, the date and
a digest of the calibration files). For a merged model (tools/merge_stats.py, which carries none), a
resumed one, or a line whose lighting or camera changed.

conformal (default): a new normal image from the same conditions as the calibration images is flagged
with probability at most --alpha (default 1 / (n + 1), their maximum); n must be at least
(1 - alpha) / alpha (99 for 0.01). f1: anomalib's F1-optimal thresholds on the normal images and the
defective --defects with their --masks (matched by stem, with or without _mask), for comparison: no
guarantee. An image the model was fitted on is refused (its recorded path, size and mtime).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import _root  # noqa: F401  # the repository on sys.path
import torch

from common import UserError, printable, run_cli
from datasets.base import Sample
from models.model_file import read_model_file, save_state
from pipeline.predict_images import find_images
from pipeline.recalibrate import check_enough, check_not_fitted, defect_samples, recalibrate, summary_line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model.pt written by train.py, tools/merge_stats.py or this tool")
    p.add_argument("--normal", required=True, help="defect-free images the model was not fitted on")
    p.add_argument("--alpha", type=float, default=None,
                   help="false-alarm rate to guarantee on new normal images (default 1 / (n + 1))")
    p.add_argument("--rule", choices=["conformal", "f1"], default="conformal",
                   help="conformal (default): the guarantee; f1: anomalib's F1-optimal, needs --defects and --masks")
    p.add_argument("--defects", default=None, help="--rule f1: defective images (folder, file or quoted glob)")
    p.add_argument("--masks", default=None, help="--rule f1: their masks, named by the image's stem (or stem_mask)")
    p.add_argument("--out", required=True, help="the recalibrated model file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    return p.parse_args(argv)


def check_flags(args: argparse.Namespace) -> None:
    if args.alpha is not None and not (math.isfinite(args.alpha) and 0 < args.alpha < 1):
        raise UserError(f"--alpha {args.alpha} must be in (0, 1)")
    if args.rule == "f1" and (args.defects is None or args.masks is None or args.alpha is not None):
        raise UserError("--rule f1 needs --defects and --masks (defective images and their masks) and takes no "
                        "--alpha (it has no false-alarm guarantee)")
    if args.rule != "f1" and (args.defects is not None or args.masks is not None):
        raise UserError("--defects and --masks are for --rule f1; the conformal rule needs normal images only")
    if args.batch_size < 1 or args.workers < 0:
        raise UserError("--batch-size must be at least 1 and --workers at least 0")
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {printable(out)} is a folder; name the model file, e.g. {printable(out / 'model.pt')}")
    if out.exists() and not args.overwrite:
        raise UserError(f"--out {printable(out)} exists; pass --overwrite or another --out")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_flags(args)
    model = Path(args.model)
    state = read_model_file(model)
    if "sum_zz_file" in state["stats"]:
        raise UserError(f"{model} was fitted in blocks (its sums in {Path(state['stats']['sum_zz_file']).name}); "
                        "recalibrating it is not supported: refit it with train.py on the calibration images")
    normal = [Sample(p) for p in find_images(args.normal, flag="--normal")]
    defects = defect_samples(find_images(args.defects, flag="--defects"), Path(args.masks)) if args.defects else []
    check_not_fitted(state, normal + defects, model)
    check_enough(len(normal), args.alpha)
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and device.type != "cuda":
        raise UserError("--device cuda: no CUDA device is available")
    found = recalibrate(model, state, normal, defects, args.alpha, device, args.batch_size, args.workers)
    save_state(state, args.out)  # atomic: an existing --out is replaced whole or kept
    print(f"{printable(args.out)}: {summary_line(found, len(defects))}")
    return 0


if __name__ == "__main__":
    run_cli(main)
