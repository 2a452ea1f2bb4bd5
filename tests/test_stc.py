"""mSTC: preprocessing the distributed archives (tools/stc_preprocess) and the loader (datasets/stc.py)."""
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from common import UserError
from datasets import stc
from datasets.stc_convert import MARKER, preprocess
from tests.helpers.data import write_stc_archives

REPO = Path(__file__).resolve().parents[1]
SCENES, VIDEOS, VIDEO_FRAMES, CLIPS, CLIP_FRAMES = (1, 2), 2, 12, 2, 15
N_TRAIN = len(SCENES) * VIDEOS * VIDEO_FRAMES
N_CLIPS = len(SCENES) * CLIPS


def make_args(**kw):
    base = dict(dataset="mstc", fold=None, split_file=None, scale="half", startidx=0, train_frames=5000, seed=1111)
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> Path:
    return write_stc_archives(tmp_path_factory.mktemp("stc") / "STC", scenes=SCENES, videos_per_scene=VIDEOS,
                              frames_per_video=VIDEO_FRAMES, clips_per_scene=CLIPS, frames_per_clip=CLIP_FRAMES)


@pytest.fixture(scope="module")
def converted(archives, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "mSTC"
    preprocess(archives, out, workers=1, progress=False)
    return out


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER}


def cli(*args, cwd=REPO):
    return subprocess.run([str(REPO / "tools" / "stc_preprocess.sh"), *map(str, args), "--no-progress"],
                          cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable},
                          timeout=120)


def test_archives_look_distributed(archives):
    assert sorted(p.name for p in (archives / "Testing").iterdir()) == [
        "frames_part1.zip", "frames_part2.zip", "test_frame_mask.zip", "test_pixel_mask.zip"]
    names = zipfile.ZipFile(archives / "training.zip").namelist()
    assert "training/videos/01_001.avi" in names and len(names) == len(SCENES) * VIDEOS
    assert "testing/frames/01_0001/000.jpg" in zipfile.ZipFile(archives / "Testing" / "frames_part1.zip").namelist()


def test_preprocess_layout_and_contents(archives, converted):
    videos = sorted(p.name for p in (converted / "train").iterdir())
    assert videos == [f"{s:02d}_{v:03d}" for s in SCENES for v in range(1, VIDEOS + 1)]
    for v in videos:  # every frame decoded, counted by reading
        frames = sorted(p.name for p in (converted / "train" / v).iterdir())
        assert frames == [f"{i:03d}.jpg" for i in range(VIDEO_FRAMES)]
    clips = sorted(p.name for p in (converted / "test").iterdir())
    assert clips == sorted(p.name for p in (converted / "pixel_mask").iterdir()) and len(clips) == N_CLIPS
    frames_zips = [zipfile.ZipFile(archives / "Testing" / f"frames_part{i}.zip") for i in (1, 2)]
    pixel_zip = zipfile.ZipFile(archives / "Testing" / "test_pixel_mask.zip")
    for clip in clips:
        pixel = np.load(io.BytesIO(pixel_zip.read(f"testing/test_pixel_mask/{clip}.npy")))
        masks = sorted((converted / "pixel_mask" / clip).iterdir())
        assert [p.name for p in masks] == [f"{i:03d}.png" for i in range(CLIP_FRAMES)]
        for t, path in enumerate(masks):  # lossless 0/255 copy of the array
            assert np.array_equal(np.asarray(Image.open(path)), pixel[t].astype(np.uint8) * 255)
        for frame in (converted / "test" / clip).iterdir():  # frames copied byte for byte
            member = f"testing/frames/{clip}/{frame.name}"
            data = next(z.read(member) for z in frames_zips if member in z.namelist())
            assert frame.read_bytes() == data
    assert not [p for p in converted.rglob(".*")]  # no partial folders left


