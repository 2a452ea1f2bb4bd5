"""Conformal thresholds and p-values (models/calibration.py) against literal implementations of their
formulas, a simulation of the false-alarm guarantee, and train.py storing the calibration in model.pt."""
import math
from decimal import Decimal

import numpy as np
import pytest
import torch

import train
from common import UserError
from models.calibration import (
    calibrate,
    calibrate_f1,
    conformal_threshold,
    f1_threshold,
    needed_images,
    p_values,
    threshold_at_fpr,
)
from tests.helpers.data import write_category

FAST = ["--weights", "random", "--model", "resnet18", "--k", "10", "--image-size", "64", "--batch-size", "8",
        "--workers", "0", "--protocol", "standard"]


def literal_threshold(scores, alpha):
    """s_(ceil((n + 1)(1 - alpha))) with alpha read as the decimal it was written as; None past s_(n)."""
    n = len(scores)
    r = math.ceil((n + 1) * (1 - Decimal(repr(alpha))))
    return sorted(scores)[r - 1] if r <= n else None


def literal_p_value(calibration, s):
    return (1 + sum(1 for c in calibration if c >= s)) / (len(calibration) + 1)


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1, 0.2, 0.25, 0.5, 1 / 3])
def test_thresholds_and_p_values_follow_the_formulas(alpha):
    rng = np.random.default_rng(0)
    for n in (1, 4, 9, 19, 20, 39, 99, 100, 250):
        scores = rng.gamma(2.0, size=n).round(1).tolist()  # with ties
        assert conformal_threshold(np.array(scores), alpha) == literal_threshold(scores, alpha), (n, alpha)
        new = rng.gamma(2.0, size=30).round(1).tolist() + scores[:3]
        expected = [literal_p_value(scores, s) for s in new]
        np.testing.assert_array_equal(p_values(np.array(scores), np.array(new)), expected)


def test_images_needed_for_alpha():
    assert needed_images(0.01) == 99 and needed_images(0.05) == 19 and needed_images(0.1) == 9
    for alpha in (0.01, 0.05, 0.1, 0.3):
        n = needed_images(alpha)
        assert literal_threshold(list(range(n)), alpha) is not None
        assert literal_threshold(list(range(n - 1)), alpha) is None


@pytest.mark.parametrize("n,alpha", [(19, 0.05), (20, 0.1), (40, 0.1), (99, 0.01), (150, 0.02), (9, 0.1)])
def test_false_alarm_rate_holds_on_new_images(n, alpha):
    """Thousands of random calibration/test splits of normal scores: the flagged share of new normal images
    is at most alpha + 3 standard errors, and not far below what the order statistic promises."""
    rng = np.random.default_rng(n)
    trials, m = 4000, 20
    rates = np.empty(trials)
    for t in range(trials):
        scores = rng.lognormal(sigma=0.7, size=n + m)  # any continuous distribution
        threshold = conformal_threshold(scores[:n], alpha)
        rates[t] = (scores[n:] > threshold).mean()
    se = rates.std(ddof=1) / math.sqrt(trials)
    assert rates.mean() <= alpha + 3 * se
    r = math.ceil((n + 1) * (1 - Decimal(repr(alpha))))
    assert rates.mean() >= (n + 1 - r) / (n + 1) - 3 * se  # exact for continuous scores: not trivially safe


def test_the_former_rule_does_not_hold_on_new_images():
    """--val-fpr 0.01 on 20 images is their maximum: a new image is flagged 1 time in 21, not 1 in 100."""
    rng = np.random.default_rng(1)
    flagged = []
    for _ in range(4000):
        scores = rng.normal(size=21)
        flagged.append(scores[20] > threshold_at_fpr(scores[:20], 0.01))
    assert np.mean(flagged) > 0.03


def test_calibrate_rules():
    rng = np.random.default_rng(2)
    maps = rng.gamma(2.0, size=(30, 8, 8)).astype(np.float32)
    scores = maps.reshape(30, -1).max(axis=1)
    found = calibrate(maps, scores, alpha=0.1)
    assert found.rule == "conformal" and found.thresholds["alpha"] == 0.1 and found.finite
    assert found.thresholds["image"] == literal_threshold(scores.astype(float).tolist(), 0.1)
    assert found.thresholds["pixel"] == found.thresholds["image"]  # the maxima are the image scores here
    default = calibrate(maps, scores)
    assert default.alpha == pytest.approx(1 / 31) and default.thresholds["image"] == float(scores.max())
    short = calibrate(maps, scores, alpha=0.01)
    assert not short.finite and short.needed == 99 and "image" not in short.thresholds
    old = calibrate(maps, scores, val_fpr=0.1)
    assert old.rule == "empirical" and old.thresholds["image"] == threshold_at_fpr(scores, 0.1)
    assert old.thresholds["pixel"] == threshold_at_fpr(maps, 0.1)


def literal_f1(scores, labels):
    """Every observed score t, F1 of "score >= t"; the best, the lowest t on a tie."""
    best = None
    for t in sorted(set(scores)):
        tp = sum(1 for s, y in zip(scores, labels) if s >= t and y)
        fp = sum(1 for s, y in zip(scores, labels) if s >= t and not y)
        fn = sum(1 for s, y in zip(scores, labels) if s < t and y)
        f1 = 2 * tp / (2 * tp + fp + fn)
        if best is None or f1 > best[1]:
            best = (t, f1)
    return best


