"""train.py end to end on a tiny MVTec-layout tree, random weights, small images, CPU."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import results
import train
from common import UserError
from tests.helpers.data import write_category

REPO = Path(__file__).resolve().parents[1]
BASE = ["--weights", "random", "--model", "resnet18", "--workers", "0"]
FAST = BASE + ["--k", "10", "--image-size", "64", "--batch-size", "4"]


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mvtec")
    write_category(root, "toy", seed=0)
    write_category(root, "gray", seed=1, gray=True)
    return root


def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DATA"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=300)


def test_fit_and_evaluate_one_category(mvtec_root, tmp_path, capsys):
    exp = tmp_path / "exp"
    assert train.main(["--dataroot", str(mvtec_root), "--category", "toy", "--experiment", str(exp), *FAST]) == 0
    out = capsys.readouterr().out
    assert "toy: SEG AUPROC" in out
    folder = exp / "mvtecad" / "toy"
    summary = json.loads((folder / "metrics.json").read_text())
    assert set(summary["metrics"]) == set(results.METRICS)
    # the paper's pipeline by default for MVTec AD: validation images 000 and 010 (index % 10 == 0)
    assert summary["n_train"] == 10 and summary["n_val"] == 2 and summary["n_test"] == 7
    assert summary["protocol"] == "paper"
    assert summary["metrics"]["pixel_auroc"] > 0.8  # inverted 14 px squares are not subtle
    scores = np.load(folder / "scores.npz")
    assert scores["maps"].shape == (7, 64, 64) and scores["maps"].dtype == np.float16
    assert scores["masks"].shape == (7, 64, 64) and set(np.unique(scores["masks"])) <= {0, 1}
    assert list(scores["labels"]) == [1] * 4 + [0] * 3 and list(scores["defects"]) == ["blob"] * 4 + ["good"] * 3
    np.testing.assert_allclose(scores["image_scores"], scores["maps"].astype(np.float32).max(axis=(1, 2)), rtol=1e-3)
    # the reported AUROCs are those of the stored scores (maps are stored as float16, hence the tolerance)
    assert summary["metrics"]["image_auroc"] == pytest.approx(roc_auc_score(scores["labels"], scores["image_scores"]),
                                                              abs=1e-9)
    assert summary["metrics"]["pixel_auroc"] == pytest.approx(
        roc_auc_score(scores["masks"].ravel(), scores["maps"].astype(np.float64).ravel()), abs=2e-3)
    state = torch.load(folder / "model.pt", weights_only=True)
    assert state["config"]["backbone"] == "resnet18" and state["stats"]["n"] == 10
    assert state["config"]["protocol"] == "paper"  # predict.py decodes new images the same way
    assert state["meta"] == {"dataset": "mvtecad", "category": "toy", "weights": "random"}  # merge_stats compares
    rows = list(csv.DictReader(open(exp / "results.csv")))
    assert len(rows) == 1 and rows[0]["category"] == "toy" and rows[0]["protocol"] == "paper"
    assert float(rows[0]["aupro"]) == pytest.approx(
        summary["metrics"]["aupro"], abs=1e-6)

    with pytest.raises(UserError, match="already holds results"):  # never overwrite silently
        train.main(["--dataroot", str(mvtec_root), "--category", "toy", "--experiment", str(exp), *FAST])
    train.main(["--dataroot", str(mvtec_root), "--category", "toy", "--experiment", str(exp), "--overwrite",
                "--metric", "auroc", *FAST])
    assert "DET AUROC" in capsys.readouterr().out
    rerun = json.loads((folder / "metrics.json").read_text())
    # seeded: the same numbers again; --metric auroc adds the authors' DET AUROC
    assert {k: v for k, v in rerun["metrics"].items() if k != "paper_det"} == pytest.approx(summary["metrics"])
    assert set(rerun["metrics"]) - set(summary["metrics"]) == {"paper_det"}
    assert len(list(csv.DictReader(open(exp / "results.csv")))) == 2


def test_all_categories_nonsquare_and_crop(mvtec_root, tmp_path):
    exp = tmp_path / "exp"
    train.main(["--dataroot", str(mvtec_root), "--experiment", str(exp), *BASE, "--k", "10",
                "--image-size", "64", "96", "--batch-size", "3", "--protocol", "standard"])
    rows = list(csv.DictReader(open(exp / "results.csv")))
    assert [r["category"] for r in rows] == ["gray", "toy", "mean"]
    assert [r["protocol"] for r in rows] == ["standard"] * 3
    assert float(rows[2]["aupro"]) == pytest.approx((float(rows[0]["aupro"]) + float(rows[1]["aupro"])) / 2, abs=1e-6)
    assert np.load(exp / "mvtecad" / "gray" / "scores.npz")["maps"].shape == (7, 64, 96)
    train.main(["--dataroot", str(mvtec_root), "--category", "toy", "--experiment", str(tmp_path / "crop"),
                *FAST, "--image-size", "72", "--crop", "64"])
    assert np.load(tmp_path / "crop" / "mvtecad" / "toy" / "scores.npz")["maps"].shape == (7, 64, 64)


def test_help_works_without_data():
    result = run_cli("-h")
    assert result.returncode == 0 and "--dataroot" in result.stdout


def bad_tree(tmp_path: Path) -> Path:
    root = tmp_path / "bad"
    write_category(root, "toy", seed=2, n_train=4)
    return root


@pytest.mark.parametrize("case, args, message", [
    ("no dataroot", [], "pass --dataroot or set DATA"),
    ("missing dataroot", ["--dataroot", "/nonexistent/MVTec"], "is not a folder"),
    ("unknown category", ["--category", "carpet"], "found: toy"),
    ("k larger than F", ["--k", "5000"], "--k 5000 must be between 1 and F = 448"),
    ("paper, non-square", ["--k", "10", "--image-size", "64", "96"], "pass one size or --protocol standard"),
    ("no thresholds", ["--k", "10", "--nsamples", "0"], "--nsamples 0 must be at least 1"),
    ("zero eps", ["--k", "10", "--eps", "0"], "--eps 0.0 must be positive"),
    ("report is a folder", ["--k", "10", "--report", "/tmp"], "--report /tmp is a folder"),
    ("experiment is a file", ["--k", "10", "--experiment", "/etc/hostname"], "--experiment /etc/hostname is a file"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, case, args, message):
    root = bad_tree(tmp_path)
    base = [] if case in ("no dataroot", "missing dataroot") else ["--dataroot", str(root)]
    result = run_cli(*base, *BASE, "--image-size", "64", "--experiment", str(tmp_path / "exp"),
                     *(args or ["--k", "10"]))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "exp").exists()


def test_truncated_image_and_missing_mask_are_named(tmp_path):
    root = bad_tree(tmp_path)
    broken = root / "toy" / "train" / "good" / "001.png"
    broken.write_bytes(broken.read_bytes()[:100])
    result = run_cli("--dataroot", str(root), *FAST, "--workers", "1", "--experiment", str(tmp_path / "e1"))
    assert result.returncode == 2 and "001.png" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "e1" / "mvtecad" / "toy" / "model.pt").exists()

    root = bad_tree(tmp_path / "second")
    (root / "toy" / "ground_truth" / "blob" / "002_mask.png").unlink()
    with pytest.raises(UserError, match="002.png has no mask"):
        train.main(["--dataroot", str(root), *FAST, "--experiment", str(tmp_path / "e2")])


def test_missing_imagenet_weights_say_what_to_do(tmp_path):
    root = bad_tree(tmp_path)
    result = run_cli("--dataroot", str(root), "--model", "resnet18", "--image-size", "64", "--workers", "0",
                     "--experiment", str(tmp_path / "exp"),
                     env_extra={"TORCH_HOME": str(tmp_path / "torch"), "no_proxy": "", "NO_PROXY": "",
                                "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"})
    assert result.returncode == 2
    assert "--weights random" in result.stderr and "resnet18-f37072fd.pth" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_cli_on_a_generated_synthetic_category(tmp_path):
    result = run_cli("--dataset", "synthetic", "--category", "bolt", *FAST, "--experiment", str(tmp_path / "exp"),
                     env_extra={"SEMIORTHO_SYNTHETIC": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert "bolt: SEG AUPROC" in result.stdout
    assert (tmp_path / "cache" / "bolt" / "train" / "good").is_dir()  # generated on first use
    folder = tmp_path / "exp" / "synthetic" / "bolt"
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "model.pt", "scores.npz"]
    metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
    scores = np.load(folder / "scores.npz")
    assert metrics["image_auroc"] == pytest.approx(roc_auc_score(scores["labels"], scores["image_scores"]), abs=1e-9)
    assert metrics["pixel_auroc"] > 0.5


def test_no_training_images_is_a_user_error(tmp_path):
    root = bad_tree(tmp_path)
    for image in (root / "toy" / "train" / "good").iterdir():
        image.unlink()
    with pytest.raises(UserError, match="no training images"):
        train.main(["--dataroot", str(root), *FAST, "--experiment", str(tmp_path / "exp")])
    assert not (tmp_path / "exp").exists()
