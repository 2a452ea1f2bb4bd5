"""train.py --ci end to end (metrics.json, results.csv, tools/summarize.py) and tools/summarize.py --compare."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import metrics
import results
import train
from common import UserError
from metrics import registry
from metrics.bootstrap import Bootstrap, Resamples
from pipeline import category
from pipeline.options import RunOptions
from tests.helpers.data import write_category
from tools import summarize

REPO = Path(__file__).resolve().parents[1]
FAST = ["--weights", "random", "--model", "resnet18", "--workers", "0", "--k", "10", "--image-size", "64",
        "--batch-size", "4", "--metric", "auroc", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The toy category fitted three times on the same test images: plain, with --ci, and with --ci and
    another seed. (That the same seed draws the same resamples is tests/test_intervals.py's.)"""
    base = tmp_path_factory.mktemp("ci")
    root = base / "data"
    write_category(root, "toy", seed=0)
    made = {}
    for name, extra in (("plain", []), ("ci", ["--ci", "--bootstrap", "200"]),
                        ("seed2", ["--ci", "--bootstrap", "200", "--seed", "2"])):
        exp = base / name
        assert train.main(["--dataroot", str(root), "--category", "toy", "--experiment", str(exp), *FAST, *extra]) == 0
        made[name] = exp
    return made


def summary_of(experiment: Path) -> dict:
    return json.loads((experiment / "mvtecad" / "toy" / "metrics.json").read_text())


def test_ci_leaves_the_metrics_and_stores_intervals_that_hold_them(runs):
    plain, ci = summary_of(runs["plain"]), summary_of(runs["ci"])
    assert set(plain["metrics"]) == set(ci["metrics"]) and "paper_det" in ci["metrics"]
    for name, value in plain["metrics"].items():
        assert ci["metrics"][name] == pytest.approx(value, abs=1e-12), name
    assert "intervals" not in plain and "ci" not in plain
    assert set(ci["intervals"]) == set(ci["metrics"])
    for name, (low, high) in ci["intervals"].items():
        assert low <= ci["metrics"][name] <= high, name
    assert ci["ci"]["level"] == 95 and ci["ci"]["resamples"] == 200 and ci["ci"]["seed"] == 1111
    assert abs(ci["ci"]["grid_error"]["image_auroc"]) < 1e-12  # resampled exactly
    assert "metric_ci" in ci["seconds"] and "metric_ci" not in plain["seconds"]
    assert summary_of(runs["seed2"])["ci"]["seed"] == 2


def test_results_csv_and_summarize_show_the_intervals(runs, capsys):
    with open(runs["ci"] / "results.csv", newline="") as f:
        row = next(csv.DictReader(f))
    ci = summary_of(runs["ci"])
    for name in results.METRICS:
        low, high = ci["intervals"][name]
        assert float(row[f"{name}_lo"]) == pytest.approx(low, abs=1e-6)
        assert float(row[f"{name}_hi"]) == pytest.approx(high, abs=1e-6)
    with open(runs["plain"] / "results.csv", newline="") as f:
        plain_row = next(csv.DictReader(f))
    assert all(plain_row[c] == "" for c in registry.CSV_BOUNDS)
    assert summarize.main([str(runs["ci"] / "results.csv"), "--metric", "image_auroc"]) == 0
    value, (low, high) = ci["metrics"]["image_auroc"], ci["intervals"]["image_auroc"]
    cell = f"{summarize.fmt(value)} [{summarize.fmt(low)}, {summarize.fmt(high)}]"
    assert f"| toy | {cell} |" in capsys.readouterr().out
    assert summarize.main([str(runs["plain"] / "results.csv"), "--metric", "image_auroc"]) == 0
    assert "[" not in capsys.readouterr().out.split("| toy |")[1]


def test_images_without_masks_count_for_the_image_metrics_intervals_only():
    """--allow-missing-masks: a defective image without a mask is resampled for the image AUROC, not for the
    pixel metrics (pipeline/category.py's evaluate), as the metrics themselves are computed."""
    rng = np.random.default_rng(4)
    labels = np.repeat([0, 1], [8, 10])
    masks = np.zeros((18, 16, 16), np.uint8)
    masks[8:16, 3:8, 4:9] = 1  # images 16 and 17 are defective without a mask
    maps = (rng.random((18, 16, 16)) + masks * 0.5 + labels[:, None, None] * 0.2).astype(np.float32)
    s = results.Scores(maps=maps, masks=masks, labels=labels.astype(np.int8), image_scores=maps.max(axis=(1, 2)))
    unmasked = np.zeros(18, bool)
    unmasked[16:] = True
    options = RunOptions(dataset="folder", report=Path("r.csv"), metric="auroc")
    found: dict[str, Resamples] = {}
    values = category.evaluate(options, s, unmasked, {}, Bootstrap(95, 200, 1), found)
    assert values == category.evaluate(options, s, unmasked, {})
    assert all(isinstance(v, float) for v in values.values()) and set(found) == set(values)
    assert found["image_auroc"].jackknife.size == found["paper_det"].jackknife.size == 18
    assert found["pixel_auroc"].jackknife.size == found["aupro"].jackknife.size == 16
    assert found["image_auroc"].point == values["image_auroc"] == metrics.image_auroc(s.image_scores, labels)


