"""The distributed ShanghaiTech Campus archives: where they are, what they hold, how to read a member.

Members are matched by name, not by their folder inside the zip: every `*.avi` of training.zip is a
training video named by its stem; every numbered `*.jpg` of the frame zips belongs to the clip named by
its parent folder; every `*.npy` of a mask zip belongs to the clip named by its stem. tools/stc_preprocess.py
documents the full layout.
"""
from __future__ import annotations

import os
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from common import UserError

TRAIN_ZIP = "training.zip"
FRAME_ZIPS = ("frames_part1.zip", "frames_part2.zip")
PIXEL_ZIP = "test_pixel_mask.zip"
FRAME_MASK_ZIP = "test_frame_mask.zip"
FRAME_RE = re.compile(r"^(\d+)\.jpe?g$", re.IGNORECASE)


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
