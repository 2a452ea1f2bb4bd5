"""The metric registry: one entry per metric read by evaluate, the headline, results.csv and the report;
results.csv taking new columns without refusing an older report; results.py the only writer of the files."""
from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.text import Text

import metrics
import results
import train
from common import UserError
from metrics import registry
from metrics.registry import Metric, headline_line
from report.load import load_category
from report.pages import contents_pages, summary_page
from tests.helpers.data import write_category
from tests.test_visualizer import make_category

REPO = Path(__file__).resolve().parents[1]
SIX = ["aupro", "pixel_auroc", "image_auroc", "paper_pro", "paper_roc", "paper_ap"]


def scored(seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    maps = rng.random((4, 24, 24))
    masks = np.zeros(maps.shape, np.uint8)
    masks[1, 4:10, 5:12] = masks[2, 15:20, 2:6] = masks[3, 1:3, 1:20] = 1
    maps += 0.6 * masks
    return maps, masks, maps.reshape(4, -1).max(axis=1), np.array([0, 1, 1, 1])


def test_evaluate_computes_the_registry_and_paper_fpr_only_for_its_headline():
    maps, masks, scores, labels = scored()
    timings: dict[str, float] = {}
    plain = metrics.evaluate(maps, masks, scores, labels, 0.3, 100)
    found = metrics.evaluate(maps, masks, scores, labels, 0.3, 100, timings=timings, headline="fpr")
    every = [m.name for m in registry.REGISTRY if m.only_for is None]
    assert list(plain) == every == [n for n in found if n != "paper_fpr"] and "paper_fpr" in found
    assert [n for n in every if n in SIX] == SIX and list(results.METRICS) == [m.name for m in registry.REGISTRY
                                                                                 if m.csv]
    assert list(timings) == every  # paper_fpr untimed: every run's seconds have the same keys
    assert found["paper_fpr"] == metrics.paper_fpr(maps, masks, 0.3, 100)
    assert all(found[name] == plain[name] for name in SIX)
    assert found["aupro"] == metrics.aupro(maps, masks, 0.3) and found["paper_ap"] == metrics.paper_ap(maps, masks,
                                                                                                        0.3, 100)
    assert metrics.evaluate(maps, masks, scores, labels, 0.3, 100, names=["image_auroc"]) == {
        "image_auroc": metrics.image_auroc(scores, labels)}
    assert "paper_fpr" not in results.CSV_COLUMNS


def test_headlines_print_what_they_printed():
    values = {"aupro": 0.5, "pixel_auroc": 0.6, "image_auroc": 0.7, "paper_pro": 0.41, "paper_roc": 0.62,
              "paper_ap": 0.125, "paper_fpr": 0.15, "paper_det": 0.71}
    assert registry.HEADLINES == ("auproc", "auroc", "ap", "fpr")
    assert train.headline("c", values, "auproc") == "c: SEG AUPROC 0.5000 (paper protocol 0.4100)"
    assert train.headline("c", values, "auroc") == ("c: SEG AUROC 0.6000 (paper protocol 0.6200)  DET AUROC 0.7000 "
                                                    "(paper protocol 0.7100)")
    assert train.headline("c", values, "ap") == "c: SEG AP 0.1250 (paper protocol, recall <= --fpr)"
    assert train.headline("c", values, "fpr") == "c: SEG FPR 0.1500 (paper protocol, FPR vs FPR)"
    assert headline_line({}, "fpr") == "SEG FPR nan (paper protocol, FPR vs FPR)"


def report_texts(figures) -> list[str]:
    return [t.get_text() for fig in figures for t in fig.findobj(Text)]


def test_a_new_metric_is_one_entry(tmp_path, monkeypatch):
    """One Metric added to the registry: evaluate computes it, the headline, the report and the mean show it."""
    def pixel_max(x) -> float:
        return float(x.maps.max())

    extra = Metric("pixel_max", pixel_max, "SEG MAX", "Highest pixel score", headline="max", contents="max")
    monkeypatch.setattr(registry, "REGISTRY", (*registry.REGISTRY, extra))
    maps, masks, scores, labels = scored()
    found = metrics.evaluate(maps, masks, scores, labels, 0.3, 100)
    assert list(found)[-1] == "pixel_max" and found["pixel_max"] == maps.max()
    assert train.headline("c", found, "max") == f"c: SEG MAX {maps.max():.4f}"

    folder = tmp_path / "exp" / "synthetic" / "carpet"
    make_category(folder, tmp_path / "images")
    summary = results.read_metrics(folder / results.METRICS_FILE)
    results.write_metrics(folder / results.METRICS_FILE, {**summary, "metrics": {**summary["metrics"],
                                                                                  "pixel_max": 4.25}})
    cat = load_category(folder, "synthetic", "carpet")
    texts = report_texts([summary_page(cat, tmp_path / "exp", 1, 2)])
    at = texts.index("Highest pixel score")
    assert texts[at + 1] == "4.2500"
    assert texts[texts.index("AU-PRO (MVTec, FPR ≤ 0.3)") + 1] == "0.9100"
    contents = report_texts(contents_pages([cat, cat], tmp_path / "exp", [2, 3], 3))
    assert "max" in contents and "4.250" in contents
    _, means = results.mean_row("synthetic", [{**summary, "metrics": found}] * 2)
    assert means["pixel_max"] == maps.max()


# ------------------------------------------------------------------------- results.csv across versions

OLD = ["category", "dataset", "model", "approx", "k", "eps", "image_size", "crop", "seed", "n_train", "n_val", "n_test",
       "aupro", "pixel_auroc", "image_auroc", "paper_pro", "paper_roc", "seconds", "output"]  # no label, ap, protocol


def test_an_older_report_takes_rows_in_its_own_order_with_one_warning(tmp_path, capsys):
    report = tmp_path / "results.csv"
    report.write_text(",".join(OLD) + "\nwood,mvtecad,resnet18,ortho,10,,,,,,,,0.5,,,,,,old\n")
    for _ in range(2):  # a run checks before the fit, then appends per category and the mean
        assert results.check_report(report) == tuple(OLD)
    row = {key: "" for key in results.CSV_COLUMNS}
    for category in ("a", "b"):
        results.append_rows(report, [{**row, "dataset": "mvtecad", "category": category, "aupro": "0.25",
                                      "paper_ap": "0.125", "label": "=x", "protocol": "paper"}])
    lines = report.read_text().splitlines()
    written = dict.fromkeys(OLD, "") | {"category": "a", "dataset": "mvtecad", "aupro": "0.25"}
    assert lines[0] == ",".join(OLD) and lines[2] == ",".join(written.values())
    rows = results.read_rows(report)
    assert [(r["dataset"], r["category"], r["aupro"]) for r in rows] == [("mvtecad", c, a) for c, a in
                                                                         (("wood", "0.5"), ("a", "0.25"),
                                                                          ("b", "0.25"))]
    assert all("paper_ap" not in r and "label" not in r for r in rows)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: --report {report} lacks this version's column(s) ")
    lacking = err[0].split("column(s) ")[1].split(" (an earlier")[0].split(", ")
    assert {"label", "paper_ap", "protocol", "aupro_lo", "paper_ap_hi"} <= set(lacking) and "aupro" not in lacking


@pytest.mark.parametrize("header, needle", [("dataset,category,f1", r"other columns than this version writes \(f1\)"),
                                            ("dataset,category,aupro,aupro", "other columns"),
                                            ("model,aupro", "has no dataset or category column"),
                                            ("dataset,model", "has no category column")])
def test_a_report_with_unknown_or_no_identifying_columns_is_refused(tmp_path, header, needle):
    report = tmp_path / "results.csv"
    report.write_text(header + "\n")
    with pytest.raises(UserError, match=needle):
        results.check_report(report)
    with pytest.raises(UserError, match=needle):
        results.append_rows(report, [{"dataset": "d", "category": "c"}])
    assert report.read_text() == header + "\n"


def test_a_new_report_has_this_versions_columns(tmp_path, capsys):
    report = tmp_path / "new.csv"
    assert results.check_report(report) == results.CSV_COLUMNS
    results.append_rows(report, [{"dataset": "d", "category": "c"}])
    with open(report, newline="") as f:
        assert next(csv.reader(f)) == list(results.CSV_COLUMNS)
    assert capsys.readouterr().err == ""


def test_train_appends_to_an_older_report_with_one_warning(tmp_path, capsys):
    write_category(tmp_path / "data", "toy", seed=0)
    report = tmp_path / "old.csv"
    report.write_text(",".join(OLD) + "\n")
    assert train.main(["--dataroot", str(tmp_path / "data"), "--category", "toy", "--weights", "random", "--model",
                       "resnet18", "--workers", "0", "--k", "10", "--image-size", "64", "--batch-size", "4",
                       "--device", "cpu", "--quiet", "--experiment", str(tmp_path / "exp"), "--report",
                       str(report)]) == 0
    (row,) = results.read_rows(report)
    summary = results.read_metrics(tmp_path / "exp" / "mvtecad" / "toy" / results.METRICS_FILE)
    assert list(row) == OLD and row["category"] == "toy" and float(row["aupro"]) == pytest.approx(
        summary["metrics"]["aupro"], abs=1e-6)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: --report")]
    assert len(err) == 1 and all(c in err[0] for c in ("label", "paper_ap", "protocol"))


def test_results_py_is_the_only_writer_of_the_result_files():
    """No code outside results.py (and the tests) names metrics.json or scores.npz as a file to open."""
    named = re.compile(r"""(["'])(metrics\.json|scores\.npz)\1""")  # the name as a string of its own
    offenders = [str(path.relative_to(REPO)) for path in REPO.rglob("*.py")
                 if "tests" not in path.relative_to(REPO).parts and path.name != "results.py"
                 and not any(part.startswith(".") for part in path.relative_to(REPO).parts)
                 and named.search(path.read_text())]
    assert offenders == []


def test_metric_fields_are_documented_in_docs_metrics():
    text = (REPO / "docs" / "metrics.md").read_text()
    assert all(f"`{m.name}`" in text for m in registry.REGISTRY)
    assert all(f"`{field.name}`" in text for field in dataclasses.fields(Metric))
