"""The on-disk result format, in one place: what train.py writes per category and what the
visualizer, tools/summarize.py, tools/benchmark.py and the tests read back. No other code writes these files.

A category folder `<experiment>/<dataset>/<category>/` holds:

- `metrics.json`: settings, the metrics (`metrics.registry`), thresholds and seconds per phase (`write_metrics`).
- `scores.npz`: score maps (float16), masks, labels, image scores, defect names, image paths
  (`Scores`, `write_scores` / `read_scores`).
- `model.pt`: the fitted model (models/semi_ortho.py owns that format).

`results.csv` (or `--report`) gets one row per category (`CSV_COLUMNS`, `--ci`'s `<metric>_lo` and `_hi`
included) and a `mean` row after a multi-category run. Rows are read by column name, and appended in the
file's own column order: a report written before a column existed takes new rows without it (one warning
says which), so adding a metric never locks out older reports; a header with a column this version does
not know is refused. Appending takes an exclusive lock on the file itself, so processes and machines that
share the folder can append to one report without losing rows. Every cell goes through `common.csv_cell`
(no spreadsheet runs one as a formula); `read_rows` gives back the original text.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common import UserError, atomic_write, csv_cell, csv_text, no_space, utf8_problem, write_json, write_problem
from metrics import registry

METRICS = registry.CSV_NAMES  # the registry's metrics that results.csv has a column for
IDENTIFYING = ("dataset", "category")  # what a report must have for its rows to mean anything
SETTINGS = ("model", "approx", "k", "seed", "label", "protocol")  # what a mean row shares with its categories
CSV_COLUMNS = ("dataset", "category", "model", "approx", "k", "eps", "image_size", "crop", "seed", "label", "n_train",
               "n_val", "n_test", *METRICS, "seconds", "output", "protocol", *registry.CSV_BOUNDS)
METRICS_FILE = "metrics.json"
SCORES_FILE = "scores.npz"
MODEL_FILE = "model.pt"
REPORT_FILE = "report.pdf"  # the visualizer's, written into a category folder; no run writes it
SUMS_FILE = "model.sums"  # a model fitted in blocks keeps its sums beside model.pt (models/model_file.py, format 3)
RESULT_FILES = (MODEL_FILE, SUMS_FILE, SCORES_FILE, METRICS_FILE)  # what a run writes; --overwrite replaces these only


@dataclass
class Scores:
    """Everything scored on one category's test split, in test order."""
    maps: np.ndarray  # (N, H, W) smoothed score maps at evaluation size
    masks: np.ndarray  # (N, H, W) uint8 0/1
    labels: np.ndarray  # (N,) int8, 1 = defective
    image_scores: np.ndarray  # (N,) float32, max of each map
    defects: np.ndarray | None = None  # (N,) defect names ("good" for normal images)
    paths: np.ndarray | None = None  # (N,) image paths as str

    def __len__(self) -> int:
        return len(self.labels)


def write_scores(path: str | Path, scores: Scores) -> None:
    """float16 maps, uncompressed: they barely compress, and zlib costs seconds per category."""
    n = len(scores)
    arrays: dict[str, np.ndarray] = {"maps": scores.maps.astype(np.float16), "masks": scores.masks.astype(np.uint8),
              "labels": scores.labels.astype(np.int8), "image_scores": scores.image_scores.astype(np.float32),
              "defects": scores.defects if scores.defects is not None else np.array(["good"] * n),
              "paths": scores.paths if scores.paths is not None else np.array([""] * n)}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # mypy matches **arrays against allow_pickle: bool
    atomic_write(path, write, size=sum(a.nbytes for a in arrays.values()))  # uncompressed: about the arrays


def read_scores(path: str | Path) -> Scores:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:  # truncated files
        raise UserError(f"cannot read {path}: {e}; rerun train.py for this category") from None
    missing = [key for key in ("maps", "masks", "labels", "image_scores") if key not in arrays]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; it was not written by train.py")
    return Scores(maps=arrays["maps"], masks=arrays["masks"], labels=arrays["labels"],
                  image_scores=arrays["image_scores"], defects=arrays.get("defects"), paths=arrays.get("paths"))


