"""Provenance: metrics.json and model.pt say what produced them; summarize --provenance shows differences."""
import json
import os

import torch

import train
from datasets.samples import Sample
from pipeline.provenance import differences, files_digest
from tests.helpers.data import write_category
from tools import summarize

FAST = ["--weights", "random", "--model", "resnet18", "--k", "10", "--image-size", "64", "--workers", "0",
        "--quiet"]


def test_a_touched_file_changes_the_digest_and_the_order_does_not(tmp_path):
    files = []
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"x")
        files.append(Sample(tmp_path / name))
    before = files_digest(files)
    assert files_digest(files[::-1]) == before
    stat = os.stat(files[0].image)
    os.utime(files[0].image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert files_digest(files) != before


def test_runs_record_their_provenance_and_summarize_shows_the_difference(tmp_path, capsys):
    root = tmp_path / "data"
    write_category(root, "toy", seed=0)
    for name, seed in (("a", "1"), ("b", "2")):
        assert train.main(["--dataroot", str(root), "--category", "toy", "--experiment", str(tmp_path / name),
                           "--seed", seed, *FAST]) == 0
    a, b = (tmp_path / name / "mvtecad" / "toy" for name in ("a", "b"))
    record = json.loads((a / "metrics.json").read_text())["provenance"]
    assert record["command"].startswith("train.py --dataroot ") and "--seed 1" in record["command"]
    assert record["torch"] == torch.__version__ and record["device"] == "cpu"
    assert set(record["files"]) == {"fit", "val", "test"} and len(record["files"]["fit"]) == 64
    assert record["git"] is None or set(record["git"]) == {"commit", "dirty"}
    assert torch.load(a / "model.pt", weights_only=True)["provenance"] == record
    other = json.loads((b / "metrics.json").read_text())["provenance"]
    assert [key for key, _, _ in differences(record, other)] == ["command"]
    capsys.readouterr()
    assert summarize.main(["--provenance", str(a), str(b / "metrics.json")]) == 0
    out = capsys.readouterr().out
    assert "| command |" in out and "--seed 1" in out and "--seed 2" in out and "| torch |" not in out
