"""Drift (pipeline/drift.py): the flagged count's null distribution against a literal formula, the warning
rate on an unchanged line and on a changed one, and predict.py's summary.json."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import predict
import train
from models.calibration import conformal_threshold
from pipeline.drift import LEVEL, flag_test, summary
from tests.helpers.data import write_category

FAST = ["--weights", "random", "--model", "resnet18", "--k", "10", "--image-size", "64", "--batch-size", "8",
        "--workers", "0", "--protocol", "standard"]


def literal_tail(k, m, n, r):
    """P(K >= k) for K ~ beta-binomial(m, n + 1 - r, r), term by term."""
    a, b = n + 1 - r, r

    def log_beta(x, y):
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)

    return sum(math.comb(m, j) * math.exp(log_beta(j + a, m - j + b) - log_beta(a, b)) for j in range(k, m + 1))


def test_flag_test_is_the_beta_binomial_tail():
    for k, m, n, r in [(0, 10, 20, 19), (3, 10, 20, 19), (10, 10, 4, 4), (7, 30, 6, 6), (1, 1, 99, 99), (5, 50, 40, 3)]:
        assert flag_test(k, m, n, r) == pytest.approx(literal_tail(k, m, n, r), rel=1e-9)
    assert flag_test(3, 10, 5, 0) is None  # below every calibration score: nothing promised


def warning_rate(shift, scale, trials=400, n=60, m=120, alpha=0.1, seed=0):
    rng = np.random.default_rng(seed)
    warned = 0
    for _ in range(trials):
        calibration = rng.lognormal(sigma=0.5, size=n)
        new = rng.lognormal(sigma=0.5, size=m) * scale + shift
        warned += summary(new, conformal_threshold(calibration, alpha), calibration, {})["drift"]
    return warned / trials


def test_an_unchanged_line_rarely_warns():
    rate = warning_rate(0.0, 1.0)
    assert rate <= 2 * LEVEL + 3 * math.sqrt(2 * LEVEL / 400)  # two tests, each at LEVEL


@pytest.mark.parametrize("shift,scale", [(0.0, 1.5), (0.0, 0.6), (0.4, 1.0)])
def test_a_changed_line_warns(shift, scale):
    assert warning_rate(shift, scale, trials=100) >= 0.9


def test_summary_without_a_calibration():
    found = summary(np.array([1.0, 2.0, 3.0]), 2.5, None, {})
    assert found["images"] == 3 and found["flagged"] == 1 and found["calibration"] is None
    assert found["flag_test"] is None and found["uniformity"] is None and not found["drift"]


def test_predict_writes_the_summary_and_warns_on_a_lighting_change(tmp_path, capsys):
    root = tmp_path / "data"
    write_category(root, "toy", seed=2, n_train=100)  # 10 validation images
    train.main(["--dataroot", str(root), "--category", "toy", "--experiment", str(tmp_path / "e"), "--alpha", "0.1",
                *FAST])
    model = tmp_path / "e" / "mvtecad" / "toy" / "model.pt"
    write_category(tmp_path / "more", "toy", seed=3, n_train=8)  # new normal images from the same line
    good = sorted((tmp_path / "more" / "toy" / "train" / "good").glob("*.png"))
    same, dark = tmp_path / "same", tmp_path / "dark"
    same.mkdir()
    dark.mkdir()
    for path in good:
        image = Image.open(path)
        image.save(same / path.name)
        Image.fromarray((np.asarray(image) * 0.35).astype(np.uint8)).save(dark / path.name)  # the lights dimmed
    capsys.readouterr()
    assert predict.main(["--model", str(model), "--input", str(same), "--out", str(tmp_path / "p1")]) == 0
    found = json.loads((tmp_path / "p1" / "summary.json").read_text())
    rows = list(csv.DictReader(open(tmp_path / "p1" / "predictions.csv")))
    assert found["images"] == len(rows) == 8 and found["flagged"] == sum(int(r["is_anomalous"]) for r in rows)
    assert found["calibration"]["n"] == 10 and found["calibration"]["alpha"] == 0.1
    assert found["promised_false_alarm_rate"] == pytest.approx(1 / 11)
    assert not found["drift"] and "warning" not in capsys.readouterr().err
    assert predict.main(["--model", str(model), "--input", str(dark), "--out", str(tmp_path / "p2")]) == 0
    found = json.loads((tmp_path / "p2" / "summary.json").read_text())
    assert found["drift"] and found["flag_test"]["p_value"] < LEVEL
    assert "warning: the line no longer looks like the calibration" in capsys.readouterr().err
    assert Path(tmp_path / "p2" / "regions.jsonl").is_file()
