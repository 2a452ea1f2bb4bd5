"""Writes the frame folders `datasets/stc.py` reads from the planned archive members.

Each video / clip is written into a hidden `.<name>.partial` folder and renamed into place only when
complete, so a rerun skips finished work and interrupted output never looks complete. The run's
summary (MARKER) is written last and removed at the start of every run.
"""
from __future__ import annotations

import io
import os
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from common import UserError, write_json
from datasets.stc_archive import TestJob, TrainJob, extract, open_zip, plan

MARKER = "stc_preprocess.json"
PARTIAL = ".partial"


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
    assert job.pixel is not None and job.frame_mask is not None  # plan() refuses a clip without either
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


def run_job(job: TrainJob | TestJob, output: Path, quality: int) -> tuple[str, int]:
    if isinstance(job, TrainJob):
        return run_train(job, output, quality)
    return run_test(job, output)


def is_done(job: TrainJob | TestJob, output: Path) -> bool:
    if isinstance(job, TrainJob):
        return (output / "train" / job.name).is_dir()
    return (output / "test" / job.name).is_dir() and (output / "pixel_mask" / job.name).is_dir()


def _worker_init() -> None:
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
    every: tuple[TrainJob | TestJob, ...] = (*train_jobs, *test_jobs)
    jobs = [job for job in every if not is_done(job, output)]
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
