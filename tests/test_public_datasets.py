"""VisA, MVTec AD 2, BTAD and MPDD loaders and train.py runs on generated trees in their published layouts."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

import train
from common import UserError
from datasets import btad, mpdd, mvtecad2, visa
from datasets.options import DataOptions
from tests.helpers.layouts import MPDD_CATEGORIES, write_btad, write_mvtec_layout, write_mvtecad2, write_visa

REPO = Path(__file__).resolve().parents[1]
FAST = ["--weights", "random", "--model", "resnet18", "--workers", "0", "--k", "10", "--image-size", "64",
        "--batch-size", "4"]
OPTS = DataOptions()


def run_train(dataset: str, root: Path, category: str, exp: Path) -> tuple[dict, dict]:
    """One train.py run; its metrics.json and scores.npz, with the image AUROC checked against sklearn."""
    assert train.main(["--dataset", dataset, "--dataroot", str(root), "--category", category, *FAST,
                       "--experiment", str(exp)]) == 0
    out = exp / dataset / category
    summary = json.loads((out / "metrics.json").read_text())
    scores = dict(np.load(out / "scores.npz"))
    assert summary["metrics"]["image_auroc"] == pytest.approx(roc_auc_score(scores["labels"], scores["image_scores"]))
    assert summary["metrics"]["pixel_auroc"] > 0.8  # inverted squares
    return summary, scores


def counts(summary: dict, scores: dict) -> tuple[int, int, int, int]:
    labels = scores["labels"]
    assert len(labels) == summary["n_test"]
    return summary["n_train"], summary["n_val"], int((labels == 0).sum()), int((labels == 1).sum())


# ---- VisA


@pytest.fixture(scope="module")
def visa_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("visa") / "VisA"
    write_visa(root, categories=("candle", "pcb1"), n_train=11, n_normal_test=3, n_anomaly=2)
    return root


def test_visa_reads_the_1cls_split_in_place(visa_root):
    assert visa.categories(visa_root, OPTS) == ["candle", "pcb1"]
    splits = visa.load(visa_root, "pcb1", OPTS)
    normal = visa_root / "pcb1/Data/Images/Normal"
    assert len(splits.train) == 11 and all(s.image.parent == normal for s in splits.train)
    bad = [s for s in splits.test if s.label == 1]
    assert len(splits.test) == 5 and len(bad) == 2
    assert [s.mask for s in bad] == [visa_root / f"pcb1/Data/Masks/Anomaly/{i:03d}.png" for i in range(2)]
    assert splits.image_size == (256, 256) and splits.val is None
    with Image.open(splits.train[0].image) as img:
        assert img.size == (72, 48)  # non-square, read in place and resized by the pipeline


def test_visa_errors_name_the_expected_path(visa_root, tmp_path):
    with pytest.raises(UserError, match=f"VisA split file {tmp_path}/split_csv/1cls.csv not found"):
        visa.categories(tmp_path, OPTS)
    (tmp_path / "split_csv").mkdir()
    (tmp_path / "split_csv" / "1cls.csv").write_text("object,split,label,image\n")
    with pytest.raises(UserError, match="lacks the columns mask"):
        visa.categories(tmp_path, OPTS)
    with pytest.raises(UserError, match="no category 'pcb9'"):
        visa.load(visa_root, "pcb9", OPTS)
    moved = visa_root / "candle/Data/Images/Anomaly/001.JPG"
    moved.rename(moved.with_suffix(".jpg.bak"))
    try:
        with pytest.raises(UserError, match=f"VisA image {moved} listed in .*1cls.csv not found"):
            visa.load(visa_root, "candle", OPTS)
    finally:
        moved.with_suffix(".jpg.bak").rename(moved)


def test_visa_split_saved_with_a_bom_still_reads(visa_root, tmp_path):
    (tmp_path / "split_csv").mkdir()
    text = (visa_root / "split_csv" / "1cls.csv").read_text()
    (tmp_path / "split_csv" / "1cls.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert visa.categories(tmp_path, OPTS) == ["candle", "pcb1"]


def test_visa_end_to_end(visa_root, tmp_path):
    summary, scores = run_train("visa", visa_root, "candle", tmp_path / "exp")
    assert counts(summary, scores) == (10, 1, 3, 2)
    assert scores["maps"].shape == (5, 64, 64)


# ---- MVTec AD 2


@pytest.fixture(scope="module")
def ad2_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ad2") / "mvtec_ad_2"
    write_mvtecad2(root, categories=("can", "vial"), n_train=8, n_val=3, n_good=3, n_bad=3)
    return root


def test_mvtecad2_uses_validation_good_for_calibration(ad2_root):
    assert mvtecad2.categories(ad2_root, OPTS) == ["can", "vial"]
    splits = mvtecad2.load(ad2_root, "vial", OPTS)
    assert len(splits.train) == 8 and [s.image.parent.parent.name for s in splits.val] == ["validation"] * 3
    assert all(s.image.parent.parent.name == "test_public" for s in splits.test)  # test_private is left alone
    bad = [s for s in splits.test if s.label == 1]
    assert len(splits.test) == 6 and [s.mask.name for s in bad] == [f"{i:03d}_overexposed_mask.png" for i in range(3)]


@pytest.mark.parametrize("remove, message", [
    ("can/validation", "MVTec AD 2 folder {root}/can/validation/good not found"),
    ("can/test_public/bad", "MVTec AD 2 folder {root}/can/test_public/bad not found"),
    ("can/test_public/ground_truth/bad/001_overexposed_mask.png",
     "has no mask {root}/can/test_public/ground_truth/bad/001_overexposed_mask.png"),
])
def test_mvtecad2_errors_name_the_expected_path(tmp_path, remove, message):
    root = tmp_path / "ad2"
    write_mvtecad2(root, categories=("can",), n_train=2, n_val=1, n_good=1, n_bad=2)
    target = root / remove
    if target.is_dir():
        for path in sorted(target.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(UserError, match=message.format(root=root)):
        mvtecad2.load(root, "can", OPTS)
    with pytest.raises(UserError, match=f"expected {tmp_path}/<category>/train/good"):
        mvtecad2.categories(tmp_path, OPTS)


def test_mvtecad2_end_to_end_calibrates_on_validation(ad2_root, tmp_path):
    summary, scores = run_train("mvtecad2", ad2_root, "can", tmp_path / "exp")
    assert counts(summary, scores) == (8, 3, 3, 3)  # all of train/good fitted, validation/good calibrates
    assert summary["thresholds"]["n_val"] == 3


# ---- BTAD


@pytest.fixture(scope="module")
def btad_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("btad") / "BTech_Dataset_transformed"
    write_btad(root, n_train=10, n_ok=2, n_ko=3)
    return root


def test_btad_products_and_mask_extensions(btad_root):
    assert btad.categories(btad_root, OPTS) == ["01", "02", "03"]
    for product, image_ext, mask_ext in (("01", ".bmp", ".png"), ("02", ".png", ".png"), ("03", ".bmp", ".bmp")):
        splits = btad.load(btad_root, product, OPTS)
        assert len(splits.train) == 10 and len(splits.test) == 5
        bad = [s for s in splits.test if s.label == 1]
        assert [(s.image.suffix, s.mask.suffix, s.mask.stem == s.image.stem) for s in bad] == [
            (image_ext, mask_ext, True)] * 3


def test_btad_errors_name_the_expected_path(btad_root, tmp_path):
    with pytest.raises(UserError, match=f"expected {tmp_path}/01/train/ok"):
        btad.categories(tmp_path, OPTS)
    with pytest.raises(UserError, match=f"{btad_root}/04/train/ok not found"):
        btad.load(btad_root, "04", OPTS)
    mask = btad_root / "02" / "ground_truth" / "ko" / "0001.png"
    mask.rename(tmp_path / "kept.png")
    try:
        with pytest.raises(UserError, match=f"has no mask {btad_root}/02/ground_truth/ko/0001.png"):
            btad.load(btad_root, "02", OPTS)
    finally:
        (tmp_path / "kept.png").rename(mask)


def test_btad_end_to_end(btad_root, tmp_path):
    summary, scores = run_train("btad", btad_root, "03", tmp_path / "exp")
    assert counts(summary, scores) == (9, 1, 2, 3)


# ---- MPDD (MVTec AD's layout)


@pytest.fixture(scope="module")
def mpdd_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mpdd") / "MPDD"
    write_mvtec_layout(root, MPDD_CATEGORIES, n_train=10, n_good=2, n_bad=2)
    write_mvtec_layout(root, ("not_mpdd",), n_train=1, n_good=1, n_bad=1)
    return root


def test_mpdd_lists_its_six_categories(mpdd_root, tmp_path):
    assert mpdd.categories(mpdd_root, OPTS) == list(MPDD_CATEGORIES)
    splits = mpdd.load(mpdd_root, "tubes", OPTS)
    assert (len(splits.train), len(splits.test), sum(s.label for s in splits.test)) == (10, 4, 2)
    with pytest.raises(UserError, match="MPDD has no category 'not_mpdd'"):
        mpdd.load(mpdd_root, "not_mpdd", OPTS)
    with pytest.raises(UserError, match=f"expected {tmp_path}/bracket_black/train/good"):
        mpdd.categories(tmp_path, OPTS)


def test_mpdd_end_to_end_and_a_missing_root_is_one_line(mpdd_root, tmp_path):
    summary, scores = run_train("mpdd", mpdd_root, "metal_plate", tmp_path / "exp")
    assert counts(summary, scores) == (9, 1, 2, 2)
    with open(tmp_path / "exp" / "results.csv", newline="") as f:
        assert [row["dataset"] for row in csv.DictReader(f)] == ["mpdd"]
    env = {k: v for k, v in os.environ.items() if k != "DATA"}
    result = subprocess.run([sys.executable, "train.py", "--dataset", "visa", "--dataroot", str(mpdd_root), *FAST,
                             "--experiment", str(tmp_path / "e2")], cwd=REPO, capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"VisA split file {mpdd_root}/split_csv/1cls.csv not found" in result.stderr


# ---- sweeps and tables

SWEEPS = {"run_visa.sh": ("visa", "VISA_DATA", "VisA"),
          "run_mvtecad2.sh": ("mvtecad2", "MVTEC2_DATA", "mvtec_ad_2"),
          "run_btad.sh": ("btad", "BTAD_DATA", "BTech_Dataset_transformed"),
          "run_mpdd.sh": ("mpdd", "MPDD_DATA", "MPDD")}


def sweep(script: str, cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    ambient = {"DATA", *(var for _, var, _ in SWEEPS.values()), "VISA_NAME", "MVTEC2_NAME", "BTAD_NAME", "MPDD_NAME"}
    env = {**{k: v for k, v in os.environ.items() if k not in ambient}, **env}
    return subprocess.run([str(REPO / "script" / script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=240)


@pytest.mark.parametrize("script", sorted(SWEEPS))
def test_sweep_finds_its_root_by_variable_or_name(script, tmp_path):
    dataset, variable, name = SWEEPS[script]
    (tmp_path / name).mkdir(parents=True)  # beside the current folder: found among a parent's children
    (tmp_path / "work").mkdir()
    for env, expected in (({variable: "/elsewhere"}, "/elsewhere"), ({}, str((tmp_path / name).resolve()))):
        result = sweep(script, tmp_path / "work", {"PYTHON": "echo", **env}, "--k", "7")  # echo: the command alone
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[1:] == ["--dataset", dataset, "--dataroot", expected, "--category", "all",
                                             "--k", "7"]
    missing = sweep(script, tmp_path / "work", {"PYTHON": "echo", variable.replace("_DATA", "_NAME"): "Nowhere_xyz"})
    assert missing.returncode == 0 and "no Nowhere_xyz folder found" in missing.stderr
    assert "--dataroot" not in missing.stdout  # train.py then takes $DATA or names the missing root

def test_btad_sweep_runs_and_summarize_titles_it(btad_root, tmp_path):
    exp = tmp_path / "exp"
    result = sweep("run_btad.sh", tmp_path, {"BTAD_DATA": str(btad_root), "PYTHON": sys.executable},
                   *FAST, "--category", "01,02", "--experiment", str(exp))
    assert result.returncode == 0, result.stderr
    with open(exp / "results.csv", newline="") as f:
        assert [(r["dataset"], r["category"]) for r in csv.DictReader(f)] == [
            ("btad", "01"), ("btad", "02"), ("btad", "mean")]
    from tools.summarize import main as summarize_main
    assert summarize_main([str(exp / "results.csv"), "--out", str(tmp_path / "t.md"), "--metric", "image_auroc"]) == 0
    table = (tmp_path / "t.md").read_text()
    assert table.startswith("### BTAD: resnet18") and "| 01 |" in table and "| **mean** |" in table
