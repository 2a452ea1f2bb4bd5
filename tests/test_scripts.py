"""The user-facing scripts end to end on generated data: script/*.sh and tools/summarize.py."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from common import UserError
from datasets.stc_convert import preprocess
from results import CSV_COLUMNS
from tests.helpers.data import write_kolektor, write_kolektor2, write_mvtec, write_stc_archives
from tools.summarize import main as summarize_main

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "script"
TINY = ["--weights", "random", "--model", "resnet18", "--k", "10", "--batch-size", "8", "--workers", "0",
        "--device", "cpu"]
TEXTURES = ["carpet", "grid", "leather", "tile", "wood"]


def run(cmd, cwd, env=None, timeout=240):
    ambient = ("DATA", "MVTEC_DATA", "MVTEC_NAME", "KOLEKTOR_DATA", "KOLEKTOR2_DATA", "STC_DATA", "STC_NAME")
    env = {**{k: v for k, v in os.environ.items() if k not in ambient}, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def results(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_against_scores(row: dict, n_defective: int) -> None:
    """A category row's AUROCs recomputed from its scores.npz with sklearn, and its test counts."""
    with np.load(Path(row["output"]) / "scores.npz") as npz:
        labels, image_scores, maps, masks = npz["labels"], npz["image_scores"], npz["maps"], npz["masks"]
    assert len(labels) == int(row["n_test"]) and int(labels.sum()) == n_defective, row["category"]
    assert float(row["image_auroc"]) == pytest.approx(roc_auc_score(labels, image_scores), abs=1e-5)
    # the maps are stored as float16, which ties some pixels that were apart when the metric was computed
    pixel = roc_auc_score(masks.ravel() > 0, maps.astype(np.float32).ravel())
    assert float(row["pixel_auroc"]) == pytest.approx(pixel, abs=5e-3)


# ------------------------------------------------------------------------------------------ find_up / setup

def test_find_up_and_setup(tmp_path):
    (tmp_path / "MVTec_AD").mkdir()
    (tmp_path / "MVTec_AD_old").mkdir()
    deep = tmp_path / "work" / "a" / "b"
    deep.mkdir(parents=True)
    (tmp_path / "work" / "other" / "x" / "MVTec_AD").mkdir(parents=True)  # a parent's other subtree: not searched
    (tmp_path / "work" / "KolektorSDD2" / "KolektorSDD").mkdir(parents=True)
    found = run([SCRIPT / "find_up.sh", "MVTec_AD"], cwd=deep)
    chosen = str((tmp_path / "MVTec_AD").resolve())
    assert found.returncode == 0 and found.stdout == chosen + "\n", found.stdout
    assert found.stderr == f"find_up.sh: using {chosen}\n"  # says which folder it chose
    assert run([SCRIPT / "find_up.sh", "KolektorSDD"], cwd=deep).returncode == 1
    (deep / "c" / "d" / "KolektorSDD").mkdir(parents=True)  # below the current folder: searched 3 levels deep
    below = run([SCRIPT / "find_up.sh", "KolektorSDD"], cwd=deep)
    assert below.stdout == str((deep / "c" / "d" / "KolektorSDD").resolve()) + "\n"
    assert run([SCRIPT / "find_up.sh", "NoSuchDataset_xyz"], cwd=deep).returncode == 1
    shell = f'source "{SCRIPT}/setup.sh" MVTec_AD && echo "DATA=<$DATA>"'
    sourced = run(["bash", "-c", shell], cwd=deep)
    assert sourced.returncode == 0 and f"DATA=<{found.stdout.strip()}>" in sourced.stdout
    missing = run(["bash", "-c", f'source "{SCRIPT}/setup.sh" NoSuchDataset_xyz; echo "rc=$? DATA=<$DATA>"'],
                  cwd=deep, env={"DATA": "kept"})
    assert "rc=1 DATA=<kept>" in missing.stdout and "NoSuchDataset_xyz" in missing.stderr