def write_metrics(path: str | Path, summary: dict[str, Any]) -> None:
    write_json(path, summary)


def read_metrics(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}; rerun train.py for this category") from None
    if not isinstance(summary, dict) or "metrics" not in summary:
        raise UserError(f"{path} is not a metrics.json written by train.py")
    return summary


def csv_row(summary: dict[str, Any], output: str | Path) -> dict[str, str]:
    """The results.csv row of one category's summary (metrics.json's content)."""
    row = {key: summary.get(key, "") for key in CSV_COLUMNS}
    row["image_size"] = "x".join(map(str, summary["image_size"]))
    row["crop"] = "x".join(map(str, summary["crop"])) if summary.get("crop") else ""
    row["seconds"] = f"{summary['seconds']['total']:.2f}"
    row["output"] = str(output)
    shown = {**summary["metrics"], **registry.bounds(summary.get("intervals", {}))}
    row.update({m: f"{shown[m]:.6f}" if m in shown else "" for m in (*METRICS, *registry.CSV_BOUNDS)})
    return {key: "" if value is None else str(value) for key, value in row.items()}


def mean_row(dataset: str, summaries: list[dict[str, Any]], intervals: dict[str, list[float]] | None = None
             ) -> tuple[dict[str, str], dict[str, float]]:
    """The `mean` row after a multi-category run (with --ci, the `intervals` of the means), and the means
    themselves: of every metric all the summaries have, also those without a column (the headline's)."""
    means = {m.name: float(np.mean([s["metrics"][m.name] for s in summaries])) for m in registry.REGISTRY
             if all(m.name in s["metrics"] for s in summaries)}
    first = summaries[0]
    row = {"dataset": dataset, "category": "mean", **{key: first.get(key, "") for key in SETTINGS},
           **{m: f"{v:.6f}" for m, v in {**means, **registry.bounds(intervals or {})}.items()}}
    return {key: str(row.get(key, "")) for key in CSV_COLUMNS}, means


def report_columns(report: str | Path) -> tuple[str, ...] | None:
    """The columns of an existing report, in its order; None for a new or empty file. Refuses a file
    that cannot be read, one with a column this version does not write, and one without IDENTIFYING."""
    report = Path(report)
    try:
        lines = report.read_text(encoding="utf-8").splitlines()[:1]
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--report {report} cannot be read ({e}); pass another --report") from None
    if not lines:
        return None
    columns = tuple(next(csv.reader(lines), []))
    unknown = [c for c in columns if c not in CSV_COLUMNS]
    if unknown or len(set(columns)) < len(columns):
        named = f" ({', '.join(unknown)})" if unknown else " (a column twice)"
        raise UserError(f"--report {report} has other columns than this version writes{named}; pass another --report")
    lacking = [c for c in IDENTIFYING if c not in columns]
    if lacking:
        raise UserError(f"--report {report} has no {' or '.join(lacking)} column; pass another --report")
    return columns


_WARNED: set[tuple[str, tuple[str, ...]]] = set()  # a run checks its report several times: one warning


def check_report(report: str | Path) -> tuple[str, ...]:
    """Refuses a --report that cannot take our rows, before any work is done; the columns rows go out
    in (the file's own, or CSV_COLUMNS for a new file). Warns once when the file lacks some of ours."""
    report = Path(report)
    if report.is_dir():
        raise UserError(f"--report {report} is a folder; pass a CSV file path")
    columns = report_columns(report)
    problem = write_problem(report)
    if problem is not None:
        raise UserError(f"--report {report} cannot be written: {problem}; pass another --report")
    if columns is None:
        return CSV_COLUMNS
    missing = tuple(c for c in CSV_COLUMNS if c not in columns)
    if missing and (str(report.resolve()), missing) not in _WARNED:
        _WARNED.add((str(report.resolve()), missing))
        print(f"warning: --report {report} lacks this version's column(s) {', '.join(missing)} (an earlier version "
              f"wrote it): new rows are appended without {'it' if len(missing) == 1 else 'them'}; pass another "
              "--report to keep every column", file=sys.stderr)
    return columns


