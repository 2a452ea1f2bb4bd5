"""Nothing lost at the edges of the result files: the report, a full disk, read-only folders, --overwrite."""
import errno
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import results
import train
from common import UserError, atomic_write, csv_cell, csv_text
from pipeline import outputs
from pipeline.run import claim_outputs
from report.pages import _timings
from tests.helpers.data import write_category
from tools.summarize import main as summarize_main

REPO = Path(__file__).resolve().parents[1]
FAST = ["--weights", "random", "--model", "resnet18", "--workers", "0", "--k", "10", "--image-size", "64",
        "--batch-size", "4", "--category", "toy", "--device", "cpu"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mvtec")
    write_category(root, "toy", seed=0)
    return root


@contextmanager
def mounted(folder: Path, options: str):
    """A tmpfs at `folder` (we run tests as root); the test is skipped where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or 'mount failed'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr[-3000:]
    return stderr


ROW = {"dataset": "mvtecad", "model": "resnet18", "k": "10", "aupro": "0.5"}


# ------------------------------------------------------------------------------------- 1: the last newline

def test_an_append_after_a_last_line_without_newline_starts_a_new_line(tmp_path):
    report = tmp_path / "results.csv"
    results.append_rows(report, [{**ROW, "category": "a"}])
    results.append_rows(report, [{**ROW, "category": "b", "protocol": "standard"}])
    with open(report, "r+b") as f:  # an editor that strips the final newline
        f.truncate(report.stat().st_size - 1)
    results.append_rows(report, [{**ROW, "category": "c"}])
    rows = results.read_rows(report)
    assert [(r["category"], r["protocol"]) for r in rows] == [("a", ""), ("b", "standard"), ("c", "")]


# ------------------------------------------------------------------------------ 2: a report that cannot be written

def test_the_append_locks_the_report_itself_and_leaves_no_lock_file(tmp_path):
    report = tmp_path / "results.csv"
    (tmp_path / "results.csv.lock").mkdir()  # what an older version's lock file may have become
    results.append_rows(report, [{**ROW, "category": "a"}])
    other = tmp_path / "other" / "results.csv"
    results.append_rows(other, [{**ROW, "category": "b"}])
    assert [r["category"] for r in results.read_rows(report)] == ["a"]
    assert sorted(p.name for p in other.parent.iterdir()) == ["results.csv"]  # no results.csv.lock left


def test_a_failed_append_commits_nothing_and_the_rerun_adds_the_row(root, tmp_path, monkeypatch, capsys):
    exp = tmp_path / "exp"

    def refuse(report, rows):
        raise UserError(f"--report {report} cannot be written: injected")

    monkeypatch.setattr(results, "append_rows", refuse)
    with pytest.raises(UserError, match="injected"):
        train.main(["--dataroot", str(root), *FAST, "--experiment", str(exp)])
    assert not exp.exists()  # no category without its row, and no empty folders the run created
    monkeypatch.undo()
    assert train.main(["--dataroot", str(root), *FAST, "--experiment", str(exp)]) == 0  # not "already holds"
    (row,) = results.read_rows(exp / "results.csv")
    assert row["category"] == "toy" and (exp / "mvtecad" / "toy" / "metrics.json").is_file()
    assert sorted(p.name for p in exp.iterdir()) == ["mvtecad", "results.csv"]


def test_a_read_only_report_is_refused_before_the_fit(root, tmp_path):
    with mounted(tmp_path / "ro", "ro,size=1m") as ro:
        with pytest.raises(UserError, match=rf"--report {ro / 'r.csv'} cannot be written: .*read-only"):
            train.main(["--dataroot", str(root), *FAST, "--experiment", str(tmp_path / "exp"),
                        "--report", str(ro / "r.csv")])
    assert not (tmp_path / "exp").exists()


def test_a_non_utf8_experiment_is_refused_before_the_fit_and_leaves_nothing(root, tmp_path):
    exp = os.fsdecode(os.fsencode(tmp_path) + b"/exp\xff")  # as Python hands such a command-line argument over
    with pytest.raises(UserError, match="--experiment .*UTF-8"):
        train.main(["--dataroot", str(root), *FAST, "--experiment", exp])
    assert os.listdir(tmp_path) == []  # no 0-byte results.csv, no empty folders


# --------------------------------------------------------------------------------------- 7: formula injection

def test_report_cells_never_start_a_formula_and_read_back_as_written(tmp_path, capsys):
    report = tmp_path / "results.csv"
    nasty = ["=1+2", "+SUM(A1)", "-cmd", "@x", "\tx", "'=quoted"]
    results.append_rows(report, [{**ROW, "category": c, "label": c, "image_size": "64x64"} for c in nasty])
    written = tmp_path / "written.csv"
    results.write_rows(written, [{**ROW, "category": "=HYPERLINK(1)", "k": "-5"}])
    for path in (report, written):
        for line in path.read_text().splitlines()[1:]:
            assert not any(cell.startswith(("=", "+", "-", "@", "\t")) and cell != "-5" for cell in line.split(","))
    assert [r["category"] for r in results.read_rows(report)] == nasty
    assert [(r["category"], r["k"]) for r in results.read_rows(written)] == [("=HYPERLINK(1)", "-5")]
    assert csv_cell("-0.5") == "-0.5" and csv_text(csv_cell("''=x")) == "''=x"
    assert summarize_main([str(report)]) == 0
    table = capsys.readouterr().out
    assert "| =1+2 | .500 |" in table and "| '=quoted |" in table and "| '=1+2" not in table


# ----------------------------------------------------------------------------------------- 8: --overwrite

def test_overwrite_keeps_the_files_a_run_does_not_write(tmp_path, capsys):
    target = tmp_path / "mvtecad" / "toy"
    target.mkdir(parents=True)
    for name, text in (("model.pt", "old model"), ("scores.npz", "old scores"), ("metrics.json", "old"),
                       ("my_notes.txt", "notes"), ("report.pdf", "pdf")):
        (target / name).write_text(text)
    (target / "figures").mkdir()
    (target / "figures" / "a.png").write_text("png")
    claim_outputs(tmp_path, "mvtecad", ["toy"], overwrite=True)
    warning = capsys.readouterr().err
    assert "figures, my_notes.txt, report.pdf" in warning and "visualizer.py" in warning
    staging = outputs.stage(target)
    (staging / "metrics.json").write_text("new")  # a --no-save-model run without test images: no model, no scores
    outputs.commit(staging, target, overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == ["figures", "metrics.json", "my_notes.txt", "report.pdf"]
    assert (target / "metrics.json").read_text() == "new" and (target / "my_notes.txt").read_text() == "notes"
    assert (target / "figures" / "a.png").read_text() == "png"
    assert sorted(p.name for p in target.parent.iterdir()) == ["toy"]


# --------------------------------------------------------------------------------------------- 16: full disk

def test_a_full_disk_is_one_line_naming_the_folder_and_the_bytes(root, tmp_path):
    with mounted(tmp_path / "small", "size=3m") as small:
        with pytest.raises(UserError) as error:  # model.pt (11 MB) fails in its background thread
            train.main(["--dataroot", str(root), *FAST, "--experiment", str(small / "exp")])
        line = str(error.value)
        assert line.startswith(f"no space left in {small / 'exp' / 'mvtecad'}: writing "), line
        assert " bytes, " in line and " free; " in line and ".staging" not in line and "\n" not in line
        assert sorted(os.listdir(small)) == []  # nothing partial, no empty folders


def test_torch_save_on_a_full_disk_and_summarize_out_are_one_line(tmp_path, monkeypatch):
    with mounted(tmp_path / "tiny", "size=256k") as tiny:
        # torch.save reports a full disk as a RuntimeError without errno: model.pt, in its background thread
        with pytest.raises(UserError, match=rf"no space left in {tiny}: writing model.pt needs more than [\d,]+ bytes"
                           ) as error:
            atomic_write(tiny / "model.pt", lambda tmp: torch.save({"a": torch.zeros(200_000)}, tmp))
        assert isinstance(error.value, OSError) and error.value.errno == errno.ENOSPC  # the cache goes on without
        assert os.listdir(tiny) == []
        (tiny / "filler").write_bytes(b"x" * 250_000)
        report = tmp_path / "results.csv"
        results.append_rows(report, [{**ROW, "category": "c" * 20_000}])
        with pytest.raises(UserError, match=rf"no space left in {tiny}: writing t.md needs about [\d,]+ bytes"):
            summarize_main([str(report), "--out", str(tiny / "t.md")])
    calls = []

    def full(fd, data):
        calls.append(len(data))
        raise OSError(errno.ENOSPC, "No space left on device")

    before = report.read_bytes()
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(UserError, match=r"no space left in .*: writing results.csv needs about [\d,]+ bytes"):
        results.append_rows(report, [{**ROW, "category": "d"}])
    monkeypatch.undo()
    assert calls and report.read_bytes() == before


# ---------------------------------------------------------------------------------------- 17: read-only folders

def test_a_read_only_experiment_or_summarize_out_is_one_line_before_any_work(root, tmp_path):
    report = tmp_path / "results.csv"
    results.append_rows(report, [{**ROW, "category": "a"}])
    with mounted(tmp_path / "ro", "ro,size=1m") as ro:
        with pytest.raises(UserError, match=f"--experiment {ro / 'exp'} cannot be written: {ro} is on a read-only"):
            train.main(["--dataroot", str(root), *FAST, "--experiment", str(ro / "exp")])
        done = subprocess.run([sys.executable, str(REPO / "tools" / "summarize.py"), str(report), "--out",
                               str(ro / "t.md")], capture_output=True, timeout=60)
        line = one_error_line(done)
        assert line.startswith(f"error: --out {ro / 't.md'} cannot be written: {ro} is on a read-only"), line
        assert done.stdout == b""


# ------------------------------------------------------------------------------------ 21: a binary "CSV"

def test_summarize_on_a_binary_file_is_one_line(tmp_path):
    binary = tmp_path / "results.csv"
    binary.write_bytes(bytes(range(256)) * 8)
    done = subprocess.run([sys.executable, str(REPO / "tools" / "summarize.py"), str(binary)], capture_output=True,
                          timeout=60)
    assert f"{binary} is not a results CSV" in one_error_line(done)


# ------------------------------------------------------------------------------------------- smaller things

def test_a_failed_run_removes_the_folders_it_created_empty(tmp_path):
    write_category(tmp_path / "data", "toy", seed=0)
    first = tmp_path / "data" / "toy" / "train" / "good" / "001.png"
    first.write_bytes(first.read_bytes()[:100])
    kept = tmp_path / "kept"
    (kept / "mvtecad").mkdir(parents=True)  # made by someone else: stays, though empty
    for exp in (tmp_path / "new" / "exp", kept):
        with pytest.raises(UserError, match="001.png"):
            train.main(["--dataroot", str(tmp_path / "data"), *FAST, "--experiment", str(exp)])
    assert not (tmp_path / "new").exists()
    assert (kept / "mvtecad").is_dir() and os.listdir(kept / "mvtecad") == []


def test_the_run_table_other_row_never_passes_the_total():
    seconds = {"fit": 5.0, "precision": 0.2, "calibrate": 0.5, "score": 3.0, "device_total": 8.8,
               "metric_aupro": 2.0, "metric_paper_pro": 2.5, "write": 0.3, "total": 12.3}
    rows = dict(_timings(seconds))
    assert rows["total"] == 12.3 and rows["other"] <= 12.3 - 8.7 + 1e-9
    assert sum(v for k, v in rows.items() if k != "total") <= 12.3 + 1e-9
