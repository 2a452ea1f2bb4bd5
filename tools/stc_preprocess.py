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
generated 856 x 480 archives: `datasets.synthetic_layouts.write_stc_archives(size=(480, 856))`): a
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
import io
import os
import re
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import UserError, write_json  # noqa: E402

MARKER = "stc_preprocess.json"
TRAIN_ZIP = "training.zip"
FRAME_ZIPS = ("frames_part1.zip", "frames_part2.zip")
PIXEL_ZIP = "test_pixel_mask.zip"
FRAME_MASK_ZIP = "test_frame_mask.zip"
FRAME_RE = re.compile(r"^(\d+)\.jpe?g$", re.IGNORECASE)
PARTIAL = ".partial"


@dataclass
class TrainJob:
    name: str
    archive: Path
    member: str


@dataclass
class TestJob:
    name: str
    frames: list[tuple[int, Path, str]] = field(default_factory=list)  # (number, archive, member)
    pixel: tuple[Path, str] | None = None
    frame_mask: tuple[Path, str] | None = None


def find_archive(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / "Testing" / name, folder / "testing" / name):
        if candidate.is_file():
            return candidate
    raise UserError(f"archive {folder / name} not found (also looked in {folder / 'Testing'}); put the "
                    "distributed mSTC archives there")


_ZIPS: dict[Path, zipfile.ZipFile] = {}


def open_zip(path: Path) -> zipfile.ZipFile:
    if path not in _ZIPS:
        try:
            _ZIPS[path] = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise UserError(f"cannot open archive {path}: {e}; download it again") from None
    return _ZIPS[path]


def members(path: Path) -> list[str]:
    names = []
    for info in open_zip(path).infolist():
        parts = info.filename.split("/")
        if info.is_dir() or "__MACOSX" in parts or parts[-1].startswith("."):
            continue
        names.append(info.filename)
    return names


def plan(archives: Path) -> tuple[list[TrainJob], list[TestJob]]:
    """Every training video and test clip found in the archives, checked for completeness."""
    paths = {name: find_archive(archives, name)
             for name in (TRAIN_ZIP, *FRAME_ZIPS, PIXEL_ZIP, FRAME_MASK_ZIP)}
    train: dict[str, TrainJob] = {}
    for member in members(paths[TRAIN_ZIP]):
        stem, ext = os.path.splitext(member.rsplit("/", 1)[-1])
        if ext.lower() != ".avi":
            continue
        if stem in train:
            raise UserError(f"archive {paths[TRAIN_ZIP]} holds video {stem} twice ({train[stem].member}, {member})")
        train[stem] = TrainJob(stem, paths[TRAIN_ZIP], member)
    if not train:
        raise UserError(f"archive {paths[TRAIN_ZIP]} holds no .avi videos; download training.zip again")

    clips: dict[str, TestJob] = {}
    for name in FRAME_ZIPS:
        for member in members(paths[name]):
            parts = member.split("/")
            m = FRAME_RE.match(parts[-1])
            if not m or len(parts) < 2:
                continue
            job = clips.setdefault(parts[-2], TestJob(parts[-2]))
            job.frames.append((int(m.group(1)), paths[name], member))
    if not clips:
        raise UserError(f"archives {paths[FRAME_ZIPS[0]]} and {paths[FRAME_ZIPS[1]]} hold no test frames "
                        "(<clip>/NNN.jpg); download them again")
    for key, attr in ((PIXEL_ZIP, "pixel"), (FRAME_MASK_ZIP, "frame_mask")):
        for member in members(paths[key]):
            stem, ext = os.path.splitext(member.rsplit("/", 1)[-1])
            if ext.lower() != ".npy":
                continue
            if stem not in clips:
                raise UserError(f"archive {paths[key]} has {member} (mask of clip {stem}) but the frame "
                                f"archives have 0 frames of {stem}: frame count disagrees with the mask array")
            setattr(clips[stem], attr, (paths[key], member))
    for job in clips.values():
        for key, attr in ((PIXEL_ZIP, "pixel"), (FRAME_MASK_ZIP, "frame_mask")):
            if getattr(job, attr) is None:
                raise UserError(f"archive {paths[key]} has no {job.name}.npy for test clip {job.name}; "
                                "download it again")
        job.frames.sort()
        numbers = [n for n, _, _ in job.frames]
        if len(set(numbers)) != len(numbers):
            raise UserError(f"test clip {job.name} has two frames with one number in {paths[FRAME_ZIPS[0]]} / "
                            f"{paths[FRAME_ZIPS[1]]}; download the frame archives again")
    return sorted(train.values(), key=lambda j: j.name), sorted(clips.values(), key=lambda j: j.name)


