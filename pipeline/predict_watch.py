"""predict.py --watch DIR: score images as they arrive in a folder, until Ctrl-C or SIGTERM.

A file is taken once it is complete: renamed (or linked) into place after it was written, which shows as
a status change after its last write (ctime > mtime), or else once its size and mtime have not changed
for --settle seconds. Hidden files and names of files still being written (.tmp, .part, .partial,
.crdownload, ~) are left alone. An image is known by its path: one already in predictions.csv is not
scored again, also after a restart. An unreadable one is reported and skipped, and tried again only once
it changes. Output files: pipeline/predict_ledger.py. summary.json is rewritten after each batch over
the most recent --drift-window images.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from common import UserError, one_line, printable, write_json
from datasets.base import IMAGE_SUFFIXES
from models import SemiOrthogonal
from pipeline import drift
from pipeline.predict_files import SUMMARY_NAME, check_names, in_out_folder
from pipeline.predict_ledger import Ledger, key_of
from pipeline.predict_score import Judge, Skipped, note_uncalibrated, score_images

PARTIAL = (".tmp", ".part", ".partial", ".crdownload", "~")
REPORT_EVERY = 10.0  # seconds between throughput lines while images arrive


class Arrivals:
    """Which files of the watched folder are complete and not yet done."""

    def __init__(self, folder: Path, out: Path, settle: float):
        self.folder, self.out, self.settle = folder, out, settle
        self.changing: dict[Path, tuple[tuple[int, int], float]] = {}  # (size, mtime) and since when
        self.bad: dict[Path, tuple[int, int]] = {}  # reported unreadable, as it was then

    def candidates(self) -> list[Path]:
        found = []
        for path in sorted(self.folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") \
                    and not path.name.endswith(PARTIAL) and not in_out_folder(path, self.out):
                found.append(path)
        return found

    def ready(self, done: set[str]) -> list[Path]:
        now, ready = time.monotonic(), []
        for path in self.candidates():
            if key_of(path) in done:
                continue
            try:
                info = path.stat()
            except OSError:  # gone meanwhile
                continue
            if not path.is_file():
                continue
            state = (info.st_size, info.st_mtime_ns)
            if self.bad.get(path) == state:
                continue
            self.bad.pop(path, None)  # changed since it was reported: tried again
            if self.changing.get(path, (None, 0.0))[0] != state:
                self.changing[path] = (state, now)
            if info.st_ctime_ns > info.st_mtime_ns or now - self.changing[path][1] >= self.settle:
                ready.append(path)
        return ready

    def taken(self, path: Path) -> None:
        self.changing.pop(path, None)

    def failed(self, path: Path) -> None:
        try:
            info = path.stat()
            self.bad[path] = (info.st_size, info.st_mtime_ns)
        except OSError:
            pass
        self.changing.pop(path, None)


class Stop:
    """Ctrl-C and SIGTERM end the watch after the image being written; the handlers are put back after."""

    def __init__(self) -> None:
        self.asked = False

    def __enter__(self) -> Stop:
        self.saved = {s: signal.signal(s, self.ask) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def ask(self, signum: int, frame: object) -> None:
        self.asked = True

    def __exit__(self, *exc: object) -> None:
        for number, handler in self.saved.items():
            signal.signal(number, handler)

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.asked and time.monotonic() < end:
            time.sleep(min(0.05, max(end - time.monotonic(), 0)))


def watch(model: SemiOrthogonal, model_path: str, judge: Judge, folder: Path, out: Path, settle: float, poll: float,
          window: int, batch_size: int, workers: int) -> int:
    """Scores arriving images until stopped; 0, or 1 if an image could not be read."""
    if not folder.is_dir():
        raise UserError(f"--watch {printable(folder)} is not a folder; pass the folder new images arrive in")
    folder = Path(os.path.abspath(folder))  # an image's key is its absolute path, however the folder is given
    if in_out_folder(folder, out.absolute()):
        raise UserError(f"--watch {printable(folder)} is inside --out {printable(out)}; pass an --out outside it")
    ledger, arrivals = Ledger(out, window), Arrivals(folder, out.absolute(), settle)
    if isinstance(model, SemiOrthogonal):  # after the checks: L^-1 takes seconds for WRN-50-2
        model.score_by_inverse()  # images arrive one at a time, for hours: the solve would cost 3.5x the GEMM
    start, scored, skipped, busy, last_report, warned = time.monotonic(), 0, 0, 0.0, time.monotonic(), False
    print(f"watching {printable(folder)} ({len(ledger.done)} images already in {printable(out)}); Ctrl-C ends it",
          file=sys.stderr)
    note_uncalibrated(judge, model_path)
    try:
        with Stop() as stop:
            while not stop.asked:
                ready = arrivals.ready(ledger.done)[:batch_size]
                if not ready:
                    stop.sleep(poll)
                    continue
                t = time.monotonic()
                names = [path.relative_to(folder).as_posix() for path in ready]  # suffix kept: never renamed later
                for path, name in zip(ready, names):
                    try:
                        check_names(out, [name], [path])
                    except UserError as error:
                        arrivals.failed(path)
                        skipped += 1
                        print(f"skipped: {one_line(error)}", file=sys.stderr)
                ready = [p for p in ready if p not in arrivals.bad]
                names = [path.relative_to(folder).as_posix() for path in ready]
                for item in score_images(model, ready, names, out, judge, batch_size, workers):
                    if isinstance(item, Skipped):
                        arrivals.failed(item.path)
                        skipped += 1
                        print(f"skipped: {one_line(UserError(item.error))}", file=sys.stderr)
                    else:
                        ledger.append(item)
                        arrivals.taken(item.path)
                        scored += 1
                    if stop.asked:
                        break
                busy += time.monotonic() - t
                found = drift.summary(np.array(ledger.scores), judge.image, judge.calibration,
                                      getattr(model, "calibration", {}))
                write_json(out / SUMMARY_NAME, {**found, "window": window, "pixel_threshold": judge.pixel})
                if found["drift"] and not warned:
                    print(f"warning: {found['warning']} (summary.json)", file=sys.stderr)
                warned = found["drift"]
                if time.monotonic() - last_report >= REPORT_EVERY:
                    print(throughput(scored, skipped, ledger.flagged, time.monotonic() - start, busy), file=sys.stderr)
                    last_report = time.monotonic()
    finally:
        ledger.close()
    print(throughput(scored, skipped, ledger.flagged, time.monotonic() - start, busy))
    return 1 if skipped else 0


def throughput(scored: int, skipped: int, flagged: int, wall: float, busy: float) -> str:
    rate = f"{scored / busy:.2f} images/s while scoring" if busy > 0 else "none scored"
    return (f"watch: {scored} images scored in {wall:.1f} s ({rate}), {skipped} skipped; "
            f"{flagged} anomalous in --out")