# ------------------------------------------------------------------------------------------- sweep scripts

def test_run_mvtecad_group_in_one_process(tmp_path):
    write_mvtec(tmp_path / "MVTec_AD", TEXTURES)
    bad = run([SCRIPT / "run_mvtecad.sh", "TEXTURES"], cwd=tmp_path)
    assert bad.returncode == 2 and "TEX|OBJA|OBJB|ALL" in bad.stderr
    report = tmp_path / "runs" / "results.csv"
    done = run([SCRIPT / "run_mvtecad.sh", "TEX", *TINY, "--image-size", "64", "64",
                "--experiment", tmp_path / "runs", "--report", report], cwd=tmp_path)  # root found by find_up
    assert done.returncode == 0, done.stderr[-3000:]
    rows = results(report)
    assert [r["category"] for r in rows] == TEXTURES + ["mean"]  # one process: one mean row over the group
    assert all(r["dataset"] == "mvtecad" and r["k"] == "10" for r in rows)
    for r in rows[:-1]:  # 2 good + 2 hole test images per category
        check_against_scores(r, n_defective=2)
    assert done.stderr.count("train.py --dataset mvtecad") == 1


def test_run_kolektor_three_folds_and_ksdd2(tmp_path):
    write_kolektor(tmp_path / "KolektorSDD", n_folders=6, parts=4, seed=1)
    write_kolektor2(tmp_path / "KolektorSDD2", n_train=16, n_test=6, seed=2)
    report = tmp_path / "runs" / "results.csv"
    done = run([SCRIPT / "run_kolektor.sh", *TINY, "--image-size", "128", "48",
                "--experiment", tmp_path / "runs", "--report", report], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = results(report)
    assert [(r["dataset"], r["category"]) for r in rows] == [
        ("kolektor", "fold0"), ("kolektor", "fold1"), ("kolektor", "fold2"), ("kolektor", "mean"),
        ("kolektor2", "ksdd2")]
    for r in rows[:3] + rows[4:]:
        assert r["image_size"] == "128x48" and r["model"] == "resnet18" and r["k"] == "10"  # extra args win
    for r in rows[:3]:  # each fold tests 2 kos folders x 4 parts, one defective part per folder
        assert int(r["n_test"]) == 8
        check_against_scores(r, n_defective=2)
    assert int(rows[4]["n_test"]) == 6  # KSDD2: every third of the 6 test images is defective
    check_against_scores(rows[4], n_defective=2)
    for metric in ("aupro", "pixel_auroc", "image_auroc"):  # the mean row averages the three folds
        assert float(rows[3][metric]) == pytest.approx(np.mean([float(r[metric]) for r in rows[:3]]), abs=2e-6)
    table = tmp_path / "table.md"
    assert summarize_main([str(report), "--out", str(table), "--metric", "pixel_auroc"]) == 0
    text = table.read_text()
    assert "| Model | Fold 1 | Fold 2 | Fold 3 | Avg (Std) | KolektorSDD2 |" in text
    assert "| mean |" not in text.replace("**mean**", "")


def test_run_stc_after_preprocessing(tmp_path):
    archives = write_stc_archives(tmp_path / "STC", scenes=(1, 2), videos_per_scene=2, frames_per_video=10,
                                  clips_per_scene=2, frames_per_clip=15)
    preprocess(archives, tmp_path / "mSTC", workers=1, progress=False)
    report = tmp_path / "runs" / "results.csv"
    done = run([SCRIPT / "run_stc.sh", *TINY, "--image-size", "64", "64", "--train-frames", "30",
                "--startidx", "1", "--experiment", tmp_path / "runs", "--report", report], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SEG AUROC" in done.stdout  # --metric auroc: the seed's mSTC table is ROC
    (row,) = results(report)
    assert row["dataset"] == "mstc" and row["category"] == "mstc" and row["eps"] == "0.3"
    assert row["seed"] == "5555" and row["k"] == "10"  # the authors' seed; extra args override the k
    assert (int(row["n_train"]), int(row["n_val"]), int(row["n_test"])) == (27, 3, 4 * 3)
    check_against_scores(row, n_defective=2)  # frame 6 of the two anomalous clips (anomalies in frames 5..9)


# ---------------------------------------------------------------------------------------------- summarize

# a results.csv written before the label and paper_ap columns existed: it still summarizes
OLD_COLUMNS = [c for c in CSV_COLUMNS if c not in ("label", "paper_ap")]
SAMPLE = ",".join(OLD_COLUMNS) + """
kolektor,fold0,resnet18,ortho,100,0.01,704x256,,1111,1,1,1,0.5,0.953,0.9,0.5,0.953,1,a
kolektor,fold1,resnet18,ortho,100,0.01,704x256,,1111,1,1,1,0.5,0.951,0.9,0.5,0.951,1,a
kolektor,fold2,resnet18,ortho,100,0.01,704x256,,1111,1,1,1,0.5,0.976,0.9,0.5,0.976,1,a
kolektor,mean,resnet18,ortho,100,,,,1111,,,,0.1,0.1,0.1,0.1,0.1,,
kolektor2,ksdd2,resnet18,ortho,100,0.01,704x256,,1111,1,1,1,0.5,0.981,0.9,0.5,0.981,1,a
mvtecad,wood,wide_resnet50_2,ortho,300,0.01,256x256,,1111,1,1,1,0.9,0.95,0.99,0.91,0.96,1,a
mvtecad,carpet,wide_resnet50_2,ortho,300,0.01,256x256,,1111,1,1,1,0.7,0.9,0.8,0.71,0.92,1,a
mvtecad,carpet,wide_resnet50_2,ortho,300,0.01,256x256,,1111,1,1,1,0.8,0.9,0.8,0.81,0.92,1,a
mvtecad,mean,wide_resnet50_2,ortho,300,,,,1111,,,,0.1,0.1,0.1,0.1,0.1,,
"""


def test_summarize_sample_csv(tmp_path, capsys):
    csv_path = tmp_path / "results.csv"
    csv_path.write_text(SAMPLE)
    assert summarize_main([str(csv_path), "--metric", "paper_roc", "--out", str(tmp_path / "t.md")]) == 0
    text = capsys.readouterr().out
    assert text == (tmp_path / "t.md").read_text()
    # the seed's KolektorSDD row: .953 .951 .976 -> .960 (.014), KolektorSDD2 .981
    assert "| resnet18 ortho k=100 704x256 seed 1111 | .953 | .951 | .976 | .960 (.014) | .981 |" in text
    # per-category MVTec table: carpet's later row wins, written mean rows ignored and recomputed
    assert "| carpet | .920 |" in text and "| wood | .960 |" in text and "| **mean** | .940 |" in text
    assert "| **mean** | .960 (.014) |" in text and ".100" not in text
    assert text.index("| carpet |") < text.index("| wood |")
    assert summarize_main([str(csv_path)]) == 0
    header = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| Category")][0]
    assert header == "| Category | aupro | pixel_auroc | image_auroc | paper_pro | paper_roc |"


@pytest.mark.parametrize("argv, needle", [(["missing.csv"], "no results file"), (["bad.csv"], "lacks the column"),
                                          (["good.csv", "--metric", "f1"], "--metric f1")])
def test_summarize_errors(tmp_path, capsys, argv, needle):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    (tmp_path / "good.csv").write_text(SAMPLE)
    with pytest.raises(UserError, match=needle):
        summarize_main([str(tmp_path / argv[0]), *argv[1:]])
    assert capsys.readouterr().out == ""


def test_summarize_cli_error_is_one_line(tmp_path):
    done = run([sys.executable, REPO / "tools" / "summarize.py", tmp_path / "missing.csv"], cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    missing = tmp_path / "missing.csv"
    assert done.stderr == f"error: no results file {missing}; pass the results.csv that train.py wrote\n"
