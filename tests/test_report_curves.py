"""The report's curves against the metrics package: the drawing shows the numbers the metrics report."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import metrics
from metrics.pro import trapezoid  # np.trapezoid on numpy >= 2, np.trapz before
from report.curves import bin_index, binned_curves, finite_range, image_roc, pro_curve_for_drawing, pro_points


def test_binned_curves_match_definition():
    rng = np.random.default_rng(3)
    masks = np.zeros((3, 32, 32), bool)
    masks[0, 2:8, 2:8] = masks[0, 20:30, 0:5] = masks[1, 10:12, 10:30] = True
    maps = rng.random((3, 32, 32)).astype(np.float32) + masks * 0.5
    curves = binned_curves(maps, masks, bins=50)
    lo, hi = float(maps.min()), float(maps.max())
    for j in (5, 20, 40):  # threshold = lower edge of bin 50 - j: predicted = in the top j bins
        edge_bin = 50 - j
        pred = np.clip(np.floor((maps - lo) / (hi - lo) * 50), 0, 49) >= edge_bin
        regions = []
        for p, m in zip(pred, masks):
            lab, k = ndimage.label(m, structure=np.ones((3, 3)))
            regions += [p[lab == r].mean() for r in range(1, k + 1)]
        assert curves["fpr"][j] == pytest.approx(pred[~masks].mean())
        assert curves["tpr"][j] == pytest.approx(pred[masks].mean())
        assert curves["pro"][j] == pytest.approx(np.mean(regions))
    assert curves["fpr"][0] == curves["pro"][0] == 0 and curves["fpr"][-1] == curves["pro"][-1] == 1


def _curve_data(seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Score maps with ties (two decimals) and several regions, one image without a defect."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((4, 40, 40), bool)
    masks[0, 3:9, 3:9] = masks[0, 25:35, 1:6] = masks[1, 12:14, 10:32] = masks[2, 30:38, 30:38] = True
    maps = np.round(rng.random((4, 40, 40)) + masks * rng.uniform(0.2, 0.8, (4, 1, 1)), 2).astype(np.float32)
    return maps, masks


def test_drawn_pro_curve_is_metrics_pro_curve():
    maps, masks = _curve_data()
    limit = 0.3
    binned = binned_curves(maps, masks)
    fpr, pro, note = pro_points(maps, masks, limit, binned)
    exact_fpr, exact_pro = metrics.pro_curve(maps, masks, limit)
    assert note == "exact (metrics.pro_curve)"
    np.testing.assert_array_equal(fpr, exact_fpr)
    np.testing.assert_array_equal(pro, exact_pro)
    # its area, interpolated at the limit as AU-PRO is, is metrics' AU-PRO
    step = (limit - fpr[-2]) / (fpr[-1] - fpr[-2])
    at_limit = pro[-2] + step * (pro[-1] - pro[-2])
    area = trapezoid(np.r_[pro[:-1], at_limit], np.r_[fpr[:-1], limit]) / limit
    assert area == pytest.approx(metrics.aupro(maps, masks, limit), abs=1e-12)
    # the drawn curve is those points resampled on [0, limit]; its area stays within the resampling error
    grid, drawn, _ = pro_curve_for_drawing(maps, masks, limit, binned)
    assert grid[0] == 0 and grid[-1] == limit
    np.testing.assert_allclose(drawn, np.interp(grid, exact_fpr, exact_pro), rtol=0, atol=1e-12)
    assert trapezoid(drawn, grid) / limit == pytest.approx(metrics.aupro(maps, masks, limit), abs=1e-3)


def test_pro_curve_falls_back_to_binned_on_nan():
    maps, masks = _curve_data()
    maps[3, 0, 0] = np.nan
    binned = binned_curves(maps, masks)
    fpr, pro, note = pro_points(maps, masks, 0.3, binned)
    assert fpr is binned["fpr"] and pro is binned["pro"] and "metrics.pro_curve failed: score maps contain NaN" in note


def test_binned_curves_are_metrics_of_binned_scores():
    """The drawn pixel ROC and PRO are the exact curves of the scores binned: their areas are metrics' values."""
    maps, masks = _curve_data()
    bins = 60
    curves = binned_curves(maps, masks, bins=bins)
    binned_maps = bin_index(maps, *finite_range(maps), bins).astype(np.float64)
    roc_area = trapezoid(curves["tpr"], curves["fpr"])
    assert roc_area == pytest.approx(metrics.pixel_auroc(binned_maps, masks), abs=1e-12)
    assert roc_area == pytest.approx(metrics.pixel_auroc(maps, masks), abs=0.01)  # binning costs little
    pro_area = trapezoid(curves["pro"], curves["fpr"])
    assert pro_area == pytest.approx(metrics.aupro(binned_maps, masks, 1.0), abs=1e-12)


def test_image_roc_area_is_metrics_image_auroc():
    labels = np.array([0, 1, 0, 1, 1, 0, 0, 1, 0])
    scores = np.array([0.1, 0.9, 0.4, 0.4, 0.7, 0.7, 0.2, 0.3, 0.4])  # ties across classes
    fpr, tpr = image_roc(labels, scores)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert trapezoid(tpr, fpr) == pytest.approx(metrics.image_auroc(scores, labels), abs=1e-12)
    assert image_roc(np.zeros(3, int), scores[:3]) is None and image_roc(np.ones(3, int), scores[:3]) is None
