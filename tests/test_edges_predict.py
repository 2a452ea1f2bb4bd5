"""predict.py and visualizer.py at the edges: concurrent and killed runs, --out inside --input, formula
cells, non-finite flags, odd and long names, a full disk, a read-only folder, portable scores.npz paths."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import predict
import train
import visualizer
from common import UserError, run_cli
from pipeline import predict_score
from report.image_pages import image_file
from report.render import image_order
from results import SCORES_FILE, read_scores, write_scores
from tests.helpers.data import write_category
from tests.test_predict import noise, tiny_model  # noqa: F401  (a fixture)
from tests.test_visualizer import make_category

REPO = Path(__file__).resolve().parents[1]


def cli(main, args: list[str], capsys) -> tuple[int, str]:
    """Runs an entry point as its command line does (run_cli): (exit code, stderr)."""
    handler = signal.getsignal(signal.SIGTERM)
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as stop:
            run_cli(lambda: main(args))
    finally:
        signal.signal(signal.SIGTERM, handler)
    return stop.value.code, capsys.readouterr().err


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def mount(tmp_path):
    """mount(name, options): a tmpfs at tmp_path/name, unmounted afterwards; skips where mounting fails."""
    mounted = []

    def make(name: str, options: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(folder)], check=False)  # still busy: detach it now, free it later


# item 3: a second run into the same --out is refused at its commit; the first one's files stay whole
def test_a_run_that_lost_its_out_to_another_is_refused(tiny_model, tmp_path, monkeypatch):  # noqa: F811
    out = tmp_path / "out"
    for name in ("a.png", "b.png"):
        noise(tmp_path / "first" / name, 0)
    noise(tmp_path / "second" / "c.png", 1)
    save_png, nested = predict_score.save_png, []

    def meanwhile(array, path):
        if not nested:  # while the first run writes its first file, another run fills --out
            nested.append("started")
            nested.append(predict.main(["--model", str(tiny_model), "--input", str(tmp_path / "second"),
                                        "--out", str(out)]))
        save_png(array, path)

    monkeypatch.setattr(predict_score, "save_png", meanwhile)
    with pytest.raises(UserError, match="written by another run meanwhile"):
        predict.main(["--model", str(tiny_model), "--input", str(tmp_path / "first"), "--out", str(out)])
    assert nested == ["started", 0]
    assert sorted(files(out)) == ["c_heatmap.png", "c_mask.png", "c_overlay.png", "predictions.csv",
                                 "regions.jsonl", "summary.json"]
    assert [Path(r["path"]).name for r in csv.DictReader(open(out / "predictions.csv"))] == ["c.png"]
    assert hidden(tmp_path) == []


# item 4: a killed run leaves nothing in --out; the next run removes its leftovers without --overwrite
def test_a_killed_run_leaves_nothing_and_the_next_run_cleans_up(tiny_model, tmp_path):  # noqa: F811
    inputs, work = tmp_path / "in", tmp_path / "work"
    for i in range(24):
        noise(inputs / f"{i:02d}.png", i)
    work.mkdir()
    args = ["--model", str(tiny_model), "--input", str(inputs), "--out", str(work / "out"), "--batch-size", "1"]
    run = subprocess.Popen([sys.executable, "predict.py", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not any(work.rglob("*_heatmap.png")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert run.returncode == -signal.SIGKILL, "finished before it could be killed"
    assert not (work / "out").exists() or files(work / "out") == {}
    rerun = ["--model", str(tiny_model), "--input", str(inputs / "00.png"), "--out", str(work / "out")]
    assert predict.main(rerun) == 0  # no --overwrite needed: nothing of the killed run counts as results
    assert hidden(work) == []
    assert sorted(files(work / "out")) == ["00_heatmap.png", "00_mask.png", "00_overlay.png",
                                                 "predictions.csv", "regions.jsonl", "summary.json"]


# item 5: --out inside --input: a run's own heat maps are never inputs of the next
def test_out_inside_the_input_folder_is_not_read_back(tiny_model, tmp_path):  # noqa: F811
    inputs = tmp_path / "in"
    noise(inputs / "a.png", 0)
    noise(inputs / "b.png", 1)
    args = ["--model", str(tiny_model), "--input", str(inputs), "--out", str(inputs / "pred")]
    for extra in ([], ["--overwrite"]):
        assert predict.main(args + extra) == 0
        rows = list(csv.DictReader(open(inputs / "pred" / "predictions.csv")))
        assert sorted(Path(r["path"]).name for r in rows) == ["a.png", "b.png"]
    with pytest.raises(UserError, match="inside --out"):
        predict.main(["--model", str(tiny_model), "--input", str(inputs / "pred"), "--out", str(inputs / "pred"),
                      "--overwrite"])


# item 7: no cell of predictions.csv is a spreadsheet formula
def test_a_formula_name_is_escaped_in_the_csv(tiny_model, tmp_path, monkeypatch):  # noqa: F811
    noise(tmp_path / "=SUM(1+1)*cmd.png", 0)
    monkeypatch.chdir(tmp_path)
    assert predict.main(["--model", str(tiny_model), "--input", "=SUM(1+1)*cmd.png", "--out", "out"]) == 0
    lines = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert lines[1].startswith("'=SUM(1+1)*cmd.png,")


# item 11: every float flag is finite and in range, checked before anything is read or written
@pytest.mark.parametrize("flag, value", [("--threshold", "nan"), ("--image-threshold", "nan"),
                                         ("--threshold", "inf"), ("--image-threshold", "-1")])
def test_float_flags_must_be_finite_and_in_range(tiny_model, tmp_path, flag, value):  # noqa: F811
    noise(tmp_path / "in" / "a.png", 0)
    with pytest.raises(UserError, match=flag):
        predict.main(["--model", str(tiny_model), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                      flag, value])
    assert not (tmp_path / "out").exists()


# item 20: names too long for the file system are refused before any image is decoded
def test_a_name_too_long_is_refused_before_anything_is_written(tiny_model, tmp_path, capsys,  # noqa: F811
                                                                monkeypatch):
    noise(tmp_path / "in" / "a.png", 0)
    noise(tmp_path / "in" / ("x" * 248 + ".png"), 1)
    monkeypatch.setattr(predict_score, "read_image", lambda path: pytest.fail(f"decoded {path}"))
    code, err = cli(predict.main, ["--model", str(tiny_model), "--input", str(tmp_path / "in"),
                                   "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and err.count("\n") == 1 and "x" * 248 + ".png" in err and "longer than" in err, err
    assert not (tmp_path / "out").exists() and hidden(tmp_path) == []


# item 20: a file name that is not UTF-8 (Linux bytes) is scored, written and listed in a UTF-8 CSV
def test_a_name_that_is_not_utf8(tiny_model, tmp_path):  # noqa: F811
    noise(tmp_path / "in" / "a.png", 0)
    noise(tmp_path / "in" / "b.png", 1)
    os.rename(os.fsencode(tmp_path / "in" / "b.png"), os.fsencode(tmp_path / "in") + b"/\xff.png")
    assert predict.main(["--model", str(tiny_model), "--input", str(tmp_path / "in"),
                         "--out", str(tmp_path / "out")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv", encoding="utf-8")))
    assert sorted(Path(r["path"]).name for r in rows) == ["\\xff.png", "a.png"]
    assert b"\xff_heatmap.png" in os.listdir(os.fsencode(tmp_path / "out"))


# items 16/17: a full disk or a read-only folder: one line, exit 2, earlier results kept, nothing partial
def test_predict_on_a_full_disk_keeps_the_earlier_results(tiny_model, tmp_path, mount, capsys):  # noqa: F811
    disk = mount("disk", "size=3m")
    noise(tmp_path / "small" / "a.png", 0)
    out = disk / "pred"
    assert predict.main(["--model", str(tiny_model), "--input", str(tmp_path / "small"), "--out", str(out)]) == 0
    before = files(out)
    big = tmp_path / "big"
    big.mkdir()
    for i in range(3):  # noise does not compress: about 1 MB a PNG
        from PIL import Image
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (600, 600, 3)).astype(np.uint8)).save(
            big / f"{i}.png")
    code, err = cli(predict.main, ["--model", str(tiny_model), "--input", str(big), "--out", str(out),
                                   "--overwrite"], capsys)
    assert code == 2 and err.count("\n") == 1 and "no space left" in err and str(out) in err, err
    assert files(out) == before and hidden(disk) == []


def test_predict_into_a_read_only_folder(tiny_model, tmp_path, mount, capsys):  # noqa: F811
    read_only = mount("ro", "ro,size=1m")
    noise(tmp_path / "in" / "a.png", 0)
    for out, expected in ((read_only / "pred", "read-only file system"), (read_only, "mount point")):
        code, err = cli(predict.main, ["--model", str(tiny_model), "--input", str(tmp_path / "in"),
                                       "--out", str(out)], capsys)
        assert code == 2 and err.count("\n") == 1 and expected in err, err


@pytest.fixture
def experiment(tmp_path) -> Path:
    make_category(tmp_path / "exp" / "synthetic" / "carpet", tmp_path / "images")
    return tmp_path / "exp"


def test_visualizer_on_a_full_disk_and_a_read_only_folder(experiment, tmp_path, mount, capsys):
    disk, read_only = mount("disk", "size=64k"), mount("ro", "ro,size=1m")
    (disk / "report.pdf").write_bytes(b"an earlier report")
    for out, expected in ((disk / "report.pdf", "no space left"), (read_only / "report.pdf", "read-only")):
        code, err = cli(visualizer.main, ["--ckpt", str(experiment), "--out", str(out), "--max-images", "2"], capsys)
        assert code == 2 and err.count("\n") == 1 and expected in err.lower() and str(out) in err, err
    assert files(disk) == {"report.pdf": b"an earlier report"}


# item 14: scores.npz names its images absolutely; a missing image is one warning with a count
def test_scores_name_their_images_absolutely(tmp_path, monkeypatch):
    write_category(tmp_path / "data", "toy", seed=0, n_train=12)
    monkeypatch.chdir(tmp_path)
    train.main(["--dataroot", "data", "--category", "toy", "--experiment", "exp", "--weights", "random",
                "--model", "resnet18", "--k", "10", "--image-size", "32", "--workers", "0", "--protocol", "standard"])
    paths = read_scores(tmp_path / "exp" / "mvtecad" / "toy" / SCORES_FILE).paths
    monkeypatch.chdir(REPO)
    assert len(paths) and all(Path(p).is_absolute() and Path(p).is_file() for p in paths)


def test_visualizer_warns_once_about_missing_images(experiment, tmp_path, capsys):
    scores = read_scores(experiment / "synthetic" / "carpet" / SCORES_FILE)
    gone = str(scores.paths[image_order(scores.labels, scores.image_scores, 2)[1]])
    Path(gone).unlink()
    assert visualizer.main(["--ckpt", str(experiment), "--out", str(tmp_path / "r.pdf"), "--max-images", "2"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: 1 of 2 test images") and gone in err, err


def test_old_relative_paths_still_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # where training ran
    make_category(Path("exp") / "synthetic" / "carpet", Path("images"))
    relative = str(read_scores(Path("exp/synthetic/carpet") / SCORES_FILE).paths[0])
    assert not Path(relative).is_absolute()
    assert visualizer.main(["--ckpt", "exp", "--out", "r.pdf", "--max-images", "1"]) == 0
    assert capsys.readouterr().err == ""
    monkeypatch.chdir(REPO)  # elsewhere: resolved against the experiment folder and the folders above it
    assert image_file(relative, tmp_path / "exp") == tmp_path / relative


# item 20: the visualizer draws a test image whose name is not UTF-8
def test_visualizer_with_a_name_that_is_not_utf8(experiment, tmp_path, capsys):
    scores_path = experiment / "synthetic" / "carpet" / SCORES_FILE
    scores = read_scores(scores_path)
    first = image_order(scores.labels, scores.image_scores, 1)[0]
    odd = os.fsdecode(os.fsencode(Path(scores.paths[first]).parent) + b"/\xff.png")
    os.rename(scores.paths[first], odd)
    scores.paths = np.array([odd if i == first else p for i, p in enumerate(scores.paths)])
    write_scores(scores_path, scores)
    assert visualizer.main(["--ckpt", str(experiment), "--out", str(tmp_path / "r.pdf"), "--max-images", "1"]) == 0
    assert capsys.readouterr().err == ""  # found and drawn


# progress: bars only on a terminal (as train.py), never into a redirected stderr
def test_visualizer_draws_no_bars_into_a_redirected_stderr(experiment, tmp_path, capsys):
    assert visualizer.main(["--ckpt", str(experiment), "--out", str(tmp_path / "r.pdf"), "--max-images", "0"]) == 0
    assert capsys.readouterr().err == ""
    assert visualizer.parse_args(["--ckpt", str(experiment), "--quiet"]).quiet