def _open_locked(report: Path) -> tuple[int, bool]:
    """The report opened for appending under an exclusive POSIX lock on the file itself (processes and NFS
    clients with lockd), and whether this call created it. No lock file is left beside it. A file that was
    replaced or removed while we waited for the lock is opened again."""
    import fcntl

    report.parent.mkdir(parents=True, exist_ok=True)
    while True:
        created = False
        try:
            fd = os.open(report, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            try:
                fd = os.open(report, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            created = True
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            current = os.stat(report)
            if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
                return fd, created
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _csv_lines(rows: list[dict[str, str]], header: bool, columns: tuple[str, ...] = CSV_COLUMNS) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({key: csv_cell(row.get(key, "")) for key in columns})
    text = buffer.getvalue()
    shown = utf8_problem(text)
    if shown is not None:
        raise UserError(f"cannot write a results row holding a name that is not UTF-8 text: {shown.strip()}")
    return text.encode("utf-8")


def append_rows(report: str | Path, rows: list[dict[str, str]]) -> None:
    """Appends rows to the results CSV in its own column order, writing this version's header into a new
    or empty file.

    The read-check-append runs under an exclusive lock and the rows go out in one write, so concurrent
    appenders never lose each other's rows; a last line without its newline (an editor strips it) gets
    one first. A failed write leaves the file as it was (a new file is removed), and says why in one line.
    """
    report = Path(report)
    body = _csv_lines(rows, header=False)  # an unwritable cell is refused before the file is touched
    try:
        fd, created = _open_locked(report)
    except OSError as e:
        raise UserError(f"--report {report} cannot be opened for appending: {e.strerror}; pass another --report") \
            from None
    try:
        columns = check_report(report)
        size = os.fstat(fd).st_size
        if size == 0:
            data = _csv_lines([], header=True) + body
        else:
            body = _csv_lines(rows, header=False, columns=columns)
            data = (b"" if os.pread(fd, 1, size - 1) == b"\n" else b"\n") + body
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException as error:
            os.ftruncate(fd, size)  # never half a row: the next append would glue onto it
            if created and size == 0:
                os.unlink(report)  # safe: a waiting appender sees the file gone and creates it again
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise no_space(report, len(data)) from None
            if isinstance(error, OSError):
                raise UserError(f"--report {report} cannot be written: {error.strerror}; pass another --report") \
                    from None
            raise
    finally:
        os.close(fd)  # closing releases the lock


def number(cell: str | None) -> float | None:
    """A metric cell of results.csv as a float; None for an empty, missing or nan cell."""
    try:
        value = float(cell)  # type: ignore[arg-type]  # None raises TypeError, caught below
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def read_rows(report: str | Path) -> list[dict[str, str]]:
    """The rows of a results CSV, each cell as it was before `csv_cell` escaped it."""
    report = Path(report)
    if not report.is_file():
        raise UserError(f"no results file {report}; pass the results.csv that train.py wrote")
    try:
        with open(report, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{report} is not a results CSV ({e}); pass the results.csv that train.py wrote") from None
    except OSError as e:
        raise UserError(f"cannot read {report}: {e.strerror}; pass the results.csv that train.py wrote") from None
    return [{key: csv_text(value) if isinstance(value, str) else value for key, value in row.items()}
            for row in rows]


def write_rows(path: str | Path, rows: list[dict[str, str]]) -> None:
    """A whole results CSV, atomically (for tools that build one)."""
    data = _csv_lines(rows, header=True)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    atomic_write(path, write, size=len(data))
