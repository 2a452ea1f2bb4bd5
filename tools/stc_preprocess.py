"""Turn the distributed ShanghaiTech Campus archives into the frame folders `datasets/stc.py` reads.

Usage: tools/stc_preprocess.sh <archives folder> <output folder> [--workers N] [--quality Q]
   or: python tools/stc_preprocess.py <archives folder> <output folder> [...]

Input (as distributed; each archive is looked for in <archives>/, then <archives>/Testing/, then
<archives>/testing/, because the original preprocessing script reads the four test archives from
`Testing/` while the download pages list them by bare name)::

    training.zip             training/videos/SS_NNN.avi            (330 videos, 856 x 480)
    Testing/frames_part1.zip  testing/frames/SS_NNNN/NNN.jpg        (107 test clips in the two parts)
    Testing/frames_part2.zip  testing/frames/SS_NNNN/NNN.jpg
    Testing/test_pixel_mask.zip  .../SS_NNNN.npy  (T x H x W, 0/1)
    Testing/test_frame_mask.zip  .../SS_NNNN.npy  (T,)

Members are matched by name, not by their folder inside the zip: every `*.avi` of training.zip is a
training video named by its stem; every numbered `*.jpg` of the frame zips belongs to the clip named by
its parent folder; every `*.npy` of a mask zip belongs to the clip named by its stem.

Output (what `--dataset mstc --dataroot <output>` reads)::

    <output>/train/<video>/000.jpg ...       every decoded frame (cv2.VideoCapture), JPEG quality 95
    <output>/test/<clip>/NNN.jpg             the distributed test frames, bytes copied unchanged
    <output>/pixel_mask/<clip>/NNN.png       pixel mask of frame NNN as a 0/255 PNG (lossless)
    <output>/stc_preprocess.json             counts; written last, removed at the start of every run

The k-th test frame of a clip in frame-number order gets the k-th slice of its pixel mask; mask PNGs
carry the frame's number. A clip's frame count (the JPEGs in the archives), the pixel mask's T and the
frame mask's length must agree, or the run stops. Training frames are counted by decoding them; the
container's frame count is never trusted.

Idempotent: each video / clip is written into a hidden `.<name>.partial` folder and renamed into place
only when complete (test clips: masks first, then frames; a clip counts as done when both exist), so a
rerun skips finished clips and redoes unfinished ones; interrupted output never looks complete.
Errors (missing archive, a video OpenCV cannot open, a frame-count mismatch) print one line naming the
file and exit with status 2.

Runtime (measured 2026-11-28 in a 2-core container shared with other jobs, load ~3.5, one worker, on
generated 856 x 480 archives: `tests.helpers.data.write_stc_archives(size=(480, 856))`): a
training frame (decode the MJPG video with cv2.VideoCapture + encode a quality-95 JPEG + write) takes
3.2-3.4 ms (~300 frames/s); a test frame (byte copy + its mask PNG from the memory-mapped .npy) takes
~5 ms. `--benchmark` measures the codec part alone: decode 1.0-1.9 ms (MJPG, XVID, mp4v) + encode
1.2-1.6 ms per frame. Estimate for the full dataset (330 videos, ~274k training frames; 107 clips,
~40k test frames): 274k x 3.3 ms + 40k x 5.2 ms = 15 + 3.5 = about 19 minutes on one core, about
3-5 minutes with the default `--workers` (up to 8 processes), plus reading the archives once;
camera footage compresses less well than the generated frames, so allow up to ~1.5x that. (The
authors' script took about 1.5 h.)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import _root  # noqa: F401
import cv2
import numpy as np

from common import UserError, run_cli
from datasets.stc_convert import preprocess


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other bad input
        raise UserError(message)


def benchmark(frames: int = 100) -> None:
    """Per-frame decode + JPEG-encode time at 856 x 480 for MJPG and MPEG-4 (XVID) videos."""
    import tempfile
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (480, 856, 3), dtype=np.uint8), (0, 0), 3)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for fourcc in ("MJPG", "XVID", "mp4v"):
            path = tmp / f"{fourcc}.avi"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (856, 480))
            if not writer.isOpened():
                print(f"{fourcc}: no encoder here")
                continue
            for i in range(frames):
                writer.write(np.roll(base, 4 * i, axis=1))
            writer.release()
            out = tmp / fourcc
            out.mkdir()
            t0 = time.perf_counter()
            cap = cv2.VideoCapture(str(path))
            decoded = []
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                decoded.append(frame)
            t1 = time.perf_counter()
            for i, frame in enumerate(decoded):
                cv2.imwrite(str(out / f"{i:03d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
            t2 = time.perf_counter()
            n = len(decoded)
            per = (t2 - t0) / n
            print(f"{fourcc}: {n} frames, decode {1e3 * (t1 - t0) / n:.2f} ms + encode {1e3 * (t2 - t1) / n:.2f} "
                  f"ms per frame = {1 / per:.0f} frames/s per worker; 274k training frames: "
                  f"{274_000 * per / 60:.0f} min on one worker")
        mask = np.zeros((480, 856), np.uint8)
        mask[100:200, 300:420] = 255
        t0 = time.perf_counter()
        for i in range(frames):
            cv2.imwrite(str(tmp / f"m{i}.png"), mask)
            (tmp / f"f{i}.jpg").write_bytes(b"x" * 60_000)
        per = (time.perf_counter() - t0) / frames
        print(f"test frame copy + mask PNG: {1e3 * per:.2f} ms per frame; 40k test frames: {40_000 * per / 60:.1f} min")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archives", nargs="?", type=Path, help="folder with training.zip and Testing/*.zip")
    parser.add_argument("output", nargs="?", type=Path, help="output folder (the --dataroot of --dataset mstc)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="processes decoding clips in parallel (default: CPU cores, at most 8)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of training frames (default 95)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--benchmark", action="store_true", help="measure the per-frame rate and exit")
    args = parser.parse_args(argv)
    if args.benchmark:
        benchmark()
        return 0
    if args.archives is None or args.output is None:
        raise UserError("pass <archives folder> <output folder>")
    if not 1 <= args.quality <= 100:
        raise UserError(f"--quality {args.quality} must be in 1..100")
    try:
        summary = preprocess(args.archives, args.output, workers=args.workers, quality=args.quality,
                             progress=not args.no_progress)
    except KeyboardInterrupt:
        print("interrupted; finished clips are kept, rerun to complete", file=sys.stderr)
        return 130
    print(f"mSTC ready in {args.output}: {summary['train_videos']} training videos "
          f"({summary['train_frames']} frames), {summary['test_clips']} test clips ({summary['test_frames']} "
          f"frames); {summary['written_this_run']} written, {summary['skipped_this_run']} skipped this run")
    return 0


if __name__ == "__main__":
    run_cli(main)
