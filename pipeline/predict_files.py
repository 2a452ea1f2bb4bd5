"""predict.py's output folder: each image's output names, what --out may hold, name limits, the CSV.

--out is committed whole (pipeline/outputs.py), so the checks here decide, before any image is
decoded, whether the folder may be replaced and whether every name fits the file system.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections import Counter
from pathlib import Path

from common import UserError, atomic_write, csv_cell, printable
from pipeline import outputs

KINDS = ("heatmap", "overlay", "mask")
CSV_NAME = "predictions.csv"
REGIONS_NAME = "regions.jsonl"  # one JSON line per image: its regions (pipeline/regions.py)
SUMMARY_NAME = "summary.json"  # the run against the calibration (pipeline/drift.py)
COLUMNS = ["path", "image_score", "is_anomalous", "anomalous_area", "p_value", "n_regions"]


def output_folder(spec: str) -> Path:
    """--out as an absolute path, checked: the commit renames it, so it must be a folder that can be renamed."""
    out = Path(os.path.abspath(spec))
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {spec} is a file; pass a folder for the outputs")
    if out.parent == out or os.path.ismount(out):
        raise UserError(f"--out {spec} is a mount point, which cannot be replaced whole; "
                        f"pass a folder inside it, e.g. {out / 'predictions'}")
    return out


def in_out_folder(path: Path, out: Path) -> bool:
    """`path` lies in --out, or in a staging folder of a run into it (hidden, beside --out)."""
    for folder in (path, *path.parents):
        if folder == out or (folder.parent == out.parent and folder.name.startswith(f".{out.name}.")):
            return True
    return False


def output_names(paths: list[Path], spec: str) -> list[str]:
    """Each image's output name: its path relative to the input folder, without the suffix; unique
    also on case-insensitive file systems, and stable for a given set of inputs (they come sorted)."""
    base = spec if Path(spec).is_dir() else os.path.commonpath([os.path.abspath(p.parent) for p in paths])
    relative = [Path(os.path.relpath(os.path.abspath(p), os.path.abspath(base))) for p in paths]
    stems = [r.with_suffix("").as_posix() for r in relative]
    counts = Counter(stem.casefold() for stem in stems)
    preferred = [r.as_posix() if counts[stem.casefold()] > 1 else stem for r, stem in zip(relative, stems)]
    reserved = {name.casefold() for name in preferred}
    names: list[str] = []
    used: set[str] = set()
    for name in preferred:
        candidate, n = name, 1
        while candidate.casefold() in used or (n > 1 and candidate.casefold() in reserved):
            n += 1
            candidate = f"{name}~{n}"  # only A.PNG beside a.png gets here
        used.add(candidate.casefold())
        names.append(candidate)
    return names


def output_paths(out: Path, name: str) -> dict[str, Path]:
    return {kind: out / f"{name}_{kind}.png" for kind in KINDS}


def _written_by_predict(relative: Path) -> bool:
    if relative.as_posix() in (CSV_NAME, REGIONS_NAME, SUMMARY_NAME):
        return True
    return relative.name.endswith(tuple(f"_{kind}.png" for kind in KINDS)) and not relative.name.startswith(".")


def claim(out: Path, overwrite: bool) -> None:
    """Refuses, before any image is decoded, an --out that holds predictions (without --overwrite) or files
    predict.py does not write (ever: the commit replaces the folder whole); removes what killed runs left."""
    for note in outputs.clean_stale(out):
        print(f"warning: {note}", file=sys.stderr)
    if not out.is_dir():
        return
    held = sorted(p.relative_to(out) for p in out.rglob("*") if not p.is_dir())
    foreign = [p for p in held if not _written_by_predict(p)]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise UserError(f"--out {printable(out)} holds {printable(foreign[0].as_posix())}{more}, which predict.py "
                        "does not write; --out is replaced whole: pass a new or empty folder")
    if held and not overwrite:
        first = Path(CSV_NAME) if Path(CSV_NAME) in held else held[0]
        more = f" (and {len(held) - 1} more files)" if len(held) > 1 else ""
        raise UserError(f"--out {printable(out)} already holds {printable(first.as_posix())}{more}; "
                        "pass --overwrite or another --out")


def check_names(staging: Path, names: list[str], paths: list[Path]) -> None:
    """Every output path fits the file system's limits, checked before any image is decoded (an input
    name near 255 bytes would otherwise stop the run halfway with ENAMETOOLONG)."""
    try:
        name_max = os.pathconf(staging, "PC_NAME_MAX")
        path_max = os.pathconf(staging, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    for name, path in zip(names, paths):
        for file in output_paths(staging, name).values():
            parts = os.fsencode(file.relative_to(staging))
            if max(len(part) for part in parts.split(b"/")) > name_max or len(os.fsencode(file)) >= path_max:
                raise UserError(f"--input {printable(path)}: its output name {printable(file.name)} is longer than "
                                f"the file system allows ({name_max} bytes a name); rename the image or move it "
                                "to a shorter folder")


def write_csv(path: Path, rows: list[dict]) -> None:
    """UTF-8 whatever the file names: no cell a spreadsheet would evaluate, no name that cannot be encoded."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(csv_row(row))
    atomic_write(path, lambda tmp: Path(tmp).write_text(buffer.getvalue(), encoding="utf-8"))


def csv_row(row: dict) -> dict:
    return {key: csv_cell(printable(value) if key == "path" else value) for key, value in row.items()}


def regions_line(line: dict) -> str:
    """One image's regions.jsonl line (UTF-8; a name's bytes that are not UTF-8 as \\xNN, as in the CSV)."""
    return json.dumps(line, ensure_ascii=False) + "\n"


def write_regions(path: Path, lines: list[dict]) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(map(regions_line, lines)), encoding="utf-8"))
