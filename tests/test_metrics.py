"""metrics/ against slow, literal re-implementations of the definitions in docs/metrics.md
(tests/helpers/metric_reference.py)."""
import math

import numpy as np
import pytest
from scipy import ndimage

from metrics import aupro, evaluate, image_auroc, paper_pro, paper_roc, pixel_auroc, pro_curve
from tests.helpers.metric_reference import ALL_CASES, CASES, slow_aupro, slow_auroc, slow_paper, slow_pro_curve

# ---------------------------------------------------------------- ROC-AUC

@pytest.mark.parametrize("maps,masks", ALL_CASES)
def test_pixel_auroc_matches_pair_count(maps, masks):
    assert pixel_auroc(maps, masks) == pytest.approx(slow_auroc(maps[~masks], maps[masks]), abs=1e-12)


def test_image_auroc_matches_pair_count_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(20):
        labels = rng.random(30) < 0.4
        scores = rng.integers(0, 5, 30).astype(np.float64)
        expected = slow_auroc(scores[~labels], scores[labels])
        assert image_auroc(scores, labels.astype(np.uint8)) == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------- exact PRO

@pytest.mark.parametrize("maps,masks", ALL_CASES)
@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_pro_curve_and_aupro_match_every_threshold(maps, masks, fpr_limit):
    fpr, pro = pro_curve(maps, masks, fpr_limit)
    slow_fpr, slow_pro = slow_pro_curve(maps, masks)
    end = np.flatnonzero(slow_fpr > fpr_limit)
    end = end[0] + 1 if end.size else slow_fpr.size
    np.testing.assert_allclose(fpr, slow_fpr[:end], rtol=0, atol=1e-12)
    np.testing.assert_allclose(pro, slow_pro[:end], rtol=0, atol=1e-12)
    assert aupro(maps, masks, fpr_limit) == pytest.approx(slow_aupro(maps, masks, fpr_limit), abs=1e-9)


def test_aupro_by_hand():
    # Two regions (columns 0 and 3), negatives 0.8 and 0.1: points (0,0) (0,.5) (.5,.5) (.5,1) (1,1).
    maps = np.array([[[0.9, 0.8, 0.1, 0.7]]])
    masks = np.array([[[1, 0, 0, 1]]], np.uint8)
    fpr, pro = pro_curve(maps, masks, 1.0)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(pro, [0, 0.5, 0.5, 1, 1])
    assert aupro(maps, masks, 1.0) == pytest.approx(0.75)
    assert aupro(maps, masks, 0.3) == pytest.approx(0.5)


def test_regions_are_eight_connected():
    # Region {(0,0), (0,1), (1,2)} touches diagonally: one region of 3, so the lone 0.9 pixel covers
    # a third of it (4-connectivity would give two regions and 1/2).
    maps = np.full((1, 3, 3), 0.5)
    masks = np.zeros((1, 3, 3), bool)
    masks[0, 0, :2] = masks[0, 1, 2] = True
    maps[0, 0, :2], maps[0, 1, 2] = 0.1, 0.9
    assert aupro(maps, masks, 1.0) == pytest.approx(1 / 3)
    assert paper_pro(maps, masks, 1.0) == pytest.approx(1 / 3)
    assert paper_pro(maps, masks, 1.0) == pytest.approx(slow_paper(maps, masks, 1.0, 1000, "pro"), abs=1e-12)


def test_pro_curve_when_a_strided_sample_misleads_the_cut():
    # Every 16th pixel scores high, so a guess of the cut from every 16th score keeps too few.
    rng = np.random.default_rng(3)
    maps = rng.integers(0, 40, (2, 16, 32)).astype(np.float32) / 40  # ties at the cut too
    maps.reshape(-1)[::16] += 10
    masks = np.zeros(maps.shape, bool)
    masks[1, 5:9, 3:7] = True
    maps[1, 5:9, 3:7] += 0.5
    for fpr_limit in (0.01, 0.1, 0.3):
        assert aupro(maps, masks, fpr_limit) == pytest.approx(slow_aupro(maps, masks, fpr_limit), abs=1e-9)


