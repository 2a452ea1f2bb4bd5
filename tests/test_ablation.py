"""tools/ablation_figure.py: the points it draws from a grid's results.csv, and the figure files."""
import csv
import math

import pytest

from common import UserError
from results import CSV_COLUMNS
from tools import ablation_figure


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
