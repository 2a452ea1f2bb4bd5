"""Slow, literal re-implementations of the metric definitions in docs/metrics.md, and the cases the
metric tests run them on (random maps with ties, and cases built by hand)."""
import math

import numpy as np
from scipy import ndimage

from metrics.pro import trapezoid  # np.trapezoid on numpy >= 2, np.trapz before

EIGHT = np.ones((3, 3), bool)


def slow_auroc(negatives, positives):
    """Count every (positive, negative) pair: 1 when the positive is higher, 1/2 on a tie."""
    pos, neg = np.asarray(positives, np.float64)[:, None], np.asarray(negatives, np.float64)[None, :]
    return ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)


def regions_of(masks):
    """[(image index, boolean region mask)] over the 8-connected components of every mask."""
    regions = []
    for i, mask in enumerate(masks):
        labels, n = ndimage.label(mask, EIGHT)
        regions += [(i, labels == r) for r in range(1, n + 1)]
    return regions


def slow_pro_curve(maps, masks):
    """The whole curve: one threshold per distinct score (high to low), then one below them all."""
    maps, masks = np.asarray(maps, np.float64), np.asarray(masks, bool)
    regions = regions_of(masks)
    fprs, pros = [], []
    for t in list(np.unique(maps)[::-1]) + [-np.inf]:
        predicted = maps > t
        fprs.append((predicted & ~masks).sum() / (~masks).sum())
        pros.append(np.mean([predicted[i][region].mean() for i, region in regions]))
    return np.array(fprs), np.array(pros)


def slow_aupro(maps, masks, fpr_limit):
    fpr, pro = slow_pro_curve(maps, masks)
    past = np.flatnonzero(fpr > fpr_limit)
    if past.size == 0:
        return trapezoid(pro, fpr) / fpr_limit
    i = past[0]
    at_limit = np.interp(fpr_limit, fpr[i - 1:i + 1], pro[i - 1:i + 1])
    return trapezoid(np.append(pro[:i], at_limit), np.append(fpr[:i], fpr_limit)) / fpr_limit


def thresholds_of(maps, num_thresholds):
    """The authors' thresholds: quantiles of the first image holding the global max, high to low."""
    top = 0
    for i in range(len(maps)):
        if maps[i].max() > maps[top].max():
            top = i
    ordered = np.sort(maps[top].ravel())
    n = ordered.size
    return [ordered[max(1, math.floor(n * i / num_thresholds)) - 1] for i in range(num_thresholds, 0, -1)]


def slow_area(curve, limit):
    """The authors' area of a {x: y} curve up to x = limit, divided by limit: trapezoids from (0, 0), the
    last one to the limit."""
    points = sorted(curve.items())
    area = 0.0
    for i, (x, h) in enumerate(points):
        if i == 0:
            area += x * h / 2
        elif i == len(points) - 1:
            x0, h0 = points[i - 1]
            area += (limit - x0) * ((h + h0) / 2 + h0) / 2
        else:
            x0, h0 = points[i - 1]
            area += (x - x0) * (h + h0) / 2
    return area / limit


def slow_paper(maps, masks, fpr_limit, num_thresholds, y):
    """The authors' protocol, line by line from the description: y is "pro" or "tpr"."""
    maps, masks = np.asarray(maps, np.float64), np.asarray(masks, bool)
    curve = {}
    for t in thresholds_of(maps, num_thresholds):
        fprs, ys = [], []
        for score, mask in zip(maps, masks):
            predicted = score > t
            if (~mask).any():
                fprs.append((predicted & ~mask).sum() / (~mask).sum())
            if mask.any():
                if y == "pro":
                    labels, count = ndimage.label(mask, EIGHT)
                    ys.append(np.mean([predicted[labels == r].mean() for r in range(1, count + 1)]))
                else:
                    ys.append(predicted[mask].mean())
        fpr = float(np.mean(fprs))
        curve[fpr] = float(np.mean(ys))
        if fpr > fpr_limit:
            break
    return slow_area(curve, fpr_limit)


# ---------------------------------------------------------------- inputs

def random_case(seed, n=4, shape=(11, 13), levels=6):
    """Small maps with many ties, and masks of blobs, dots and diagonal chains; image 0 is defect-free."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, *shape), bool)
    for i in range(1, n):
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, shape[0] - 2), rng.integers(0, shape[1] - 2)
            masks[i, y:y + rng.integers(1, 4), x:x + rng.integers(1, 4)] = True
        masks[i] |= rng.random(shape) < 0.04
    maps = rng.integers(0, levels, size=masks.shape) / levels + 0.4 * masks * rng.random(masks.shape)
    return maps.astype(np.float32), masks


CASES = [random_case(seed) for seed in range(6)]
CASES += [random_case(9, levels=1000), random_case(10, n=3, levels=2)]


def hand_cases():
    """Defect-free images, an all-defect image, ties across classes, diagonal-touching regions."""
    masks = np.zeros((4, 6, 6), bool)
    masks[1, 0, 0] = masks[1, 1, 1] = masks[1, 2, 2] = True  # one region by 8-connectivity
    masks[1, 4:, 4:] = True
    masks[2] = True  # all defect: no negatives in this image
    maps = np.zeros((4, 6, 6), np.float32)
    maps[0] = np.linspace(0, 1, 36).reshape(6, 6)
    maps[1] = 0.5
    maps[1, 0, 0], maps[1, 4, 4], maps[1, 5, 5] = 0.9, 0.5, 0.1
    maps[2] = np.linspace(0.2, 0.7, 36).reshape(6, 6)
    maps[3] = 0.5  # ties with everything at 0.5
    yield maps, masks
    yield maps[[0, 1, 3]], masks[[0, 1, 3]]
    yield maps[[1, 2]], masks[[1, 2]]  # every image defective
    flipped = maps.copy()
    flipped[1, 0, 0] = 1.0  # the global max sits in a defective image
    yield flipped, masks
    tied = maps.copy()
    tied[3, 0, 0] = 1.0  # images 0 and 3 both hold the global max: thresholds come from image 0
    yield tied, masks
    yield tied[::-1].copy(), masks[::-1].copy()  # ... and now from image 3


ALL_CASES = CASES + list(hand_cases())