def test_aupro_larger_random_maps_with_continuous_scores():
    rng = np.random.default_rng(5)
    masks = np.zeros((3, 24, 24), bool)
    masks[1, 3:9, 4:12] = masks[2, 15:20, 15:22] = masks[2, 2, 2] = True
    maps = ndimage.gaussian_filter(rng.normal(size=masks.shape), (0, 2, 2)) + 0.5 * masks
    for fpr_limit in (0.02, 0.3):
        assert aupro(maps, masks, fpr_limit) == pytest.approx(slow_aupro(maps, masks, fpr_limit), abs=1e-9)


# ---------------------------------------------------------------- the authors' protocol

@pytest.mark.parametrize("maps,masks", ALL_CASES)
@pytest.mark.parametrize("fpr_limit,num_thresholds", [(0.3, 1000), (0.05, 50), (1.0, 7), (0.3, 1)])
def test_paper_pro_matches_literal_protocol(maps, masks, fpr_limit, num_thresholds):
    expected = slow_paper(maps, masks, fpr_limit, num_thresholds, "pro")
    assert paper_pro(maps, masks, fpr_limit, num_thresholds) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("maps,masks", ALL_CASES)
@pytest.mark.parametrize("num_thresholds", [1000, 13])
def test_paper_roc_matches_literal_protocol(maps, masks, num_thresholds):
    expected = slow_paper(maps, masks, 1.0, num_thresholds, "tpr")
    assert paper_roc(maps, masks, num_thresholds) == pytest.approx(expected, abs=1e-9)


def test_paper_metrics_on_more_thresholds_than_pixels_and_continuous_scores():
    rng = np.random.default_rng(7)
    masks = np.zeros((5, 20, 20), bool)
    masks[1, 2:6, 2:6] = masks[1, 10:12, 10:18] = masks[3, 5:15, 8:9] = masks[4, 0, 0] = True
    maps = ndimage.gaussian_filter(rng.normal(size=masks.shape), (0, 1.5, 1.5)) + 0.3 * masks
    for fpr_limit in (0.1, 0.3):
        expected = slow_paper(maps, masks, fpr_limit, 1000, "pro")
        assert paper_pro(maps, masks, fpr_limit) == pytest.approx(expected, abs=1e-9)
    assert paper_roc(maps, masks) == pytest.approx(slow_paper(maps, masks, 1.0, 1000, "tpr"), abs=1e-9)


def test_paper_protocol_gives_zero_for_a_binary_map_equal_to_the_mask():
    # Only thresholds 1 and 0 exist and both have FPR 0: a single point (0, 1) whose triangle from the
    # origin has no area. This is the protocol, not a bug of ours (the exact metrics give 1).
    masks = np.zeros((3, 8, 8), bool)
    masks[1, 2:5, 2:5] = True
    maps = masks.astype(np.float32)
    assert paper_pro(maps, masks) == 0.0 == slow_paper(maps, masks, 0.3, 1000, "pro")
    assert paper_roc(maps, masks) == 0.0


# ---------------------------------------------------------------- properties

def separable_case():
    """Defects score in (1, 1.5], everything else in [0, 0.5); image 1 holds the global max and the
    highest defect-free score, so the paper's thresholds pass between the classes."""
    rng = np.random.default_rng(11)
    masks = np.zeros((4, 16, 16), bool)
    masks[1, 3:7, 3:9] = masks[1, 12, 12] = masks[2, 8:14, 1:4] = True
    maps = 0.45 * rng.random(masks.shape) + masks * (1 + 0.4 * rng.random(masks.shape))
    maps[1, 0, 0], maps[1, 3, 3] = 0.49, 1.5
    return maps, masks


def test_perfect_maps_score_one():
    maps, masks = separable_case()
    scores = maps.reshape(len(maps), -1).max(axis=1)
    labels = masks.any(axis=(1, 2))
    result = evaluate(maps, masks, scores, labels)
    # paper_ap's first point is a triangle from the origin (the authors' rule), so even a perfect map
    # scores below 1 there; tests/test_paper_ap.py checks it against the literal definition
    ap = result.pop("paper_ap")
    assert result == pytest.approx(dict.fromkeys(result, 1.0), abs=1e-12) and 0.5 < ap < 1
    binary = masks.astype(np.float32)  # a map equal to the mask, ties within each class
    assert aupro(binary, masks) == pytest.approx(1.0, abs=1e-12)
    assert pixel_auroc(binary, masks) == 1.0
    assert image_auroc(labels.astype(float), labels) == 1.0