def extract(archive: Path, member: str, target: Path) -> Path:
    with open_zip(archive).open(member) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return target


def fresh_partial(final: Path) -> Path:
    tmp = final.parent / f".{final.name}{PARTIAL}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def decode_video(video: Path, out: Path, quality: int, label: str) -> int:
    """Write every decodable frame of `video` as out/NNN.jpg; the number of frames read."""
    capture = cv2.VideoCapture(str(video))
    try:
        if not capture.isOpened():
            raise UserError(f"OpenCV cannot open video {label}; download training.zip again")
        count = 0
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if not cv2.imwrite(str(out / f"{count:03d}.jpg"), frame, params):
                raise UserError(f"cannot write {out / f'{count:03d}.jpg'}; check free space in the output folder")
            count += 1
    finally:
        capture.release()
    if count == 0:
        raise UserError(f"OpenCV read no frame from video {label}; download training.zip again")
    return count


def run_train(job: TrainJob, output: Path, quality: int) -> tuple[str, int]:
    final = output / "train" / job.name
    if final.is_dir():
        return "skipped", 0
    tmp = fresh_partial(final)
    try:
        video = extract(job.archive, job.member, tmp / f"video{Path(job.member).suffix}")
        count = decode_video(video, tmp, quality, f"{job.archive}:{job.member}")
        video.unlink()
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return "done", count


