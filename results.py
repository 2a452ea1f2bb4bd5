"""The on-disk result format, in one place: what train.py writes per category and what the
visualizer, tools/summarize.py and the tests read back.

A category folder `<experiment>/<dataset>/<category>/` holds:

- `metrics.json`: settings, the six metrics, thresholds and seconds per phase (`write_metrics`).
- `scores.npz`: score maps (float16), masks, labels, image scores, defect names, image paths
  (`Scores`, `write_scores` / `read_scores`).
- `model.pt`: the fitted model (models/semi_ortho.py owns that format).

`results.csv` (or `--report`) gets one row per category (`CSV_COLUMNS`) and a `mean` row after a
multi-category run. Appending takes an exclusive lock, so processes and machines that share the
folder can append to one report without losing rows.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common import UserError, atomic_write, write_json

METRICS = ("aupro", "pixel_auroc", "image_auroc", "paper_pro", "paper_roc", "paper_ap")
CSV_COLUMNS = ("dataset", "category", "model", "approx", "k", "eps", "image_size", "crop", "seed", "label", "n_train",
               "n_val", "n_test", *METRICS, "seconds", "output", "protocol")
METRICS_FILE = "metrics.json"
SCORES_FILE = "scores.npz"
MODEL_FILE = "model.pt"


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
    arrays = {"maps": scores.maps.astype(np.float16), "masks": scores.masks.astype(np.uint8),
              "labels": scores.labels.astype(np.int8), "image_scores": scores.image_scores.astype(np.float32),
              "defects": scores.defects if scores.defects is not None else np.array(["good"] * n),
              "paths": scores.paths if scores.paths is not None else np.array([""] * n)}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    atomic_write(path, write)


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
    row.update({m: f"{summary['metrics'][m]:.6f}" if m in summary["metrics"] else "" for m in METRICS})
    return {key: "" if value is None else str(value) for key, value in row.items()}


def mean_row(dataset: str, summaries: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, float]]:
    """The `mean` row after a multi-category run, and the means themselves."""
    means = {m: float(np.mean([s["metrics"][m] for s in summaries])) for m in METRICS}
    first = summaries[0]
    row = {"dataset": dataset, "category": "mean", "model": first["model"], "approx": first["approx"],
           "k": first["k"], "seed": first["seed"], "label": first.get("label", ""),
           "protocol": first.get("protocol", ""),
           **{m: f"{v:.6f}" for m, v in means.items()}}
    return {key: str(row.get(key, "")) for key in CSV_COLUMNS}, means


def check_report(report: str | Path) -> None:
    """Refuses a --report that cannot take our rows, before any work is done."""
    report = Path(report)
    if report.is_dir():
        raise UserError(f"--report {report} is a folder; pass a CSV file path")
    if report.exists():
        try:
            header = report.read_text().splitlines()[:1]
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--report {report} cannot be read ({e}); pass another --report") from None
        if header and header[0].split(",") != list(CSV_COLUMNS):
            raise UserError(f"--report {report} has other columns than this version writes; pass another --report")
    elif report.parent.exists() and not report.parent.is_dir():
        raise UserError(f"--report {report}: {report.parent} is not a folder")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive POSIX lock on `path`.lock, held across processes (and NFS clients with lockd)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def append_rows(report: str | Path, rows: list[dict[str, str]]) -> None:
    """Appends rows to the results CSV, writing the header into a new or empty file.

    The read-check-append runs under an exclusive lock, and the rows go out in one write, so
    concurrent appenders never lose each other's rows.
    """
    report = Path(report)
    with locked(report):
        check_report(report)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        if not report.exists() or report.stat().st_size == 0:
            writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key, "") for key in CSV_COLUMNS})
        with open(report, "a") as f:
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())


def number(cell: str | None) -> float | None:
    """A metric cell of results.csv as a float; None for an empty, missing or nan cell."""
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def read_rows(report: str | Path) -> list[dict[str, str]]:
    report = Path(report)
    if not report.is_file():
        raise UserError(f"no results file {report}; pass the results.csv that train.py wrote")
    with open(report, newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: str | Path, rows: list[dict[str, str]]) -> None:
    """A whole results CSV, atomically (for tools that build one)."""
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({key: row.get(key, "") for key in CSV_COLUMNS})
    atomic_write(path, write)