@pytest.mark.parametrize("flags, message", [
    (["--ci", "0.95"], "--ci 0.95 must be a percentage in [50, 100)"),
    (["--ci", "100"], "--ci 100 must be a percentage"),
    (["--ci", "nan"], "--ci nan must be a percentage"),
    (["--ci", "--bootstrap", "50"], "--bootstrap 50 must be from 100 to 100000"),
    (["--bootstrap", "500"], "--bootstrap 500 sets the resamples of --ci; add --ci"),
])
def test_bad_ci_flags_are_refused_before_any_work(tmp_path, flags, message):
    with pytest.raises(UserError, match=re.escape(message)):
        train.parse_args(["--dataroot", str(tmp_path), "--experiment", str(tmp_path / "exp"), *FAST, *flags])
    assert not (tmp_path / "exp").exists()


def test_a_bad_ci_flag_is_one_line_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "train.py", "--dataroot", str(tmp_path), *FAST, "--ci", "0.95"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--ci 0.95" in done.stderr, done.stderr


# ------------------------------------------------------------------------------------------ --compare

def write_run(folder: Path, maps: np.ndarray, masks: np.ndarray, labels: np.ndarray, seed: int = 1,
              paths: list[str] | None = None, approx: str = "ortho") -> Path:
    """A category folder as train.py writes it: scores.npz and the metrics.json fields --compare reads."""
    folder.mkdir(parents=True)
    paths = paths or [f"/data/toy/test/{i:03d}.png" for i in range(len(labels))]
    scores = results.Scores(maps=maps, masks=masks.astype(np.uint8), labels=labels.astype(np.int8),
                            image_scores=maps.reshape(len(maps), -1).max(axis=1).astype(np.float32),
                            paths=np.array(paths))
    results.write_scores(folder / results.SCORES_FILE, scores)
    results.write_metrics(folder / results.METRICS_FILE, {
        "dataset": "mvtecad", "category": "toy", "model": "resnet18", "approx": approx, "k": 10, "seed": seed,
        "fpr_limit": 0.3, "num_thresholds": 100, "metrics": dict.fromkeys(results.METRICS, 0.5)})
    return folder


def test_compare_flags_a_difference_only_when_its_interval_holds_zero(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    masks = np.zeros((40, 16, 16), bool)
    masks[20:, 4:9, 5:11] = True
    maps = rng.random((40, 16, 16)) + masks * 0.4
    # as good on the whole: five defects shown more, five less; the difference depends on which are drawn
    mixed = maps.copy()
    mixed[20:25] += masks[20:25] * 0.3
    mixed[25:30] -= masks[25:30] * 0.3
    good = write_run(tmp_path / "good", maps, masks, labels)
    same = write_run(tmp_path / "same", mixed, masks, labels, seed=2)
    better = write_run(tmp_path / "better", maps + masks * 1.0, masks, labels, approx="gaussian")
    assert summarize.main(["--compare", str(good), str(same), "--bootstrap", "200"]) == 0
    lines = {line.split(" | ")[0].strip("| "): line for line in capsys.readouterr().out.splitlines()
             if line.startswith("| ")}
    assert all(lines[m].endswith("| contains 0 |") for m in ("pixel_auroc", "aupro", "paper_pro"))
    assert summarize.main(["--compare", str(better / results.METRICS_FILE), str(good), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    lines = {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("| ")}
    for m in ("pixel_auroc", "aupro", "paper_roc"):
        cells = lines[m].split(" | ")
        assert cells[3].startswith("+") and not lines[m].endswith("contains 0 |"), lines[m]
    assert "A: " in out and "gaussian" in out and "40 test images (20 normal, 20 defective)" in out
    # two seeds on one side (a comma list): the spread over them is printed too
    assert summarize.main(["--compare", f"{good},{same}", str(better), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "Spread due to W alone" in out and "| A (2 runs) | B (1 runs) |" in out


def test_compare_refuses_runs_on_other_images_or_mixed_settings(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 6)
    masks = np.zeros((12, 8, 8), bool)
    masks[6:, 2:5, 2:5] = True
    maps = rng.random((12, 8, 8))
    a = write_run(tmp_path / "a", maps, masks, labels)
    other_paths = write_run(tmp_path / "b", maps, masks, labels, paths=[f"/x/{i}.png" for i in range(12)])
    other_masks = write_run(tmp_path / "c", maps, np.roll(masks, 1, axis=2), labels)
    gaussian = write_run(tmp_path / "d", maps, masks, labels, approx="gaussian")
    with pytest.raises(UserError, match="were not run on the same test images"):
        summarize.main(["--compare", str(a), str(other_paths)])
    with pytest.raises(UserError, match="other masks or labels"):
        summarize.main(["--compare", str(a), str(other_masks)])
    with pytest.raises(UserError, match="differ in approx"):
        summarize.main(["--compare", f"{a},{gaussian}", str(a)])
    with pytest.raises(UserError, match="nothing matches"):
        summarize.main(["--compare", str(tmp_path / "nope*"), str(a)])
    with pytest.raises(UserError, match="--bootstrap 10 must be from 100"):
        summarize.main(["--compare", str(a), str(a), "--bootstrap", "10"])


def test_compare_two_seeds_of_a_run(runs, capsys):
    """Two seeds of one setting on the same test images: each side's interval overlaps the other's."""
    one, two = (runs[n] / "mvtecad" / "toy" for n in ("ci", "seed2"))
    assert summarize.main(["--compare", str(one), str(two), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "seeds 1111" not in out and "seed 1111" in out and "seed 2" in out
    row = next(line for line in out.splitlines() if line.startswith("| image_auroc |"))
    assert row.count("[") == 3
