"""`--dataset folder`: loader rules and train.py end to end on generated folders."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import results
import train
import visualizer
from common import UserError
from datasets import folder
from datasets.folder import FolderOptions
from tests.helpers.layouts import write_folder

FAST = ["--weights", "random", "--model", "resnet18", "--workers", "0", "--k", "10", "--image-size", "64",
        "--batch-size", "4"]


def options(root: Path, **kw) -> FolderOptions:
    return FolderOptions(**{"dataset": "folder", "normal_dir": root / "good", **kw})


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder") / "widgets"
    write_folder(root, n_normal=15, n_abnormal=4, n_normal_test=3)
    return root


def test_seeded_hold_out_is_disjoint_sized_and_reproducible(tree):
    splits = folder.load(None, "good", options(tree, abnormal_dir=tree / "bad", normal_test_ratio=0.2))
    train_paths = [s.image for s in splits.train]
    held = [s.image for s in splits.test if s.label == 0]
    assert len(held) == 3 and len(train_paths) == 12  # round(0.2 * 15)
    assert not set(held) & set(train_paths) and set(held) | set(train_paths) == set(folder.list_images(tree / "good"))
    assert train_paths == sorted(train_paths)
    again = folder.load(None, "good", options(tree, abnormal_dir=tree / "bad", normal_test_ratio=0.2))
    assert [s.image for s in again.test if s.label == 0] == held
    other = [{s.image for s in folder.load(None, "good", options(tree, abnormal_dir=tree / "bad", seed=seed)).test
              if s.label == 0} for seed in range(2, 7)]
    assert any(o != set(held) for o in other)  # the seed draws them
    assert splits.val is None  # with defective images, every 10th training image calibrates


def test_masks_matched_by_stem_with_or_without_suffix(tmp_path):
    for style, name in (("suffix", "bad_00_mask.png"), ("stem", "bad_00.bmp")):
        root = tmp_path / style
        write_folder(root, n_normal=6, n_abnormal=2, mask_style=style)
        splits = folder.load(None, "x", options(root, abnormal_dir=root / "bad", mask_dir=root / "masks"))
        bad = [s for s in splits.test if s.label == 1]
        assert [s.mask.name for s in bad] == [name, name.replace("00", "01")]
        assert [s.defect for s in bad] == ["bad", "bad"]


def test_missing_mask_is_named_unless_allowed(tmp_path):
    write_folder(tmp_path, n_normal=6, n_abnormal=3)
    (tmp_path / "masks" / "bad_01_mask.png").unlink()
    opts = options(tmp_path, abnormal_dir=tmp_path / "bad", mask_dir=tmp_path / "masks")
    with pytest.raises(UserError, match=r"abnormal image .*bad_01\.png has no mask .*--allow-missing-masks"):
        folder.load(None, "x", opts)
    splits = folder.load(None, "x", FolderOptions(**{**opts.__dict__, "allow_missing_masks": True}))
    assert [(s.image.name, s.mask is None) for s in splits.test if s.label == 1] == [
        ("bad_00.png", False), ("bad_01.png", True), ("bad_02.png", False)]
    assert any("1 abnormal images without a mask" in n for n in splits.notes)


def test_two_masks_with_one_stem_are_refused(tmp_path):
    write_folder(tmp_path, n_normal=4, n_abnormal=1)
    shutil.copy(tmp_path / "masks" / "bad_00_mask.png", tmp_path / "masks" / "bad_00_mask.bmp")
    with pytest.raises(UserError, match="two masks named bad_00_mask"):
        folder.load(None, "x", options(tmp_path, abnormal_dir=tmp_path / "bad", mask_dir=tmp_path / "masks"))


@pytest.mark.parametrize("flags, message", [
    ([], "--dataset folder needs --normal-dir"),
    (["--normal-dir", "{root}/nope"], "--normal-dir {root}/nope is not a folder"),
    (["--normal-dir", "{root}/good", "--abnormal-dir", "{root}/bda"], "--abnormal-dir {root}/bda is not a folder"),
    (["--normal-dir", "{root}/good", "--abnormal-dir", "{root}/bad", "--mask-dir", "{root}/mask"],
     "--mask-dir {root}/mask is not a folder"),
    (["--normal-dir", "{root}/good", "--normal-test-dir", "{root}/good_tst"],
     "--normal-test-dir {root}/good_tst is not"),
    (["--normal-dir", "{root}/good", "--mask-dir", "{root}/masks"], "--mask-dir needs --abnormal-dir"),
    (["--normal-dir", "{root}/masks", "--normal-test-ratio", "1"], r"--normal-test-ratio 1.0 must be in \(0, 1\)"),
    (["--normal-dir", "{root}/good", "--category", "a,b"], "one category"),
    (["--normal-dir", "{root}/empty"], "--normal-dir {root}/empty holds no images"),
    (["--dataset", "mvtecad", "--dataroot", "{root}", "--abnormal-dir", "{root}/bad"],
     "--abnormal-dir is for --dataset folder"),
])
def test_bad_folders_are_one_line_errors_naming_the_path(tree, tmp_path, flags, message):
    (tree / "empty").mkdir(exist_ok=True)
    argv = ["--dataset", "folder", *[f.format(root=tree) for f in flags], *FAST, "--experiment", str(tmp_path / "e")]
    # (a later --dataset wins)
    with pytest.raises(UserError, match=message.format(root=tree)):
        train.main(argv)
    assert not (tmp_path / "e").exists()


def metrics_of(folder_out: Path) -> tuple[dict, np.lib.npyio.NpzFile]:
    return json.loads((folder_out / "metrics.json").read_text()), np.load(folder_out / "scores.npz")


def test_cli_with_abnormal_masks_and_a_normal_test_dir(tree, tmp_path, capsys):
    exp = tmp_path / "exp"
    assert train.main(["--dataset", "folder", "--dataroot", str(tree), "--normal-dir", "good", "--abnormal-dir", "bad",
                       "--mask-dir", "masks", "--normal-test-dir", "good_test", *FAST, "--experiment", str(exp)]) == 0
    assert "good: SEG AUPROC" in capsys.readouterr().out  # the category is the normal folder's name
    summary, scores = metrics_of(exp / "folder" / "good")
    # all 15 normal images are fitted (14) or calibrate (the 10th: 1); 3 normal + 4 defective tested
    assert (summary["n_train"], summary["n_val"], summary["n_test"]) == (14, 1, 7)
    assert list(scores["labels"]) == [0] * 3 + [1] * 4
    assert summary["metrics"]["image_auroc"] == pytest.approx(roc_auc_score(scores["labels"], scores["image_scores"]))
    assert summary["metrics"]["pixel_auroc"] == pytest.approx(
        roc_auc_score(scores["masks"].ravel(), scores["maps"].astype(np.float64).ravel()), abs=2e-3)
    assert summary["metrics"]["pixel_auroc"] > 0.8  # inverted squares


def test_cli_without_abnormal_images_fits_calibrates_and_reports_no_metrics(tree, tmp_path, capsys):
    exp = tmp_path / "exp"
    assert train.main(["--dataset", "folder", "--normal-dir", str(tree / "good"), "--category", "widget",
                       "--normal-test-ratio", "0.3", *FAST, "--experiment", str(exp)]) == 0
    captured = capsys.readouterr()
    assert "widget: no defective test images: no metrics" in captured.out
    assert "no metrics are computed" in captured.err
    out = exp / "folder" / "widget"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.pt"]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["metrics"] == {} and (summary["n_train"], summary["n_val"], summary["n_test"]) == (10, 5, 0)
    assert summary["thresholds"]["n_val"] == 5  # the held-out normal images set the thresholds
    state = torch.load(out / "model.pt", weights_only=True)
    assert state["stats"]["n"] == 10 and state["thresholds"]["pixel"] == summary["thresholds"]["pixel"]
    with open(exp / "results.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["category"] == "widget" and all(row[m] == "" for m in results.METRICS) and row["n_val"] == "5"
    with pytest.raises(UserError, match="has no test images .*nothing to report"):
        visualizer.main(["--ckpt", str(exp), "--dataset", "folder", "--category", "widget"])


def test_cli_allow_missing_masks_scores_those_images_for_the_image_auroc_only(tmp_path, capsys):
    root = tmp_path / "data"
    write_folder(root, n_normal=15, n_abnormal=4, seed=5)
    (root / "masks" / "bad_02_mask.png").unlink()
    argv = ["--dataset", "folder", "--dataroot", str(root), "--normal-dir", "good", "--abnormal-dir", "bad",
            "--mask-dir", "masks", *FAST]
    with pytest.raises(UserError, match="bad_02.png has no mask"):
        train.main([*argv, "--experiment", str(tmp_path / "refused")])
    assert train.main([*argv, "--allow-missing-masks", "--experiment", str(tmp_path / "exp")]) == 0
    summary, scores = metrics_of(tmp_path / "exp" / "folder" / "good")
    assert (summary["n_train"], summary["n_val"], summary["n_test"]) == (11, 1, 7)
    labels, paths = scores["labels"], [Path(p).name for p in scores["paths"]]
    keep = np.array([name != "bad_02.png" for name in paths])
    assert labels.sum() == 4 and keep.sum() == 6
    m = summary["metrics"]
    assert m["image_auroc"] == pytest.approx(roc_auc_score(labels, scores["image_scores"]))
    maps = scores["maps"].astype(np.float64)
    assert m["pixel_auroc"] == pytest.approx(roc_auc_score(scores["masks"][keep].ravel(), maps[keep].ravel()), abs=2e-3)
    assert abs(m["pixel_auroc"] - roc_auc_score(scores["masks"].ravel(), maps.ravel())) > 5e-3  # it was left out


def test_without_a_mask_dir_the_headline_is_the_image_auroc(tmp_path, capsys):
    write_folder(tmp_path, n_normal=12, n_abnormal=3, mask_style=None, seed=2)
    assert train.main(["--dataset", "folder", "--normal-dir", str(tmp_path / "good"), "--abnormal-dir",
                       str(tmp_path / "bad"), *FAST, "--experiment", str(tmp_path / "exp")]) == 0
    captured = capsys.readouterr()
    summary, scores = metrics_of(tmp_path / "exp" / "folder" / "good")
    auroc = roc_auc_score(scores["labels"], scores["image_scores"])
    assert f"good: DET AUROC {auroc:.4f} (no masks: no pixel metrics)" in captured.out
    assert "image-level metrics only" in captured.err
    assert summary["metrics"]["image_auroc"] == pytest.approx(auroc) and np.isnan(summary["metrics"]["aupro"])


def test_csv_row_of_empty_metrics_has_empty_metric_cells():
    summary = {"dataset": "folder", "category": "c", "image_size": [64, 64], "crop": None, "metrics": {},
               "seconds": {"total": 1.5}}
    row = results.csv_row(summary, "out")
    assert all(row[m] == "" for m in results.METRICS) and row["seconds"] == "1.50" and row["output"] == "out"
    full = results.csv_row({**summary, "metrics": dict.fromkeys(results.METRICS, 0.25)}, "out")
    assert all(full[m] == "0.250000" for m in results.METRICS)
