"""A grid of variants (--approx, --k, --seed lists) from one pass over the images: each variant's folder,
row, maps and metrics are its own run's; one backbone forward per batch and distinct backbone; as few
passes as the memory budget allows."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import train
from common import UserError
from models import Config
from models.backbone import FeatureExtractor
from pipeline import grid
from pipeline.estimate import estimate, pass_estimate
from tests.helpers.data import write_category

FAST = ["--model", "resnet18", "--image-size", "64", "--workers", "0", "--quiet"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mvtec")
    write_category(root, "toy", seed=0)
    write_category(root, "other", seed=1)
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A state-dict file: the backbone does not depend on the seed, so a seed grid shares its forward."""
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def rows_of(report: Path) -> list[dict]:
    with open(report, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def run(root: Path, exp: Path, *flags: str) -> None:
    assert train.main(["--dataroot", str(root), "--experiment", str(exp), *FAST, *flags]) == 0


def test_each_variant_is_its_own_run(root, weights, tmp_path, capsys):
    exp = tmp_path / "grid"
    run(root, exp, "--category", "toy,other", "--weights", str(weights), "--approx", "ortho,sample", "--k", "5,10",
        "--seed", "2")
    out = capsys.readouterr().out
    names = [f"{a}-k{k}-seed2" for a in ("ortho", "sample") for k in (5, 10)]
    for category in ("toy", "other"):
        assert sorted(p.name for p in (exp / "mvtecad" / category).iterdir()) == sorted(names)
    rows = rows_of(exp / "results.csv")
    assert [(r["category"], r["approx"], r["k"], r["seed"]) for r in rows if r["category"] != "mean"] == \
        [(c, a, k, "2") for c in ("toy", "other") for a in ("ortho", "sample") for k in ("5", "10")]
    means = [r for r in rows if r["category"] == "mean"]  # one per variant, over the two categories
    assert [(r["approx"], r["k"], r["seed"]) for r in means] == [(a, k, "2") for a in ("ortho", "sample")
                                                                 for k in ("5", "10")]
    assert "toy sample-k10-seed2: SEG AUPROC" in out and "mean ortho-k5-seed2: SEG AUPROC" in out
    # a variant run on its own: the same maps bit for bit and the same metrics
    for approx, k, seed in (("sample", "10", "2"),):
        alone = tmp_path / f"alone-{approx}{k}{seed}"
        run(root, alone, "--category", "toy,other", "--weights", str(weights), "--approx", approx, "--k", k,
            "--seed", seed)
        for category in ("toy", "other"):
            mine = exp / "mvtecad" / category / f"{approx}-k{k}-seed{seed}"
            theirs = alone / "mvtecad" / category
            assert np.array_equal(np.load(mine / "scores.npz")["maps"], np.load(theirs / "scores.npz")["maps"])
            a, b = (json.loads((d / "metrics.json").read_text()) for d in (mine, theirs))
            assert a["metrics"].keys() == b["metrics"].keys()
            assert all(abs(a["metrics"][m] - b["metrics"][m]) <= 1e-9 for m in a["metrics"])
            assert a["thresholds"] == b["thresholds"]
            assert (a["approx"], a["k"], a["seed"]) == (approx, int(k), int(seed))
            sums = [torch.load(d / "model.pt", weights_only=True)["stats"]["sum_zz_packed"] for d in (mine, theirs)]
            assert torch.equal(*sums)


def test_one_forward_per_batch_and_backbone(root, weights, tmp_path, monkeypatch):
    calls = []
    forward = FeatureExtractor.forward
    monkeypatch.setattr(FeatureExtractor, "forward", lambda self, x: calls.append(len(x)) or forward(self, x))
    run(root, tmp_path / "a", "--category", "toy", "--weights", str(weights), "--k", "5")
    images = sum(calls)
    assert images == 12 + 7  # fit and validation (train/good), test: each image once
    calls.clear()
    run(root, tmp_path / "b", "--category", "toy", "--weights", str(weights), "--k", "5", "--approx",
        "ortho,gaussian", "--seed", "3,4")
    assert sum(calls) == images  # four variants, one backbone: the same forwards
    calls.clear()
    run(root, tmp_path / "c", "--category", "toy", "--weights", "random", "--k", "5", "--seed", "3,4")
    assert sum(calls) == 2 * images  # random weights are drawn from the seed: two backbones


def test_variants_that_do_not_fit_together_run_in_passes(root, tmp_path, monkeypatch, capsys):
    flags = ["--category", "toy", "--weights", "random", "--k", "18,19,20", "--verbose"]
    def config(k):
        return Config(backbone="resnet18", k=k, image_size=(64, 64), protocol="standard")
    single = estimate(config(20), 1, 7, 8, 0, torch.device("cpu"), True, 0).peak_rss_bytes
    pair = pass_estimate([config(18), config(19)], 1, 7, 8, 0, torch.device("cpu"), True, 0).peak_rss_bytes
    assert pair > single  # every variant's state counts
    monkeypatch.setattr("pipeline.estimate.resident_bytes", lambda: 0)
    budget = (single + pair) // 2  # each variant fits alone, no two together
    passes = []
    segments = train.segments_of
    monkeypatch.setattr(train, "segments_of", lambda plan, *a: passes.append(plan.variant) or segments(plan, *a))
    run(root, tmp_path / "exp", *flags, "--max-memory", str(budget))
    assert passes == ["ortho-k18-seed1111", "ortho-k19-seed1111", "ortho-k20-seed1111"]
    passes.clear()
    run(root, tmp_path / "all", *flags)  # the default budget holds them all: one pass
    assert passes == ["ortho-k18-seed1111"]
    same = [np.load(tmp_path / d / "mvtecad" / "toy" / "ortho-k19-seed1111" / "scores.npz")["maps"]
            for d in ("exp", "all")]
    assert np.array_equal(*same)
    together = json.loads((tmp_path / "all" / "mvtecad" / "toy" / "ortho-k18-seed1111" / "metrics.json").read_text())
    alone = json.loads((tmp_path / "exp" / "mvtecad" / "toy" / "ortho-k18-seed1111" / "metrics.json").read_text())
    assert together["estimate"]["peak_rss_bytes"] > alone["estimate"]["peak_rss_bytes"]  # the pass's, not its own
    assert together["estimate"]["model_file_bytes"] == alone["estimate"]["model_file_bytes"]  # its own file


def test_packing_takes_as_few_passes_as_fit():
    sizes = {"a": 5, "b": 4, "c": 3, "d": 3, "e": 1}

    class P:  # what packed() reads of a plan: its state's size
        def __init__(self, name):
            self.name = name
            self.config = Config(backbone="resnet18", k=sizes[name] * 10, image_size=(64, 64))

    class E:
        def __init__(self, peak):
            self.peak_rss_bytes = peak
    plans = [P(name) for name in "abcde"]
    from pipeline.estimate import packed
    groups = packed(plans, lambda group: E(sum(sizes[p.name] for p in group)), 8)
    assert [[p.name for p in g] for g in groups] == [["a", "c"], ["b", "d", "e"]]  # 16 in two passes of <= 8


@pytest.mark.parametrize("flags, message", [
    (["--k", "5,x"], r"^--k x must be an integer \(or a comma-separated list of them\)$"),
    (["--k", "5,,10"], r"^--k 5,,10: an empty item; pass values separated by commas"),
    (["--k", "5,1000"], r"^--k 1000 must be between 1 and F = 448 for resnet18$"),
    (["--approx", "ortho,bogus"], r"^--approx bogus: choose from ortho, .*comma-separated list\)$"),
    (["--seed", "1,-2"], r"^--seed -2 must be an integer in 0 \.\. 2\^63 - 1"),
])
def test_bad_lists_are_one_line(root, tmp_path, flags, message):
    with pytest.raises(UserError, match=message):
        train.main(["--dataroot", str(root), "--category", "toy", "--experiment", str(tmp_path / "x"), "--weights",
                    "random", *FAST, *flags])
    assert not (tmp_path / "x").exists()


def test_resume_takes_one_variant(root, tmp_path):
    run(root, tmp_path / "a", "--category", "toy", "--weights", "random", "--k", "5")
    with pytest.raises(UserError, match=r"^--resume extends one model: pass one --approx, --k and --seed"):
        train.main(["--dataroot", str(root), "--category", "toy", "--experiment", str(tmp_path / "b"), "--resume",
                    str(tmp_path / "a" / "mvtecad" / "toy" / "model.pt"), "--k", "5,10", *FAST])


def test_whole_feature_variants_take_k_f_once():
    found = grid.variants("resnet18", (1, 2, 3), [grid.approx_value(a) for a in ("full", "ortho", "global")],
                          [5, 10], [1])
    assert [v.folder for v in found] == ["full-k448-seed1", "ortho-k5-seed1", "ortho-k10-seed1", "global-k448-seed1"]
    assert grid.lists(type("A", (), {"approx": None, "k": "10,5,10", "seed": None, "resume": None})()).k == [10, 5]


def test_after_the_fit_only_the_model_holds_its_sums():
    """The model drops its sums once its file is written (up to 1.4 GB at 1024 px): nothing else may keep them."""
    import sys

    from datasets.batch import Batch
    from models import SemiOrthogonal
    from pipeline.shared_pass import fit_together

    models = [SemiOrthogonal(Config(backbone="resnet18", k=k, image_size=(64, 64)), weights="random") for k in (5, 8)]
    batch = Batch(torch.rand(2, 3, 64, 64), torch.zeros(2, 64, 64, dtype=torch.uint8),
                  torch.zeros(2, dtype=torch.int64), torch.arange(2), ("", ""))
    fit_together(models, [batch, batch])
    assert [m.stats.n for m in models] == [4, 4]
    assert [sys.getrefcount(m.stats) for m in models] == [2, 2]  # the model's attribute and the call's argument
