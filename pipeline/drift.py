"""Does the line still look like the calibration? predict.py's summary.json: a run's image scores against
the n calibration image scores stored in the model (pipeline/calibrate.py).

Two tests, each at level LEVEL; either one failing is a drift warning:
- flagged: with the image threshold t and r = #{s_i <= t}, a normal image exchangeable with the
  calibration images is flagged with probability 1 - F(t) <= (n + 1 - r) / (n + 1) (alpha for the
  conformal rule). The m images of a run share the calibration, so the count of flagged normal images
  is not binomial: given t = s_(r) it is beta-binomial(m, n + 1 - r, r) (stochastically smaller when t
  lies between order statistics). Its upper tail at the observed count is the p-value. Many defects
  fail it as a changed line does: it says the run is not like the calibration, not why.
- uniformity: the p-values of the images not flagged are uniform on their range for normal images
  from the calibration's conditions. Since every p-value is a rank among the same n calibration scores,
  comparing their distribution with the uniform one is the two-sample Kolmogorov-Smirnov test of the
  unflagged scores against the calibration scores below t, whose p-value counts the calibration's own
  sampling error (a one-sample test against the uniform would not, and would fire on any long run).
  A lighting change that lowers every score fails it too.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

LEVEL = 0.01  # each test's false-alarm level on an unchanged line
MIN_IMAGES = 5  # fewer unflagged images, or calibration scores below t: the uniformity test is not run


def flag_test(flagged: int, images: int, n: int, r: int) -> float | None:
    """P(K >= flagged), K ~ beta-binomial(images, n + 1 - r, r): the flagged count of normal images;
    None when r = 0 (a threshold below every calibration score promises nothing)."""
    if r == 0 or images == 0:
        return None
    return float(stats.betabinom.sf(flagged - 1, images, n + 1 - r, r))


def uniformity_test(unflagged: np.ndarray, below: np.ndarray) -> dict | None:
    """Two-sample KS of the unflagged images' scores against the calibration scores below the threshold."""
    if len(unflagged) < MIN_IMAGES or len(below) < MIN_IMAGES:
        return None
    found = stats.ks_2samp(unflagged, below)
    return {"images": int(len(unflagged)), "calibration_below": int(len(below)),
            "ks_statistic": float(found.statistic), "p_value": float(found.pvalue)}


def summary(scores: np.ndarray, threshold: float, calibration: np.ndarray | None, record: dict) -> dict:
    """summary.json's content for image scores `scores` judged at `threshold` (score > threshold flagged),
    against the calibration image scores (None: the model has none, no test)."""
    scores = np.asarray(scores, dtype=np.float64)
    flagged = scores > threshold
    m, k = len(scores), int(flagged.sum())
    found: dict = {"images": m, "flagged": k, "flagged_fraction": k / m if m else None, "image_threshold": threshold,
                   "calibration": {key: record.get(key) for key in ("rule", "alpha", "n", "date", "source", "files")}
                   if calibration is not None else None,
                   "promised_false_alarm_rate": None, "flag_test": None, "uniformity": None, "level": LEVEL,
                   "drift": False, "warning": None}
    if calibration is None or m == 0:
        return found
    n = len(calibration)
    r = int((calibration <= threshold).sum())
    found["promised_false_alarm_rate"] = (n + 1 - r) / (n + 1)
    p_flagged = flag_test(k, m, n, r)
    found["flag_test"] = None if p_flagged is None else {"p_value": p_flagged,
                                                         "null": f"beta-binomial({m}, {n + 1 - r}, {r})"}
    found["uniformity"] = uniformity_test(scores[~flagged], calibration[calibration < threshold])
    problems = []
    if p_flagged is not None and p_flagged < LEVEL:
        problems.append(f"{k} of {m} images flagged where normal parts would be at most "
                        f"{found['promised_false_alarm_rate']:.3g} (p = {p_flagged:.2g}: many defects, or the line "
                        "changed)")
    uniformity = found["uniformity"]
    if uniformity is not None and uniformity["p_value"] < LEVEL:
        problems.append(f"the unflagged images' p-values are not uniform (KS p = {uniformity['p_value']:.2g}: their "
                        "scores no longer match the calibration's)")
    if problems:
        found["drift"] = True
        found["warning"] = ("the line no longer looks like the calibration: " + "; ".join(problems) +
                            "; check it (lighting, camera, parts), then recalibrate with tools/recalibrate.py")
    return found