def test_preprocess_is_idempotent_and_finishes_interrupted_runs(archives, converted, tmp_path):
    out = tmp_path / "mSTC"
    shutil.copytree(converted, out)
    before = snapshot(out)
    summary = preprocess(archives, out, workers=1, progress=False)
    assert summary["skipped_this_run"] == len(SCENES) * VIDEOS + N_CLIPS and summary["written_this_run"] == 0
    assert snapshot(out) == before  # nothing rewritten
    # an interrupted run: one clip's frames missing (its masks were renamed first), a stale partial folder
    shutil.rmtree(out / "test" / "02_0002")
    (out / "train" / ".01_002.partial").mkdir()
    (out / "train" / ".01_002.partial" / "000.jpg").write_bytes(b"half")
    shutil.rmtree(out / "train" / "01_002")
    (out / MARKER).unlink()
    with pytest.raises(UserError, match="not a finished"):
        stc.load(out, "mstc", make_args())
    summary = preprocess(archives, out, workers=1, progress=False)
    assert summary["written_this_run"] == 2 and summary["train_frames"] == N_TRAIN
    after = snapshot(out)
    assert after.keys() == before.keys()
    untouched = [k for k in before if not k.startswith(("train/01_002", "test/02_0002", "pixel_mask/02_0002"))]
    assert all(after[k] == before[k] for k in untouched)
    assert not [p for p in out.rglob(".*")]


def test_cli_wrapper_twice_with_workers(archives, tmp_path):
    out = tmp_path / "converted"
    first = cli(archives, out, "--workers", "2")
    assert first.returncode == 0, first.stderr
    assert (out / MARKER).is_file() and "8 written, 0 skipped" in first.stdout
    before = snapshot(out)
    second = cli(archives, out, "--workers", "2")
    assert second.returncode == 0 and "0 written, 8 skipped" in second.stdout
    assert snapshot(out) == before


