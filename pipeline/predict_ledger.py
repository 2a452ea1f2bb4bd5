"""A watched folder's output files, appended one image at a time (predict.py --watch), unlike a one-shot
--out, which is committed whole.

predictions.csv is the record of what is done: an image's PNGs (each written atomically), then its
regions.jsonl line, then its CSV row, each line written whole by one write() and fsync'ed. A kill can
leave at most a last line without its newline, and images whose row is missing: on the next start the
torn line is cut off, regions lines without their row are dropped, and those images are scored again.
So every image ends with exactly one row and one regions line. The CSV itself is locked (flock) while a
watcher runs: a second one into the same --out is refused, and no lock file is left behind.
"""
from __future__ import annotations

import csv
import fcntl
import io
import json
import os
from collections import deque
from pathlib import Path

from common import UserError, atomic_write, csv_cell, printable
from pipeline.predict_files import COLUMNS, CSV_NAME, REGIONS_NAME, csv_row, regions_line
from pipeline.predict_score import Result


def key_of(path: Path) -> str:
    """An image as its CSV cell holds it: what a restart compares new files with."""
    return csv_cell(printable(str(path)))


def repair(path: Path) -> str:
    """The file's text without a last line cut short by a kill (written back if it had one)."""
    if not path.is_file():
        return ""
    data = path.read_bytes()
    whole = data[:data.rfind(b"\n") + 1]
    if whole != data:
        with open(path, "r+b") as f:
            f.truncate(len(whole))
            os.fsync(f.fileno())
    return whole.decode("utf-8")


class Ledger:
    """--out of a watched folder: what is done, appended to one image at a time."""

    def __init__(self, out: Path, window: int):
        out.mkdir(parents=True, exist_ok=True)
        self.csv_path, self.regions_path = out / CSV_NAME, out / REGIONS_NAME
        self._csv = os.open(self.csv_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._csv, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._csv)
            raise UserError(f"--out {printable(out)}: another predict.py --watch is writing into it; stop it or pass "
                            "another --out") from None
        self.done: set[str] = set()
        self.scores: deque[float] = deque(maxlen=window)  # the most recent image scores: the drift window
        self.flagged = 0
        self._load(out)
        self._regions = os.open(self.regions_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _load(self, out: Path) -> None:
        rows = list(csv.reader(io.StringIO(repair(self.csv_path))))
        if not rows:
            self._write(self._csv, ",".join(COLUMNS) + "\n")
        elif rows[0] != COLUMNS:
            raise UserError(f"--out {printable(out)} holds a {CSV_NAME} with other columns ({','.join(rows[0])}); "
                            "pass another --out")
        for row in rows[1:]:
            if row and row[0] not in self.done:
                self.done.add(row[0])
                self.scores.append(float(row[1]))
                self.flagged += row[2] == "1"
        lines = repair(self.regions_path).splitlines(keepends=True)
        kept, seen = [], set()
        for line in lines:  # a line whose row a kill prevented is dropped: its image is scored again
            cell = csv_cell(json.loads(line)["path"])
            if cell in self.done and cell not in seen:
                kept.append(line)
                seen.add(cell)
        if len(kept) != len(lines):
            atomic_write(self.regions_path, lambda tmp: Path(tmp).write_text("".join(kept), encoding="utf-8"))

    @staticmethod
    def _write(fd: int, text: str) -> None:
        data = text.encode("utf-8")
        if os.write(fd, data) != len(data):  # a short write of a regular file: a full disk
            raise OSError(28, "No space left on device")
        os.fsync(fd)

    def append(self, result: Result) -> None:
        """The image's regions line, then its row: the row is what makes it done."""
        self._write(self._regions, regions_line(result.line()))
        buffer = io.StringIO()
        csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n").writerow(csv_row(result.row()))
        self._write(self._csv, buffer.getvalue())
        self.done.add(key_of(result.path))
        self.scores.append(result.score)
        self.flagged += result.flagged

    def close(self) -> None:
        os.close(self._regions)
        os.close(self._csv)  # and its lock
