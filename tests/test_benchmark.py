"""The benchmark tool runs on tiny data, so it cannot rot (its figures are not asserted: it measures)."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_benchmark_reports_every_phase(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "tools/benchmark.py", "--root", str(tmp_path / "data"), "--n-train", "12",
                             "--n-test", "6", "--image-size", "64", "--k", "10", "--repeat", "2", "--no-save-model",
                             "--json", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert len(report["ratios"]) == 2 and report["summary"]["runs"] == 2  # train.py and its floor, twice in turn
    phases = [row["phase"] for row in report["phases"]]
    for phase in ("decode", "backbone forward", "projection + statistics", "precision (Cholesky; L^-1 on a GPU)",
                  "scoring (projection + distance)", "upsampling + smoothing", "metric aupro", "metric paper_roc",
                  "write model (packed sums)", "write scores + metrics"):
        assert phase in phases
    assert all(row["seconds"] >= 0 and row["peak_rss_mb"] > 0 for row in report["phases"])
    summary = report["summary"]
    assert summary["end_to_end_s"] > 0 and summary["floor_process_s"] > 0 and summary["end_to_end_peak_rss_mb"] > 100
    assert "| phase |" in result.stdout


def test_benchmark_compares_model_formats_and_scoring(tmp_path):
    out = tmp_path / "compare.json"
    for mode in ("model-file", "scoring"):
        result = subprocess.run([sys.executable, "tools/benchmark.py", "--root", str(tmp_path), "--compare", mode,
                                 "--image-size", "64", "--k", "10", "--scoring-k", "10", "--json", str(out)],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        rows = json.loads(out.read_text())[mode]
        if mode == "model-file":  # 256 positions x (100 - 55) sums x 4 bytes fewer, up to the zip's padding
            assert abs(rows[0]["bytes"] - rows[1]["bytes"] - 256 * 45 * 4) < 2048
            assert rows[2]["format"].endswith("named") and rows[1]["bytes"] - rows[2]["bytes"] > 10e6  # ResNet-18
        else:
            assert rows[0]["max_rel_diff"] < 1e-5 and rows[0]["solve_s"] > 0 and rows[0]["gemm_s"] > 0


def test_floor_decodes_what_train_decodes_and_writes_nothing(tmp_path):
    """tools/floor.py takes train.py's flags: every image of every category goes through the backbone
    (fit, validation and test: 10 + 4 per category here), and no output folder appears."""
    from tests.helpers.data import write_mvtec

    write_mvtec(tmp_path / "data", ["bottle", "cable"])
    flags = ["--dataroot", str(tmp_path / "data"), "--category", "bottle,cable", "--model", "resnet18",
             "--weights", "random", "--image-size", "64", "--workers", "0", "--experiment", str(tmp_path / "exp")]
    result = subprocess.run([sys.executable, "tools/floor.py", *flags], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"images": 28}
    assert not (tmp_path / "exp").exists()
    bad = subprocess.run([sys.executable, "tools/floor.py", *flags[:3], "nope"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "nope" in bad.stderr
