"""torchrun with two gloo processes on the CPU equals one process; a failing rank fails the job."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from models import SemiOrthogonal
from tests.helpers.data import write_category

REPO = Path(__file__).resolve().parents[1]
FAST = ["--weights", "random", "--model", "resnet18", "--k", "12", "--image-size", "64", "--batch-size", "4",
        "--workers", "0", "--device", "cpu", "--protocol", "standard"]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "train.py", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)


def test_two_processes_equal_one(tmp_path):
    write_category(tmp_path / "data", "toy", seed=0, n_train=23)
    args = ["--dataroot", str(tmp_path / "data"), "--category", "toy", *FAST]
    train.main([*args, "--experiment", str(tmp_path / "single")])
    result = torchrun(*args, "--experiment", str(tmp_path / "ddp"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("SEG AUPROC") == 1  # rank 0 alone reports
    single, ddp = (tmp_path / run / "mvtecad" / "toy" for run in ("single", "ddp"))
    a, b = (json.loads((folder / "metrics.json").read_text()) for folder in (single, ddp))
    assert a["n_train"] == b["n_train"] == 21
    assert b["metrics"] == pytest.approx(a["metrics"], abs=1e-4)
    m1, m2 = SemiOrthogonal.load(single / "model.pt"), SemiOrthogonal.load(ddp / "model.pt")
    assert m1.stats.n == m2.stats.n == 21
    torch.testing.assert_close(m2.mu, m1.mu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m2.L_packed, m1.L_packed, rtol=1e-4, atol=1e-4 * m1.L_packed.abs().max().item())
    assert sorted(p.name for p in ddp.iterdir()) == ["metrics.json", "model.pt", "scores.npz"]


def test_a_failing_rank_fails_the_job_and_leaves_no_model(tmp_path):
    write_category(tmp_path / "data", "toy", seed=1, n_train=12)
    broken = tmp_path / "data" / "toy" / "train" / "good" / "001.png"  # fit image 1: rank 1's shard
    broken.write_bytes(broken.read_bytes()[:120])
    result = torchrun("--dataroot", str(tmp_path / "data"), "--category", "toy", *FAST,
                      "--experiment", str(tmp_path / "ddp"))
    assert result.returncode != 0
    assert "error: cannot read image" in result.stderr and "001.png" in result.stderr
    assert not list((tmp_path / "ddp").rglob("model.pt"))