def rewrite_zip(path: Path, replace: dict[str, bytes | None]) -> None:
    """Rewrite a zip, replacing (bytes) or dropping (None) the named members."""
    entries = [(i.filename, zipfile.ZipFile(path).read(i.filename)) for i in zipfile.ZipFile(path).infolist()]
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries:
            data = replace.get(name, data)
            if data is not None:
                z.writestr(name, data)


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def assert_failed_cleanly(result, out: Path, *needles: str):
    assert result.returncode == 2, result.stdout + result.stderr
    message = result.stderr.strip().splitlines()
    assert message and message[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in message[-1]
    assert not (out / MARKER).exists()  # nothing looks complete
    assert not [p for p in out.rglob(".*")] if out.exists() else True


@pytest.fixture
def bad_archives(archives, tmp_path) -> Path:
    copy = tmp_path / "STC"
    shutil.copytree(archives, copy)
    return copy


def test_missing_archive(bad_archives, tmp_path):
    (bad_archives / "Testing" / "test_pixel_mask.zip").unlink()
    out = tmp_path / "out"
    assert_failed_cleanly(cli(bad_archives, out), out, "test_pixel_mask.zip", "not found")
    assert not out.exists()
    result = cli(tmp_path / "nowhere", out)
    assert result.returncode == 2 and "nowhere" in result.stderr


def test_video_opencv_cannot_open(bad_archives, tmp_path):
    rewrite_zip(bad_archives / "training.zip", {"training/videos/02_001.avi": b"not a video" * 50})
    out = tmp_path / "out"
    result = cli(bad_archives, out, "--workers", "1")
    assert_failed_cleanly(result, out, "02_001.avi", "cannot open")
    assert not (out / "train" / "02_001").exists()
    assert (out / "train" / "01_001").is_dir()  # videos finished before the error stay finished


def test_frame_count_disagrees_with_mask(bad_archives, tmp_path):
    zpath = bad_archives / "Testing" / "test_pixel_mask.zip"
    member = "testing/test_pixel_mask/01_0002.npy"
    short = np.load(io.BytesIO(zipfile.ZipFile(zpath).read(member)))[:-1]
    rewrite_zip(zpath, {member: npy_bytes(short)})
    out = tmp_path / "out"
    assert_failed_cleanly(cli(bad_archives, out, "--workers", "1"), out, "01_0002", "disagrees")
    assert not (out / "test" / "01_0002").exists() and not (out / "pixel_mask" / "01_0002").exists()


def test_frame_mask_length_disagrees(bad_archives, tmp_path):
    zpath = bad_archives / "Testing" / "test_frame_mask.zip"
    rewrite_zip(zpath, {"testing/test_frame_mask/02_0001.npy": npy_bytes(np.zeros(CLIP_FRAMES + 2, np.uint8))})
    out = tmp_path / "out"
    assert_failed_cleanly(cli(bad_archives, out, "--workers", "1"), out, "02_0001", "disagrees")


# ------------------------------------------------------------------------------------------------- loader

def test_loader_protocol(converted):
    splits = stc.load(converted, "mstc", make_args(train_frames=20, seed=7))
    assert stc.categories(converted, make_args()) == ["mstc"]
    assert splits.image_size == (256, 256) and splits.eps == 0.3
    assert len(splits.train) == 20 == len(set(splits.train))  # without replacement
    assert all(s.label == 0 and s.mask is None and "/train/" in str(s.image) for s in splits.train)
    again = stc.load(converted, "mstc", make_args(train_frames=20, seed=7))
    assert again.train == splits.train  # seeded
    assert stc.load(converted, "mstc", make_args(train_frames=20, seed=8)).train != splits.train
    everything = stc.load(converted, "mstc", make_args(train_frames=5000))
    assert len(everything.train) == N_TRAIN and any("fewer than --train-frames" in n for n in everything.notes)

    seen = set()
    for start in range(5):
        test = stc.load(converted, "mstc", make_args(startidx=start, train_frames=5)).test
        numbers = [int(s.image.stem) for s in test]
        assert all(n % 5 == start for n in numbers)
        assert len(test) == N_CLIPS * len(range(start, CLIP_FRAMES, 5))
        for s in test:
            mask = np.asarray(Image.open(converted / "pixel_mask" / s.image.parent.name / f"{s.image.stem}.png"))
            assert s.label == int(mask.any()) and (s.mask is not None) == bool(s.label)
        seen |= {(s.image.parent.name, int(s.image.stem)) for s in test}
    assert len(seen) == N_CLIPS * CLIP_FRAMES  # the five start indices cover every test frame once
    labels = [s.label for s in stc.load(converted, "mstc", make_args(startidx=0, train_frames=5)).test]
    assert 0 < sum(labels) < len(labels)


def test_loader_parses_frame_numbers_without_padding(converted, tmp_path):
    out = tmp_path / "mSTC"
    shutil.copytree(converted, out)
    for folder in [*(out / "train").iterdir(), *(out / "test").iterdir(), *(out / "pixel_mask").iterdir()]:
        for p in folder.iterdir():
            p.rename(p.with_name(f"{int(p.stem)}{p.suffix}"))
    a = stc.load(converted, "mstc", make_args(train_frames=10, startidx=2))
    b = stc.load(out, "mstc", make_args(train_frames=10, startidx=2))
    key = lambda s: (s.image.parent.name, int(s.image.stem), s.label)  # noqa: E731
    assert [key(s) for s in a.train] == [key(s) for s in b.train]
    assert [key(s) for s in a.test] == [key(s) for s in b.test]


def test_loader_errors(converted, tmp_path):
    with pytest.raises(UserError, match="startidx"):
        stc.load(converted, "mstc", make_args(startidx=5))
    with pytest.raises(UserError, match="mstc"):
        stc.load(converted, "scene01", make_args())
    with pytest.raises(UserError, match="stc_preprocess"):
        stc.load(tmp_path, "mstc", make_args())