def test_f1_threshold_is_anomalibs():
    rng = np.random.default_rng(3)
    for _ in range(20):
        labels = rng.integers(0, 2, 40)
        labels[:2] = (0, 1)
        scores = (rng.normal(size=40) + 1.5 * labels).round(1)
        t, f1 = f1_threshold(scores, labels)
        expected = literal_f1(scores.tolist(), labels.tolist())
        assert t == expected[0] and f1 == pytest.approx(expected[1])
    assert f1_threshold(np.array([2.3, 1.6, 2.6, 7.9, 3.3]), np.array([0, 0, 0, 1, 1]))[0] == 3.3  # anomalib's example


def test_f1_calibration_flags_what_anomalib_flags():
    rng = np.random.default_rng(4)
    normal = rng.gamma(2.0, size=(6, 8, 8)).astype(np.float32)
    defect = rng.gamma(2.0, size=(4, 8, 8)).astype(np.float32)
    masks = np.zeros((4, 8, 8), dtype=np.uint8)
    masks[:, 2:5, 2:5] = 1
    defect[:, 2:5, 2:5] += 3
    found = calibrate_f1(normal, normal.reshape(6, -1).max(1), defect, defect.reshape(4, -1).max(1), masks)
    pixels = np.concatenate([normal.ravel(), defect.ravel()])
    t, _ = f1_threshold(pixels, np.concatenate([np.zeros(normal.size), masks.ravel()]))
    np.testing.assert_array_equal(pixels > found.thresholds["pixel"], pixels >= t)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_category(root, "toy", seed=0, n_train=40)
    return root


def test_train_stores_its_calibration(data, tmp_path):
    train.main(["--dataroot", str(data), "--category", "toy", "--experiment", str(tmp_path), "--alpha", "0.2", *FAST])
    state = torch.load(tmp_path / "mvtecad" / "toy" / "model.pt", weights_only=True)
    calibration, thresholds = state["calibration"], state["thresholds"]
    assert calibration["rule"] == "conformal" and calibration["alpha"] == 0.2 and calibration["n"] == 4
    scores = calibration["scores"].numpy()
    assert thresholds["image"] == literal_threshold(scores.tolist(), 0.2)
    assert thresholds["pixel"] == literal_threshold(calibration["maxima"].numpy().tolist(), 0.2)
    assert len(calibration["files"]) == 64 and calibration["source"] == "train.py"


def test_train_warns_when_alpha_needs_more_images(data, tmp_path, capsys):
    train.main(["--dataroot", str(data), "--category", "toy", "--experiment", str(tmp_path), "--alpha", "0.05", *FAST])
    assert "4 validation images cannot hold --alpha 0.05 (it needs 19): no thresholds stored" in capsys.readouterr().err
    state = torch.load(tmp_path / "mvtecad" / "toy" / "model.pt", weights_only=True)
    assert "image" not in state["thresholds"] and state["thresholds"]["n_needed"] == 19
    assert state["calibration"]["finite"] is False and state["calibration"]["n"] == 4  # p-values still work
    with pytest.raises(UserError, match="--alpha and --val-fpr"):
        train.main(["--dataroot", str(data), "--category", "toy", "--alpha", "0.1", "--val-fpr", "0.1", *FAST])
    with pytest.raises(UserError, match="--alpha 1.0 must be in"):
        train.main(["--dataroot", str(data), "--category", "toy", "--alpha", "1", *FAST])


def test_model_files_with_and_without_a_calibration(data, tmp_path):
    from models import SemiOrthogonal, read_model_file

    train.main(["--dataroot", str(data), "--category", "toy", "--experiment", str(tmp_path), *FAST])
    path = tmp_path / "mvtecad" / "toy" / "model.pt"
    model = SemiOrthogonal.load(path)
    assert model.calibration["alpha"] == pytest.approx(1 / 5) and model.thresholds["image"] == float(
        model.calibration["scores"].max())  # the default: 1 / (n + 1), the maximum of the n = 4
    state = torch.load(path, weights_only=True)
    del state["calibration"]  # as files written before calibrations were recorded
    torch.save(state, tmp_path / "old.pt")
    assert SemiOrthogonal.load(tmp_path / "old.pt").calibration == {}
    state["calibration"] = {**model.calibration, "scores": torch.zeros(3, dtype=torch.float64)}
    torch.save(state, tmp_path / "damaged.pt")
    with pytest.raises(UserError, match="calibration scores is not 4 scores; the file is damaged"):
        read_model_file(tmp_path / "damaged.pt")


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2, 0.3])
def test_flagged_exactly_when_the_p_value_is_at_most_alpha(alpha):
    from fractions import Fraction

    rng = np.random.default_rng(5)
    for n in (19, 20, 33, 60):
        scores = rng.gamma(2.0, size=n).round(1)  # with ties
        new = np.r_[rng.gamma(2.0, size=200).round(1), scores]
        threshold = conformal_threshold(scores, alpha)
        small = [Fraction(1 + int((scores >= s).sum()), n + 1) <= Fraction(repr(alpha)) for s in new]
        assert list(new > threshold) == small