def test_inverted_maps_score_near_zero():
    maps, masks = separable_case()
    inverted = -maps
    scores = -maps.reshape(len(maps), -1).max(axis=1)  # inverted image scores
    labels = masks.any(axis=(1, 2))
    result = evaluate(inverted, masks, scores, labels)
    # AP's precision cannot fall below 0, but at the recall limit the inverted map predicts nearly every
    # pixel, so it stays below the precision of predicting everything
    assert 0 <= result.pop("paper_ap") < masks.mean()
    for name, value in result.items():
        assert 0 <= value < 1e-3, name
    binary = 1 - masks.astype(np.float32)
    assert aupro(binary, masks) == 0.0 and pixel_auroc(binary, masks) == 0.0
    assert paper_pro(binary, masks) == 0.0 and paper_roc(binary, masks) == 0.0


@pytest.mark.parametrize("maps,masks", ALL_CASES)
def test_aupro_is_a_fraction(maps, masks):
    for fpr_limit in (0.01, 0.3, 1.0):
        assert 0 <= aupro(maps, masks, fpr_limit) <= 1


def test_undefined_metrics_are_nan():
    maps = np.random.default_rng(0).random((2, 5, 5))
    no_defect, all_defect = np.zeros(maps.shape, bool), np.ones(maps.shape, bool)
    for masks in (no_defect, all_defect):
        for metric in (pixel_auroc, aupro, paper_pro, paper_roc):
            assert math.isnan(metric(maps, masks))
        fpr, pro = pro_curve(maps, masks)
        assert fpr.size == pro.size == 0
    assert math.isnan(image_auroc(np.array([0.1, 0.2]), np.array([1, 1])))
    result = evaluate(maps, no_defect, np.array([0.1, 0.2]), np.array([0, 0]))
    assert all(math.isnan(v) for v in result.values())


# ---------------------------------------------------------------- inputs and evaluate

def test_float16_and_integer_maps_and_uint8_masks_equal_their_float_bool_selves():
    maps, masks = CASES[0]
    half = maps.astype(np.float16)
    integer = (maps * 12).round().astype(np.int32)
    for metric in (pixel_auroc, aupro, paper_pro, paper_roc):
        assert metric(half, masks.astype(np.uint8)) == metric(half.astype(np.float32), masks)
        assert metric(integer, masks) == metric(integer.astype(np.float64), masks)


def test_evaluate_returns_every_metric_and_fills_timings():
    maps, masks = CASES[1]
    scores = maps.reshape(len(maps), -1).max(axis=1)
    labels = masks.any(axis=(1, 2))
    timings = {}
    result = evaluate(maps, masks, scores, labels, fpr_limit=0.2, num_thresholds=100, timings=timings)
    assert set(result) == set(timings) == {"aupro", "pixel_auroc", "image_auroc", "paper_pro", "paper_roc",
                                                 "paper_ap"}
    assert all(isinstance(v, float) for v in result.values())
    assert all(t >= 0 for t in timings.values())
    assert result["aupro"] == aupro(maps, masks, 0.2)
    assert result["paper_pro"] == paper_pro(maps, masks, 0.2, 100)
    assert result["paper_roc"] == paper_roc(maps, masks, 100)
    assert result["image_auroc"] == image_auroc(scores, labels)


def test_bad_inputs_raise_value_error():
    maps, masks = CASES[0]
    with pytest.raises(ValueError):
        aupro(maps, masks[:, :-1])
    with pytest.raises(ValueError):
        pixel_auroc(maps[0], masks[0])
    with pytest.raises(ValueError):
        aupro(maps, masks, fpr_limit=0)
    with pytest.raises(ValueError):
        paper_pro(maps, masks, num_thresholds=0)
    nan_maps = maps.copy()
    nan_maps[0, 0, 0] = np.nan
    with pytest.raises(ValueError):
        pixel_auroc(nan_maps, masks)
    with pytest.raises(ValueError):
        image_auroc(np.zeros(3), np.zeros(4))


@pytest.mark.parametrize("maps,masks", ALL_CASES)
def test_auroc_matches_sklearn(maps, masks):
    from sklearn.metrics import roc_auc_score

    if masks.any() and not masks.all():
        assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    labels = masks.reshape(len(masks), -1).any(axis=1)
    scores = maps.reshape(len(maps), -1).max(axis=1)
    if labels.any() and not labels.all():
        assert image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
