"""Nothing lost: failed, killed and concurrent runs never damage earlier results (real processes)."""
import csv
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import results
from pipeline import outputs
from tests.helpers.data import write_category

REPO = Path(__file__).resolve().parents[1]
FAST = ["--weights", "random", "--model", "resnet18", "--workers", "0", "--k", "10", "--image-size", "64",
        "--batch-size", "4", "--category", "toy"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mvtec")
    write_category(root, "toy", seed=0)
    return root


def train(*args: str, cwd: Path = REPO, wait: bool = True):
    env = {k: v for k, v in os.environ.items() if k != "DATA"}
    command = [sys.executable, str(REPO / "train.py"), *args]
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_two_runs_started_together_get_their_own_default_folders(root, tmp_path):
    runs = [train("--dataroot", str(root), *FAST, cwd=tmp_path, wait=False),
            train("--dataroot", str(root), *FAST, "--k", "5", cwd=tmp_path, wait=False)]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read()
    experiments = sorted((tmp_path / "runs").iterdir())
    assert len(experiments) == 2
    ks = sorted(results.read_metrics(e / "mvtecad" / "toy" / "metrics.json")["k"] for e in experiments)
    assert ks == [5, 10]
    for e in experiments:
        assert [r["k"] for r in results.read_rows(e / "results.csv")] == [str(results.read_metrics(
            e / "mvtecad" / "toy" / "metrics.json")["k"])]


def test_new_experiment_is_exclusive_within_one_second(tmp_path):
    folders = {outputs.new_experiment(tmp_path) for _ in range(5)}
    assert len(folders) == 5 and all(f.is_dir() for f in folders)


def test_a_failed_rerun_keeps_the_earlier_results(root, tmp_path):
    exp = tmp_path / "exp"
    assert train("--dataroot", str(root), *FAST, "--experiment", str(exp)).returncode == 0
    folder = exp / "mvtecad" / "toy"
    before = snapshot(folder)
    bad = tmp_path / "bad"
    write_category(bad, "toy", seed=0)
    broken = bad / "toy" / "test" / "good" / "001.png"  # read after the fit, when model.pt exists
    broken.write_bytes(broken.read_bytes()[:100])
    result = train("--dataroot", str(bad), *FAST, "--experiment", str(exp), "--overwrite")
    assert result.returncode == 2 and "001.png" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert snapshot(folder) == before
    assert leftovers(folder.parent) == []
    assert len(results.read_rows(exp / "results.csv")) == 1


def test_a_failure_after_the_fit_leaves_no_model(root, tmp_path):
    exp = tmp_path / "exp"
    result = train("--dataroot", str(root), *FAST, "--experiment", str(exp), "--eps", "1e-30", "--k", "40")
    assert result.returncode == 2 and "positive definite" in result.stderr, result.stderr
    assert not exp.exists()  # no model, no staging folder, and no folder it created left empty
    assert train("--dataroot", str(root), *FAST, "--experiment", str(exp)).returncode == 0  # nothing blocks a rerun


def wait_for_staging(parent: Path, run: subprocess.Popen) -> None:
    for _ in range(600):
        if parent.is_dir() and any(p.name.startswith(".toy.staging-") for p in parent.iterdir()):
            return
        assert run.poll() is None, run.stderr.read()
        time.sleep(0.05)
    raise AssertionError("the run never staged its outputs")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_run_leaves_nothing_that_blocks_a_rerun(root, tmp_path, sig):
    exp = tmp_path / "exp"
    assert train("--dataroot", str(root), *FAST, "--experiment", str(exp)).returncode == 0
    folder = exp / "mvtecad" / "toy"
    before = snapshot(folder)
    run = train("--dataroot", str(root), *FAST, "--experiment", str(exp), "--overwrite", "--k", "7", wait=False)
    wait_for_staging(folder.parent, run)
    run.send_signal(sig)
    run.wait(timeout=60)
    assert snapshot(folder) == before  # the earlier results, untouched
    if sig == signal.SIGTERM:  # cleaned up on the way out
        assert run.returncode == 128 + signal.SIGTERM and leftovers(folder.parent) == []
    rerun = train("--dataroot", str(root), *FAST, "--experiment", str(exp), "--overwrite", "--k", "7")
    assert rerun.returncode == 0, rerun.stderr
    assert leftovers(folder.parent) == []  # a dead run's staging folder is recognised and removed
    assert results.read_metrics(folder / "metrics.json")["k"] == 7


def test_a_replacement_killed_between_its_renames_is_restored(tmp_path):
    target = tmp_path / "toy"
    target.mkdir()
    (target / "metrics.json").write_text("old")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket
    os.replace(target, tmp_path / f".toy.old-{socket.gethostname()}-{int(dead.stdout)}-abcd1234")
    assert outputs.clean_stale(target) == []
    assert (target / "metrics.json").read_text() == "old"


def append_many(report: str, worker: int) -> None:
    for i in range(25):
        results.append_rows(report, [{"dataset": "d", "category": f"w{worker}-{i}"}])


def test_concurrent_appends_lose_no_row(tmp_path):
    report = str(tmp_path / "results.csv")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=append_many, args=(report, w)) for w in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    with open(report) as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["category"] for r in rows) == sorted(f"w{w}-{i}" for w in range(8) for i in range(25))
    assert open(report).read().count("dataset,category") == 1


def test_a_report_with_other_columns_is_refused_before_any_work(root, tmp_path):
    report = tmp_path / "other.csv"
    report.write_text("a,b\n1,2\n")
    result = train("--dataroot", str(root), *FAST, "--experiment", str(tmp_path / "exp"), "--report", str(report))
    assert result.returncode == 2 and "other columns" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "exp").exists()


def test_resume_refuses_another_seed_or_approx(root, tmp_path):
    exp = tmp_path / "exp"
    assert train("--dataroot", str(root), *FAST, "--experiment", str(exp)).returncode == 0
    model = exp / "mvtecad" / "toy" / "model.pt"
    for flag, value in (("--seed", "5"), ("--approx", "sample")):
        result = train("--dataroot", str(root), "--weights", "random", "--workers", "0", "--category", "toy",
                       "--resume", str(model), flag, value, "--experiment", str(tmp_path / f"r{flag}"))
        assert result.returncode == 2 and f"fitted with {flag}" in result.stderr, result.stderr
