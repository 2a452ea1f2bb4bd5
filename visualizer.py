"""PDF report of a trained experiment, read from what train.py saved (never re-runs the model).

    python visualizer.py --ckpt runs/exp1 --category carpet
    python visualizer.py --ckpt runs/exp1                      # every category, one PDF

Reads `<ckpt>/<dataset>/<category>/scores.npz` and `metrics.json`; see `-h` for the page layout.
The report itself is drawn by the `report` package.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from common import UserError, run_cli
from report.layout import (
    PANEL_MAX_PX,
    ROWS_PER_PAGE,
    ZOOM_CAP,
    ZOOM_FROM_PX,
    ZOOM_MARGIN,
    ZOOM_MAX_PX,
    ZOOM_MIN_PX,
    ZOOM_ROWS_PER_PAGE,
)
from report.load import load_category, resolve

DEFAULT_MAX_IMAGES = 40

HELP = f"""\
Pages
  --category all (default): a contents page (a table of every category with its
  metrics and pages), then each category as below, all in one PDF.
  Per category: 1 summary page (metrics table, pixel and image ROC curves, PRO curve up
  to the FPR limit with the integrated area shaded, histogram of image scores for good
  images and each defect type), then ceil(min(test images, --max-images) / {ROWS_PER_PAGE}) image
  pages of {ROWS_PER_PAGE} test images each (about 0.4 MB a page; panels stored at <= {PANEL_MAX_PX} px).
  Each image row: input; ground truth outlined on the input; anomaly map over the input
  (one colour scale per category, min to max of its test maps, colour bar on the right);
  binary prediction (score > threshold) with the ground-truth outline. Image order:
  defective images from the lowest image score up (missed defects first), then good
  images from the highest score down (false alarms first).
  Zoom pages, for maps with a side over {ZOOM_FROM_PX} px (a panel would shrink them over 2x):
  after each image page, crops at native resolution ({ZOOM_ROWS_PER_PAGE} a page, stored at <= {ZOOM_MAX_PX} px),
  the same 4 panels each: one crop per ground-truth region (8-connected) and per false
  alarm (a predicted region touching no ground truth), at most {ZOOM_CAP} an image: the largest
  defects, then the largest false alarms. A crop is the region's box and {ZOOM_MARGIN} px around
  it, at least {ZOOM_MIN_PX} px a side; numbered boxes on the image page show where each comes from.

Threshold
  --threshold T if given (applies to every category); else the pixel threshold calibrated
  on normal validation images (metrics.json "thresholds"); else the threshold at the FPR
  limit on the test set's normal pixels.

Output
  default: <ckpt>/<dataset>/<category>/report.pdf for one category and
  <ckpt>/<dataset>/report.pdf for all; an existing report is replaced atomically.
  Errors (missing folders or files, corrupt files, a full disk or read-only folder) print one
  line and exit with 2, leaving any earlier report as it was. Test images that cannot be found
  (scores.npz names them) are counted in one warning; their panels show the maps only.

Progress
  A bar on stderr only when stderr is a terminal, and never with --quiet."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="visualizer.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="PDF report of a trained experiment from its saved scores.npz and metrics.json "
                    "(the model is not run).", epilog=HELP)
    parser.add_argument("--ckpt", required=True, type=Path,
                        help="experiment folder, the one holding <dataset>/<category>/")
    parser.add_argument("--dataset", help="dataset folder inside --ckpt (default: the only one there)")
    parser.add_argument("--category", default="all", help="category to render, or 'all' (default)")
    parser.add_argument("--out", type=Path, help="PDF to write (default: report.pdf, see below)")
    parser.add_argument("--max-images", type=_non_negative, default=DEFAULT_MAX_IMAGES, metavar="N",
                        help=f"test images shown per category (default {DEFAULT_MAX_IMAGES}; 0: summary only)")
    parser.add_argument("--threshold", type=_finite, metavar="T",
                        help="pixel threshold for the binary predictions (default: see below)")
    parser.add_argument("--quiet", "--no-progress", action="store_true",
                        help="no progress bar (there is none unless stderr is a terminal)")
    return parser.parse_args(argv)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError("must be finite")
    return value


def run(args: argparse.Namespace) -> Path:
    dataset, selected = resolve(args.ckpt, args.dataset, args.category)
    cats = [load_category(folder, dataset, name) for name, folder in selected]  # all checked before writing
    whole = args.category == "all"
    out = args.out or (args.ckpt / dataset / "report.pdf" if whole else selected[0][1] / "report.pdf")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as {out / 'report.pdf'}")
    from pipeline import progress  # matplotlib, scipy and tqdm: only once there is something to draw
    from report.image_pages import missing_images
    from report.render import prepare, render

    for cat in cats:
        prepare(cat, args.threshold, args.max_images)
    missing, shown, example = missing_images(cats, args.ckpt)
    if missing:
        print(f"warning: {missing} of {shown} test images shown were not found, e.g. {example}; "
              "their panels show the maps only", file=sys.stderr)
    pages = render(cats, args.ckpt, out, with_contents=whole, progress=progress.wanted(args.quiet))
    print(f"wrote {out} ({pages} pages)")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    run_cli(main)
