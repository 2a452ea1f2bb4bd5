"""predict.py --watch: images copied in while it runs, a kill -9 and a restart, SIGTERM: every image has
exactly one row and one regions line; a torn last line is repaired; a bad file is skipped, not fatal."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import predict
from common import UserError
from tests.test_predict import REPO, noise, tiny_model  # noqa: F401  (a fixture)


def rows(out: Path) -> list[dict]:
    path = out / "predictions.csv"
    return list(csv.DictReader(open(path))) if path.is_file() else []


def start(model: Path, inputs: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "predict.py", "--model", str(model), "--watch", str(inputs), "--out",
                             str(out), "--settle", "0.2", "--poll", "0.05", "--batch-size", "1"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def arrive(inputs: Path, name: str, seed: int, renamed: bool) -> None:
    """An image written in place (then left to settle), or written under a temporary name and renamed."""
    target = inputs / name
    if renamed:
        temporary = target.with_name(f".{target.name}.tmp.png")  # hidden: not taken while it is written
        noise(temporary, seed)
        os.rename(temporary, target)
    else:
        noise(inputs / name, seed)


def test_watch_survives_a_kill_and_scores_each_image_once(tiny_model, tmp_path):  # noqa: F811
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    first = start(tiny_model, inputs, out)
    try:
        wait_for(lambda: (out / "predictions.csv").is_file(), first)
        for i in range(8):
            arrive(inputs, f"{i:02d}.png", i, renamed=i % 2 == 0)
        (inputs / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        wait_for(lambda: len(rows(out)) >= 3, first)
        first.send_signal(signal.SIGKILL)  # mid-stream: some images done, some not
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL
    done = rows(out)
    assert 3 <= len(done) < 9
    text = (out / "predictions.csv").read_text()
    (out / "predictions.csv").write_text(text[:-len(text.splitlines()[-1]) // 2 - 1])  # a torn last row
    for i in range(8, 11):  # more arrive while it is down
        arrive(inputs, f"{i:02d}.png", i, renamed=False)
    second = start(tiny_model, inputs, out)
    try:
        wait_for(lambda: len(rows(out)) == 11, second)
        arrive(inputs, "sub/late.png", 11, renamed=True)
        wait_for(lambda: len(rows(out)) == 12, second)
        arrive(inputs, "corrupt.png", 12, renamed=True)  # the bad file, rewritten whole: tried again
        wait_for(lambda: len(rows(out)) == 13, second)
        second.send_signal(signal.SIGTERM)
        stdout, stderr = second.communicate(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 1, stderr  # the corrupt file was reported, not fatal
    assert "corrupt.png" in stderr and "watch: " in stdout and "images/s" in stdout
    names = sorted(Path(r["path"]).relative_to(inputs).as_posix() for r in rows(out))
    assert names == sorted([f"{i:02d}.png" for i in range(11)] + ["corrupt.png", "sub/late.png"])  # each once
    lines = [json.loads(line) for line in (out / "regions.jsonl").read_text().splitlines()]
    assert sorted(Path(line["path"]).relative_to(inputs).as_posix() for line in lines) == names
    assert (out / "predictions.csv").read_text().endswith("\n")
    for name in names:
        assert (out / f"{name}_overlay.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 13 and summary["window"] == 500
    # --watch scores by L^{-1}, --input by the triangular solve: the same image scores to float32 rounding
    assert predict.main(["--model", str(tiny_model), "--input", str(inputs), "--out", str(tmp_path / "all")]) == 0
    watched = {r["path"]: float(r["image_score"]) for r in rows(out)}
    at_once = {r["path"]: float(r["image_score"]) for r in rows(tmp_path / "all")}
    assert watched.keys() == at_once.keys()
    for path, score in at_once.items():
        assert watched[path] == pytest.approx(score, rel=1e-5)


def test_watch_refusals(tiny_model, tmp_path):  # noqa: F811
    (tmp_path / "in").mkdir()
    with pytest.raises(UserError, match="pass --input .* or --watch"):
        predict.main(["--model", str(tiny_model), "--out", str(tmp_path / "out")])
    (tmp_path / "out" / "in").mkdir(parents=True)
    with pytest.raises(UserError, match="is inside --out"):
        predict.main(["--model", str(tiny_model), "--watch", str(tmp_path / "out" / "in"), "--out",
                      str(tmp_path / "out")])
    (tmp_path / "out" / "predictions.csv").write_text("path,image_score\n")
    with pytest.raises(UserError, match="holds a predictions.csv with other columns"):
        predict.main(["--model", str(tiny_model), "--watch", str(tmp_path / "in"), "--out", str(tmp_path / "out")])