def run_test(job: TestJob, output: Path) -> tuple[str, int]:
    frames_final = output / "test" / job.name
    masks_final = output / "pixel_mask" / job.name
    if frames_final.is_dir() and masks_final.is_dir():
        return "skipped", 0
    for stale in (frames_final, masks_final):  # half of a clip from an interrupted run: redo both
        if stale.exists():
            shutil.rmtree(stale)
    masks_tmp = fresh_partial(masks_final)
    frames_tmp = fresh_partial(frames_final)
    try:
        pixel_label = f"{job.pixel[0]}:{job.pixel[1]}"
        try:
            pixel = np.load(extract(*job.pixel, masks_tmp / "pixel.npy"), mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise UserError(f"cannot read pixel mask {pixel_label}: {e}; download it again") from None
        try:
            frame_mask = np.load(io.BytesIO(open_zip(job.frame_mask[0]).read(job.frame_mask[1])),
                                 allow_pickle=False)
        except (ValueError, OSError) as e:
            raise UserError(f"cannot read frame mask {job.frame_mask[0]}:{job.frame_mask[1]}: {e}; "
                            "download it again") from None
        n = len(job.frames)
        if pixel.ndim != 3 or pixel.shape[0] != n:
            raise UserError(f"test clip {job.name}: {n} frames in the frame archives but pixel mask "
                            f"{pixel_label} has shape {tuple(pixel.shape)} (expected {n} x H x W): frame count "
                            "disagrees with the mask array")
        if frame_mask.reshape(-1).shape[0] != n:
            raise UserError(f"test clip {job.name}: {n} frames in the frame archives but frame mask "
                            f"{job.frame_mask[0]}:{job.frame_mask[1]} has {frame_mask.size} entries: frame "
                            "count disagrees with the mask array")
        for k, (number, archive, member) in enumerate(job.frames):
            data = open_zip(archive).read(member)
            if k == 0:
                first = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
                if first is None:
                    raise UserError(f"cannot decode test frame {archive}:{member}; download it again")
                if first.shape != pixel.shape[1:]:
                    raise UserError(f"test clip {job.name}: frames are {first.shape[0]} x {first.shape[1]} but "
                                    f"pixel mask {pixel_label} is {pixel.shape[1]} x {pixel.shape[2]}")
            (frames_tmp / member.rsplit("/", 1)[-1]).write_bytes(data)
            mask = (np.asarray(pixel[k]) > 0).astype(np.uint8) * 255
            if not cv2.imwrite(str(masks_tmp / f"{number:03d}.png"), mask):
                raise UserError(f"cannot write {masks_tmp / f'{number:03d}.png'}; check free space")
        del pixel
        (masks_tmp / "pixel.npy").unlink()
        os.rename(masks_tmp, masks_final)
        os.rename(frames_tmp, frames_final)
    except BaseException:
        shutil.rmtree(masks_tmp, ignore_errors=True)
        shutil.rmtree(frames_tmp, ignore_errors=True)
        raise
    return "done", n


def run_job(job, output: Path, quality: int):
    if isinstance(job, TrainJob):
        return run_train(job, output, quality)
    return run_test(job, output)


def is_done(job, output: Path) -> bool:
    if isinstance(job, TrainJob):
        return (output / "train" / job.name).is_dir()
    return (output / "test" / job.name).is_dir() and (output / "pixel_mask" / job.name).is_dir()


def _worker_init():
    cv2.setNumThreads(1)


def remove_partials(output: Path) -> None:
    for sub in ("train", "test", "pixel_mask"):
        folder = output / sub
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.startswith(".") and p.name.endswith(PARTIAL):
                    shutil.rmtree(p, ignore_errors=True)


def count_files(folder: Path) -> tuple[int, int]:
    clips = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return len(clips), sum(1 for c in clips for f in os.scandir(c) if f.is_file())


def preprocess(archives: Path, output: Path, workers: int = 1, quality: int = 95, progress: bool = True) -> dict:
    from tqdm import tqdm

    archives, output = Path(archives), Path(output)
    if not archives.is_dir():
        raise UserError(f"archives folder {archives} not found; pass the folder holding training.zip and Testing/")
    train_jobs, test_jobs = plan(archives)
    output.mkdir(parents=True, exist_ok=True)
    (output / MARKER).unlink(missing_ok=True)
    for sub in ("train", "test", "pixel_mask"):
        (output / sub).mkdir(exist_ok=True)
    remove_partials(output)  # left by a killed run
    jobs = [job for job in (*train_jobs, *test_jobs) if not is_done(job, output)]
    skipped = len(train_jobs) + len(test_jobs) - len(jobs)
    done = frames = 0
    start = time.perf_counter()
    bar = tqdm(total=len(train_jobs) + len(test_jobs), initial=skipped, unit="clip", desc="mSTC",
               disable=not progress, file=sys.stderr)
    try:
        if workers <= 1 or len(jobs) <= 1:
            results = (run_job(job, output, quality) for job in jobs)
            executor = None
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed
            executor = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("spawn"),
                                           initializer=_worker_init)
            futures = [executor.submit(run_job, job, output, quality) for job in jobs]
            results = (future.result() for future in as_completed(futures))
        try:
            for status, count in results:
                done += status == "done"
                skipped += status == "skipped"
                frames += count
                bar.update(1)
                bar.set_postfix(frames=frames)
        finally:
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
    except BaseException:
        remove_partials(output)
        raise
    finally:
        bar.close()
    n_videos, n_train = count_files(output / "train")
    n_clips, n_test = count_files(output / "test")
    summary = {
        "archives": str(archives.resolve()),
        "train_videos": n_videos, "train_frames": n_train,
        "test_clips": n_clips, "test_frames": n_test,
        "written_this_run": done, "skipped_this_run": skipped,
        "frames_written_this_run": frames, "seconds_this_run": round(time.perf_counter() - start, 2),
        "jpeg_quality": quality,
    }
    write_json(output / MARKER, summary)
    return summary


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
        parser.print_usage(sys.stderr)
        print("error: pass <archives folder> <output folder>", file=sys.stderr)
        return 2
    if not 1 <= args.quality <= 100:
        print(f"error: --quality {args.quality} must be in 1..100", file=sys.stderr)
        return 2
    try:
        summary = preprocess(args.archives, args.output, workers=args.workers, quality=args.quality,
                             progress=not args.no_progress)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished clips are kept, rerun to complete", file=sys.stderr)
        return 130
    print(f"mSTC ready in {args.output}: {summary['train_videos']} training videos "
          f"({summary['train_frames']} frames), {summary['test_clips']} test clips ({summary['test_frames']} "
          f"frames); {summary['written_this_run']} written, {summary['skipped_this_run']} skipped this run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
