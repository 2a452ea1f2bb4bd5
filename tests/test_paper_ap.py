"""paper_ap and paper_fpr against literal, slow implementations of the authors' definitions."""
import math

import numpy as np
import pytest

from metrics import evaluate, paper_ap, paper_fpr
from tests.helpers.metric_reference import ALL_CASES, slow_area, thresholds_of


def slow_ap(maps, masks, limit, num_thresholds):
    """x: mean TPR of defective images; y: mean precision of images with a predicted pixel (0 if none)."""
    maps, masks = np.asarray(maps, np.float64), np.asarray(masks, bool)
    if not masks.any():
        return float("nan")
    curve = {}
    for t in thresholds_of(maps, num_thresholds):
        recalls, precisions = [], []
        for score, mask in zip(maps, masks):
            predicted = score > t
            if mask.any():
                recalls.append((predicted & mask).sum() / mask.sum())
            if predicted.any():
                precisions.append((predicted & mask).sum() / predicted.sum())
        x = float(np.mean(recalls))
        curve[x] = float(np.mean(precisions)) if precisions else 0.0  # a repeated x: the last one wins
        if x > limit:
            break
    return slow_area(curve, limit)


def slow_fpr(maps, masks, limit, num_thresholds):
    maps, masks = np.asarray(maps, np.float64), np.asarray(masks, bool)
    curve = {}
    for t in thresholds_of(maps, num_thresholds):
        fprs = [((score > t) & ~mask).sum() / (~mask).sum() for score, mask in zip(maps, masks) if (~mask).any()]
        x = float(np.mean(fprs))
        curve[x] = x
        if x > limit:
            break
    return slow_area(curve, limit)


@pytest.mark.parametrize("maps,masks", ALL_CASES)
@pytest.mark.parametrize("limit,num_thresholds", [(0.3, 1000), (0.05, 50), (1.0, 7), (0.3, 1)])
def test_paper_ap_matches_literal_definition(maps, masks, limit, num_thresholds):
    assert paper_ap(maps, masks, limit, num_thresholds) == pytest.approx(
        slow_ap(maps, masks, limit, num_thresholds), abs=1e-9)


@pytest.mark.parametrize("maps,masks", ALL_CASES)
def test_paper_fpr_matches_literal_definition(maps, masks):
    assert paper_fpr(maps, masks, 0.3, 100) == pytest.approx(slow_fpr(maps, masks, 0.3, 100), abs=1e-9)


def test_paper_ap_with_ties_empty_predictions_and_defect_free_images():
    # Integer scores tie everywhere; the top threshold (the max) predicts nothing anywhere (y = 0);
    # image 0 is defect-free, so its predictions lower the mean precision without adding recall.
    rng = np.random.default_rng(4)
    maps = rng.integers(0, 4, (3, 8, 8)).astype(np.float32)
    masks = np.zeros(maps.shape, bool)
    masks[1, 2:5, 2:5] = masks[2, 0:2, :] = True
    maps[masks] += 1
    for limit in (0.1, 0.5, 1.0):
        expected = slow_ap(maps, masks, limit, 1000)
        assert paper_ap(maps, masks, limit) == pytest.approx(expected, abs=1e-12)
    # The defect-free image counts: scoring it all zero (never predicted) raises the precision.
    quiet = maps.copy()
    quiet[0] = 0
    assert paper_ap(quiet, masks, 1.0) > paper_ap(maps, masks, 1.0)
    assert paper_ap(quiet, masks, 1.0) == pytest.approx(slow_ap(quiet, masks, 1.0, 1000), abs=1e-12)


def test_paper_ap_by_hand():
    # One defective image, 4 pixels: scores 4 3 2 1, defects at 4 and 2. Thresholds with T = 4 are
    # 4 3 2 1: recall 0, .5, .5, 1 with precision 0 (none predicted), 1, 1/2, 2/3. Limit 1: points
    # (0, 0) (.5, 1/2) (1, 2/3) -> 0 + .5 * (1/2 + 0) / 2 + .5 * ((2/3 + 1/2) / 2 + 1/2) / 2.
    maps = np.array([[[4.0, 3.0, 2.0, 1.0]]])
    masks = np.array([[[1, 0, 1, 0]]], bool)
    expected = 0.5 * 0.5 / 2 + 0.5 * ((2 / 3 + 0.5) / 2 + 0.5) / 2
    assert paper_ap(maps, masks, 1.0, 4) == pytest.approx(expected, abs=1e-12)


def test_paper_ap_is_nan_without_defects_and_in_evaluate():
    maps = np.random.default_rng(0).random((2, 4, 4))
    assert math.isnan(paper_ap(maps, np.zeros(maps.shape, bool)))
    masks = np.zeros(maps.shape, bool)
    masks[1, :2, :2] = True
    result = evaluate(maps, masks, maps.reshape(2, -1).max(axis=1), np.array([0, 1]), 0.3, 100)
    assert result["paper_ap"] == paper_ap(maps, masks, 0.3, 100)
