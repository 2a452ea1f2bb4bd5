"""paper_det, the authors' DET AUROC, against a literal re-implementation of their evaluation.

The reference follows the authors' train.py and metric.py step by step (github.com/jnhwkim/orthoad):
train.py takes each test map's maximum as `det_pred` (N, 1, 1) and calls
`evaluate(det_pred, labels (N, 1, 1), method='auroc', at_fpr=1., num_samples=N)`; for (N, 1, 1) inputs
their threshold function returns every value sorted high to low; each threshold's mean per-image FPR and
TPR go into a dict keyed by the FPR (a repeated FPR keeps the last value), which is sorted and integrated
with their "slope" rule. Written with torch tensors of float32, as theirs are.
"""
from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

import metrics
from metrics import paper_det
from metrics.registry import headline


def their_fpr(pred: torch.Tensor, gt: torch.Tensor) -> float:
    fp = (pred & ~gt.bool()).float().sum(2).sum(1)
    n = (~gt.bool()).float().sum(2).sum(1)
    keep = n != 0
    fp, n = fp[keep], n[keep]
    if fp.size(0) == 0:
        return 0
    return (fp / n).sum(0).item() / fp.size(0)


def their_tpr(pred: torch.Tensor, gt: torch.Tensor) -> float:
    tp = (pred & gt.bool()).float().sum(2).sum(1)
    p = gt.bool().float().sum(2).sum(1)
    keep = p != 0
    tp, p = tp[keep], p[keep]
    if p.size(0) == 0:
        return 0
    return (tp / p).sum(0).item() / p.size(0)


def their_slope_area(scores: collections.OrderedDict, at_fpr: float) -> float:
    area = 0.0
    fpr, y = list(scores.keys()), list(scores.values())
    for i in range(len(scores)):
        if i == 0:
            area += fpr[i] * y[i] / 2
        elif i == len(fpr) - 1:
            y_mid = (y[i] + y[i - 1]) / 2
            area += (at_fpr - fpr[i - 1]) * (y_mid + y[i - 1]) / 2
        else:
            area += (fpr[i] - fpr[i - 1]) * (y[i] + y[i - 1]) / 2
    return area / at_fpr


def their_det_auroc(image_scores: np.ndarray, labels: np.ndarray) -> float:
    det_pred = torch.tensor(image_scores, dtype=torch.float32).view(-1, 1, 1)
    gt = torch.tensor(labels != 0).view(-1, 1, 1)
    at_fpr = 1.0
    fpr_to_tpr = {}
    for threshold in det_pred.view(-1).sort(descending=True)[0].numpy():  # num_samples = N: every value
        pred = det_pred > float(threshold)
        fpr = their_fpr(pred, gt)
        fpr_to_tpr[fpr] = their_tpr(pred, gt)
        if fpr > at_fpr:
            break
    return their_slope_area(collections.OrderedDict(sorted(fpr_to_tpr.items())), at_fpr)


@pytest.mark.parametrize("seed", range(6))
def test_paper_det_equals_the_authors_evaluation_with_ties(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n = int(rng.integers(2, 60))
        labels = rng.permutation(np.r_[0, 1, rng.integers(0, 2, n - 2)])  # both classes
        decimals = int(rng.integers(0, 3))  # 0 decimals: many ties, within and across classes
        scores = np.round(rng.normal(size=n) + labels * rng.uniform(0, 2.5), decimals).astype(np.float32)
        assert paper_det(scores, labels) == pytest.approx(their_det_auroc(scores, labels), abs=1e-12)


def test_paper_det_of_known_cases():
    assert paper_det(np.array([4.0, 3, 2, 1]), np.array([1, 1, 0, 0])) == pytest.approx(
        their_det_auroc(np.array([4.0, 3, 2, 1]), np.array([1, 1, 0, 0])))
    # every normal score tied at the lowest: all thresholds give FPR 0, a single point: area 0 (their rule),
    # while the exact image AUROC is 1
    scores, labels = np.array([1.3, 1.26, 1.0, 1.0]), np.array([1, 1, 0, 0])
    assert paper_det(scores, labels) == their_det_auroc(scores, labels) == 0.0
    assert metrics.image_auroc(scores, labels) == 1.0
    assert np.isnan(paper_det(np.array([1.0, 2.0]), np.array([1, 1])))  # one class: nan, as image_auroc


def test_paper_det_is_computed_and_shown_for_auroc_only():
    rng = np.random.default_rng(3)
    maps = rng.random((6, 16, 16))
    masks = np.zeros(maps.shape, bool)
    masks[3:, 4:8, 4:8] = True
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = maps.reshape(6, -1).max(axis=1)
    found = metrics.evaluate(maps, masks, scores, labels, 0.3, 50, headline="auroc")
    assert found["paper_det"] == paper_det(scores, labels)
    assert "paper_det" not in metrics.evaluate(maps, masks, scores, labels, 0.3, 50, headline="auproc")
    line = headline("c", found, "auroc")
    assert f"DET AUROC {found['image_auroc']:.4f} (paper protocol {found['paper_det']:.4f})" in line
