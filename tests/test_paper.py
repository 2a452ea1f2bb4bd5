"""tools/summarize.py --paper: the paper's published figures beside a run's, and
script/reproduce_paper.sh's plumbing (every experiment launched with the paper's settings, then the table)."""
import csv
import io
import json
from pathlib import Path

import numpy as np

from results import CSV_COLUMNS
from tools.summarize import main as summarize_main

REPO = Path(__file__).resolve().parents[1]
MVTEC = ["carpet", "grid", "leather", "tile", "wood", "bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill",
         "screw", "toothbrush", "transistor", "zipper"]


def row(dataset, category, model, k, pro, roc, seed="1111", approx="ortho"):
    values = {"dataset": dataset, "category": category, "model": model, "approx": approx, "k": str(k), "eps": "0.01",
              "image_size": "256x256", "crop": "", "seed": seed, "aupro": "0.5", "pixel_auroc": "0.5",
              "image_auroc": "0.5", "paper_pro": f"{pro:.6f}", "paper_roc": f"{roc:.6f}"}
    return {c: values.get(c, "1") for c in CSV_COLUMNS}


def write_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


def seed_style(x: float, sign: bool = False) -> str:
    text = f"{x:+.3f}" if sign else f"{x:.3f}"
    return text.replace("0.", ".", 1)


def table_row(text: str, table: str, figure: str) -> list[str]:
    found = [line for line in text.splitlines() if line.startswith(f"| {table} | {figure} |")]
    assert len(found) == 1, (table, figure, text)
    return [cell.strip() for cell in found[0].strip("|").split("|")]


def test_paper_table_numbers_and_differences(tmp_path, capsys):
    rng = np.random.default_rng(3)
    pro, roc = rng.uniform(0.90, 0.97, 15), rng.uniform(0.95, 0.99, 15)
    folds = [0.950, 0.955, 0.970]
    rows = [row("mvtecad", c, "wide_resnet50_2", 300, 0.1, 0.1, seed="7") for c in MVTEC]  # an earlier config
    rows += [row("mvtecad", c, "wide_resnet50_2", 300, p, r) for c, p, r in zip(MVTEC, pro, roc)]
    rows += [row("mvtecad", c, "resnet18", 100, 0.2, 0.2) for c in MVTEC]  # another backbone: not the paper's
    rows += [row("mvtecad", "mean", "wide_resnet50_2", 300, 0.3, 0.3)]  # train.py's mean rows are not used
    rows += [row("kolektor", f"fold{f}", "resnet18", 100, 0.5, v) for f, v in enumerate(folds)]
    rows += [row("mstc", "mstc", "resnet18", 100, 0.5, 0.930), row("mstc", "mstc", "resnet18", 100, 0.5, 0.1,
                                                                     approx="sample")]
    write_csv(tmp_path / "results.csv", rows)
    assert summarize_main([str(tmp_path / "results.csv"), "--paper", "--out", str(tmp_path / "paper.md")]) == 0
    text = capsys.readouterr().out
    assert text == (tmp_path / "paper.md").read_text()
    expected = {("MVTec AD", "PRO"): (0.942, pro.mean()), ("MVTec AD", "ROC"): (0.982, roc.mean()),
                ("KolektorSDD", "Fold 1"): (0.953, 0.950), ("KolektorSDD", "Fold 2"): (0.951, 0.955),
                ("KolektorSDD", "Fold 3"): (0.976, 0.970), ("KolektorSDD", "Avg"): (0.960, np.mean(folds)),
                ("KolektorSDD", "Std"): (0.014, np.std(folds, ddof=1)), ("mSTC", "ROC"): (0.921, 0.930)}
    for (table, figure), (paper, run) in expected.items():
        cells = table_row(text, table, figure)
        assert cells[4:] == [seed_style(paper), seed_style(run), seed_style(run - paper, sign=True)], cells
    assert table_row(text, "MVTec AD", "PRO")[2:4] == ["wide_resnet50_2, k=300", "paper_pro"]
    assert table_row(text, "KolektorSDD2", "ROC")[4:] == [".981", "-", "-"]  # not in this run
    assert "github.com/jnhwkim/orthoad" in text

    # a run missing a category says over how many the mean is
    write_csv(tmp_path / "partial.csv", [r for r in rows if r["category"] != "zipper"])
    summarize_main([str(tmp_path / "partial.csv"), "--paper"])
    cells = table_row(capsys.readouterr().out, "MVTec AD", "ROC")
    assert cells[5] == f"{seed_style(roc[:14].mean())} (14 of 15)"


def test_figures_file_holds_the_published_numbers():
    figures = json.loads((REPO / "tools" / "paper_results.json").read_text())
    published = {(f["table"], f["figure"]): f["value"] for f in figures["figures"]}
    assert published == {("MVTec AD", "PRO"): 0.942, ("MVTec AD", "ROC"): 0.982, ("KolektorSDD", "Fold 1"): 0.953,
                         ("KolektorSDD", "Fold 2"): 0.951, ("KolektorSDD", "Fold 3"): 0.976,
                         ("KolektorSDD", "Avg"): 0.960, ("KolektorSDD", "Std"): 0.014,
                         ("KolektorSDD2", "ROC"): 0.981, ("mSTC", "ROC"): 0.921}
    # the published mean and std are those of the published folds (to the printed digits)
    folds = [0.953, 0.951, 0.976]
    assert round(np.mean(folds), 3) == 0.960 and round(np.std(folds, ddof=1), 3) == 0.014
