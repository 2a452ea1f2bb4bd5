"""train.py's ablation flags end to end: --label convention, --approx global, --metric ap|fpr, --verbose."""
import csv
import json
import re
from pathlib import Path

import pytest

import results
import train
from common import UserError
from tests.helpers.data import write_category
from tools.summarize import main as summarize_main

FAST = ["--weights", "random", "--model", "resnet18", "--workers", "0", "--k", "10", "--image-size", "64",
        "--batch-size", "4"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mvtec")
    write_category(root, "toy", seed=0)
    return root


def test_label_convention_global_fpr_and_verbose(root, tmp_path, capsys):
    exp = tmp_path / "exp"
    argv = ["--dataroot", str(root), "--category", "toy", "--experiment", str(exp), "--approx", "global",
            "--label", "ablation_preReLU_128", "--metric", "fpr", "--verbose", *FAST]
    assert train.main(argv) == 0
    out = capsys.readouterr().out
    assert "--label ablation_preReLU_128: the authors' convention sets --layers 2 --pre-relu" in out
    assert "toy: SEG FPR" in out and "toy: precision in" in out and "toy: score 7 test images" in out
    summary = json.loads((exp / "mvtecad" / "toy" / "metrics.json").read_text())
    assert summary["label"] == "ablation_preReLU_128" and summary["layers"] == [2] and summary["pre_relu"]
    assert summary["approx"] == "global" and summary["k"] == 128  # global: F channels of layer 2
    assert set(results.METRICS) <= set(summary["metrics"]) and "paper_fpr" in summary["metrics"]
    with open(exp / "results.csv") as f:
        row = next(csv.DictReader(f))
    assert row["label"] == "ablation_preReLU_128" and float(row["paper_ap"]) == pytest.approx(
        summary["metrics"]["paper_ap"], abs=1e-6)
    assert train.main(argv[:10] + ["--metric", "ap", "--overwrite", "--experiment", str(exp), *FAST]) == 0
    assert "toy: SEG AP" in capsys.readouterr().out
    assert summarize_main([str(exp / "results.csv")]) == 0  # the sixth column and the label reach the table
    text = capsys.readouterr().out
    assert "| Category | aupro | pixel_auroc | image_auroc | paper_pro | paper_roc | paper_ap |" in text
    assert "label ablation_preReLU_128" in text


@pytest.mark.parametrize("extra, needle", [
    (["--layers", "0"], "--layers 0"),
    (["--layers", ""], "--layers (none)"),
    (["--layers", "1,x"], "--layers 1,x"),
    (["--model", "mobilenetv3_small", "--pre-relu"], "--pre-relu"),
    (["--label", "run_256", "--layers", "1"], "means --layers 3"),
    (["--approx", "lowrank", "--k", "500"], "--k 500"),
])
def test_bad_ablation_flags_are_one_line_errors(extra, needle):
    with pytest.raises(UserError, match=re.escape(needle)):
        train.parse_args(["--dataset", "synthetic", *FAST, *extra])


def test_full_covariance_for_wrn50_is_refused_before_decoding(root, tmp_path):
    with pytest.raises(UserError, match="GB of float32 sums"):
        train.main(["--dataroot", str(root), "--category", "toy", "--experiment", str(tmp_path / "e"),
                    "--weights", "random", "--model", "wide_resnet50_2", "--approx", "lowrank"])
