"""tools/ablation_figure.py: the points it draws from a grid's results.csv, and the figure files."""
import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common import UserError
from results import CSV_COLUMNS
from tools import ablation_figure

REPO = Path(__file__).resolve().parents[1]


def write_report(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


def row(category, approx, k, seed, aupro, low=None, high=None):
    found = {"dataset": "synthetic", "category": category, "model": "resnet18", "approx": approx, "k": str(k),
             "seed": str(seed), "aupro": str(aupro)}
    if low is not None and "aupro_lo" in CSV_COLUMNS:
        found.update({"aupro_lo": str(low), "aupro_hi": str(high)})
    return found


def test_points_are_the_mean_rows_averaged_over_seeds(tmp_path):
    rows = [row("a", "ortho", 10, 1, 0.1), row("b", "ortho", 10, 1, 0.3), row("mean", "ortho", 10, 1, 0.2),
            row("a", "ortho", 10, 2, 0.5), row("b", "ortho", 10, 2, 0.7), row("mean", "ortho", 10, 2, 0.6),
            row("mean", "sample", 10, 1, 0.05), row("mean", "sample", 30, 1, 0.15),
            row("mean", "sample", 30, 1, 0.25)]  # a variant run again: its last row counts
    found = ablation_figure.curves(rows, "aupro")
    (k, value, spread, low, high), = found["ortho"]
    assert (k, low, high) == (10.0, None, None)
    assert math.isclose(value, 0.4) and math.isclose(spread, math.sqrt(((0.2 - 0.4) ** 2 + (0.6 - 0.4) ** 2) / 1))
    assert [(p[0], p[1], p[2]) for p in found["sample"]] == [(10.0, 0.05, None), (30.0, 0.25, None)]


def test_one_category_uses_its_rows_and_intervals(tmp_path):
    rows = [row("a", "ortho", 10, 1, 0.5, 0.4, 0.6), row("a", "ortho", 20, 1, 0.7, 0.5, 0.8)]
    found = ablation_figure.curves(rows, "aupro")
    if "aupro_lo" in CSV_COLUMNS:
        assert found["ortho"] == [(10.0, 0.5, None, 0.4, 0.6), (20.0, 0.7, None, 0.5, 0.8)]
    else:
        assert [p[:2] for p in found["ortho"]] == [(10.0, 0.5), (20.0, 0.7)]


def test_the_figure_is_written_whole(tmp_path, capsys):
    report = tmp_path / "results.csv"
    write_report(report, [row("a", "ortho", 10, 1, 0.5, 0.4, 0.6), row("a", "ortho", 20, 1, 0.7, 0.5, 0.8),
                          row("a", "gaussian", 10, 1, 0.3, 0.2, 0.4)])
    assert ablation_figure.main([str(report), "--out", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "fig.pdf").read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.pdf", "fig.png", "results.csv"]


@pytest.mark.parametrize("rows, flags, message", [
    ([row("a", "ortho", 10, 1, 0.5)], ["--metric", "bogus"], r"^--metric bogus: choose a results.csv column"),
    ([row("a", "ortho", 10, 1, 0.5), row("b", "ortho", 10, 1, 0.5)], [], r"several categories but no mean rows"),
    ([row("a", "ortho", 10, 1, "")], [], r"^no aupro values in the report"),
])
def test_bad_reports_are_one_line(tmp_path, rows, flags, message):
    report = tmp_path / "results.csv"
    write_report(report, rows)
    with pytest.raises(UserError, match=message):
        ablation_figure.main([str(report), "--out", str(tmp_path / "fig"), *flags])
    assert not (tmp_path / "fig.png").exists()


def test_the_mean_rows_interval_pools_the_categories_replicates():
    from metrics.bootstrap import Resamples, pooled
    a = Resamples(0.5, np.array([0.4, 0.5, 0.6]), np.array([0.45, 0.55]))
    b = Resamples(0.7, np.array([0.6, 0.7, 0.9]), np.array([0.65, 0.75, 0.7]))
    mean = pooled([a, b], seed=3)
    assert mean.point == pytest.approx(0.6)
    # leave one image of one set out: that set's value becomes its leave-one-out value, the other stays
    literal = [(left + b.point) / 2 for left in a.jackknife] + [(a.point + left) / 2 for left in b.jackknife]
    np.testing.assert_allclose(mean.jackknife, literal, rtol=0, atol=1e-15)
    assert sorted(pooled([a], seed=3).values) == sorted(a.values)  # one set: its own replicates, reordered
    assert np.isclose(mean.values.mean(), (a.values.mean() + b.values.mean()) / 2)


def test_reproduce_ablation_runs_end_to_end_on_synthetic_data(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATA"}
    env.update(SEMIORTHO_SYNTHETIC=str(tmp_path / "cache"), PYTHON=sys.executable, DATASET="synthetic",
               CATEGORIES="washer,caplet", KS="5,10", APPROX="ortho,sample", BOOTSTRAP="100")
    exp = tmp_path / "ablation"
    result = subprocess.run(["bash", str(REPO / "script" / "reproduce_ablation.sh"), str(exp), "--weights", "random",
                             "--image-size", "64", "--workers", "0", "--quiet"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(exp / "results.csv", newline="", encoding="utf-8")))
    means = [r for r in rows if r["category"] == "mean"]
    assert sorted((r["approx"], r["k"]) for r in means) == [("ortho", "10"), ("ortho", "5"), ("sample", "10"),
                                                            ("sample", "5")]
    for r in means:  # the mean's interval holds the mean
        assert float(r["aupro_lo"]) <= float(r["aupro"]) <= float(r["aupro_hi"])
    assert not list(exp.rglob("model.pt"))  # a sweep keeps metrics and scores only
    assert (exp / "ablation_aupro.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (exp / "ablation_aupro.pdf").read_bytes()[:5] == b"%PDF-"
    assert "figure: " in result.stdout
