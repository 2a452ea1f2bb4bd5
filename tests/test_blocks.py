"""Native resolution in blocks: the same sums and maps as the in-memory fit, the budget that chooses them,
model files of format 3, and what is refused before decoding."""
import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import predict
import train
from common import UserError
from models import Config, SemiOrthogonal
from models.blocks import EmbeddingFile, block_bounds, fit_and_score
from models.model_file import read_model_file
from pipeline import estimate as estimates
from pipeline import predict_images
from tests.helpers.data import write_category

FAST = ["--weights", "random", "--model", "resnet18", "--k", "10", "--image-size", "64", "--workers", "0",
        "--quiet"]


def test_embedding_rows_read_back_what_was_appended(tmp_path):
    z = [torch.randn(12, size, 5) for size in (3, 1, 4)]
    file = EmbeddingFile(tmp_path / "z", 12, 5)
    for group in z:
        file.append(group)
    assert file.groups == [3, 1, 4] and file.n == 8
    every = torch.cat(z, dim=1)
    assert torch.equal(file.rows(4, 9, 2, 5), every[4:9, 2:7])
    assert all(torch.equal(a, b[2:6]) for a, b in zip(file.groups_of(2, 6), z))
    file.close()
    assert not (tmp_path / "z").exists()


def test_block_bounds_cover_every_position_once():
    bounds = block_bounds((7, 3), 2)
    assert bounds == [(0, 6), (6, 12), (12, 18), (18, 21)]


@pytest.mark.parametrize("rows", [1, 3, 16])
def test_blocks_give_the_in_memory_sums_and_distances(rows, tmp_path):
    config = Config(backbone="resnet18", k=12, image_size=(64, 64), seed=3)
    model = SemiOrthogonal(config, weights="random")
    torch.manual_seed(0)
    train_images = [torch.randn(4, 3, 64, 64) for _ in range(3)]
    test_images = torch.randn(5, 3, 64, 64)
    model.fit(train_images)
    stats = model.stats
    model.finalize()
    expected = model.distances(test_images)
    fit_file, test_file = (EmbeddingFile(tmp_path / name, model.positions, 12) for name in ("fit", "test"))
    for z, _ in model.gather(model.features_of(train_images)):
        fit_file.append(z)
    for z, _ in model.gather(model.features_of([test_images])):
        test_file.append(z)
    blocked, (distances,) = fit_and_score(fit_file, [test_file], model.feature_size, rows, config.eps, False,
                                          tmp_path / "sums")
    assert blocked.n == stats.n == 12
    assert torch.equal(blocked.shift, stats.shift) and torch.equal(blocked.sum_z, stats.sum_z)
    sums = torch.from_numpy(np.fromfile(tmp_path / "sums", dtype=np.float32)).view_as(stats.sum_zz)
    assert torch.equal(sums, stats.sum_zz)
    torch.testing.assert_close(distances, expected, rtol=1e-6, atol=0)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mvtec")
    write_category(root, "toy", seed=1, n_train=20)
    return root


def forced_blocks(monkeypatch, rows: int) -> None:
    """Every run over budget at once and given `rows` rows per block (the budget's choice is tested apart)."""
    at_once = estimates.pass_estimate
    monkeypatch.setattr(estimates, "pass_estimate",
                        lambda *a, **k: replace(at_once(*a, **k), peak_rss_bytes=1 << 50))
    monkeypatch.setattr(estimates, "block_rows", lambda config, budget, estimate_of: rows)


def test_a_blocked_run_writes_the_in_memory_results(root, tmp_path, monkeypatch, capsys):
    run = ["--dataroot", str(root), "--category", "toy", *FAST]
    assert train.main([*run, "--experiment", str(tmp_path / "memory")]) == 0
    forced_blocks(monkeypatch, 5)
    assert train.main([*run, "--experiment", str(tmp_path / "blocks"), "--verbose"]) == 0
    assert "fitted in blocks of 5 feature-map rows (16 rows" in capsys.readouterr().out
    memory, blocks = (tmp_path / name / "mvtecad" / "toy" for name in ("memory", "blocks"))
    assert sorted(p.name for p in blocks.iterdir()) == ["metrics.json", "model.pt", "model.sums", "scores.npz"]
    a, b = np.load(memory / "scores.npz"), np.load(blocks / "scores.npz")
    for key in ("maps", "image_scores", "masks", "labels"):
        np.testing.assert_array_equal(a[key], b[key])
    ma, mb = (json.loads((folder / "metrics.json").read_text()) for folder in (memory, blocks))
    assert ma["metrics"] == mb["metrics"] and ma["thresholds"] == mb["thresholds"]
    assert (ma["block_rows"], mb["block_rows"]) == (None, 5)
    state = read_model_file(blocks / "model.pt")
    assert state["version"] == 3 and "sum_zz_packed" not in state["stats"]
    in_memory = torch.load(memory / "model.pt", weights_only=True)["stats"]["sum_zz_packed"]
    assert (blocks / "model.sums").stat().st_size == in_memory.numel() * 4
    loaded = SemiOrthogonal.load(blocks / "model.pt")
    assert torch.equal(loaded.stats.sum_zz, in_memory)
    monkeypatch.setattr(predict_images, "block_rows", lambda config, budget, estimate_of: 3)  # 6 blocks of 16 rows
    for name in ("memory", "blocks"):  # predict.py scores a model fitted in blocks block by block
        folder = tmp_path / name / "mvtecad" / "toy"
        assert predict.main(["--model", str(folder / "model.pt"), "--input", str(root / "toy" / "test"),
                             "--out", str(tmp_path / f"pred-{name}"), "--quiet"]) in (0, 1)
    rows = [list(csv.DictReader(open(tmp_path / f"pred-{name}" / "predictions.csv"))) for name in ("memory", "blocks")]
    assert [r["image_score"] for r in rows[0]] == [r["image_score"] for r in rows[1]] and rows[0]
    for kind in ("heatmap", "mask"):
        for image in (tmp_path / "pred-memory").rglob(f"*_{kind}.png"):
            other = tmp_path / "pred-blocks" / image.relative_to(tmp_path / "pred-memory")
            np.testing.assert_array_equal(np.asarray(Image.open(image)), np.asarray(Image.open(other)))
    assert not list((tmp_path / "pred-blocks").rglob(".embeddings*"))


def test_predict_refuses_a_budget_too_small_for_one_row(root, tmp_path, monkeypatch, capsys):
    forced_blocks(monkeypatch, 8)
    assert train.main(["--dataroot", str(root), "--category", "toy", "--experiment", str(tmp_path / "e"), *FAST]) == 0
    model = tmp_path / "e" / "mvtecad" / "toy" / "model.pt"
    with pytest.raises(UserError, match=r"model.pt needs more than 1 MiB even in blocks of one feature-map row; "
                                        "raise --max-memory or lower --batch-size"):
        predict.main(["--model", str(model), "--input", str(root / "toy" / "test"), "--out", str(tmp_path / "p"),
                      "--max-memory", "1M"])
    assert not (tmp_path / "p").exists()
    with pytest.raises(UserError, match=r"^--max-memory 1Q: pass a size such as 8G"):
        predict.main(["--model", str(tmp_path / "missing.pt"), "--input", str(root / "toy" / "test"),
                      "--out", str(tmp_path / "p"), "--max-memory", "1Q"])
    monkeypatch.setattr(estimates.shutil, "disk_usage", lambda path: type("U", (), {"free": 1000})())
    with pytest.raises(UserError, match=r"^scoring in blocks writes about .* of embeddings into .*, which has 0 MiB "
                                        r"free; free space there or choose another --out$"):
        predict.main(["--model", str(model), "--input", str(root / "toy" / "test"), "--out", str(tmp_path / "p")])
    assert not (tmp_path / "p").exists()


def test_the_budget_chooses_the_largest_block_that_fits(root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(estimates, "resident_bytes", lambda: 300 << 20)
    config = Config(backbone="resnet18", k=100, image_size=(128, 128))
    args = (2, 3, 8, 0, True, 300 << 20)
    at_once = estimates.estimate(config, 2, 3, 8, 0, torch.device("cpu"), True, 300 << 20)
    by_rows = [estimates.blocked_estimate(config, r, *args).peak_rss_bytes for r in range(1, 33)]
    assert by_rows == sorted(by_rows) and by_rows[0] < at_once.peak_rss_bytes
    budget = (by_rows[5] + by_rows[6]) // 2
    choose = estimates.block_rows(config, budget, lambda r: estimates.blocked_estimate(config, r, *args))
    assert choose == 6
    assert estimates.block_rows(config, by_rows[0] - 1, lambda r: estimates.blocked_estimate(config, r, *args)) is None
    # through train.py: a --max-memory between the blocked and the in-memory peak fits in blocks
    budget = (by_rows[0] + at_once.peak_rss_bytes) // 2
    run = ["--dataroot", str(root), "--category", "toy", *FAST, "--k", "100", "--image-size", "128"]
    assert train.main([*run, "--experiment", str(tmp_path / "e"), "--verbose", "--max-memory", str(budget)]) == 0
    assert "in blocks of" in capsys.readouterr().out
    assert (tmp_path / "e" / "mvtecad" / "toy" / "model.sums").is_file()


def test_what_cannot_be_blocked_is_refused_in_one_line_before_decoding(root, tmp_path, monkeypatch):
    decoded = []
    monkeypatch.setattr("datasets.base.read_image", lambda *a, **k: decoded.append(a) or 1 / 0)
    at_once = estimates.pass_estimate
    monkeypatch.setattr(estimates, "pass_estimate",
                        lambda *a, **k: replace(at_once(*a, **k), peak_rss_bytes=1 << 50))
    run = ["--dataroot", str(root), "--category", "toy", "--experiment", str(tmp_path / "e"), *FAST]
    with pytest.raises(UserError, match=r"^toy needs about .* \(--approx global cannot be fitted in blocks "):
        train.main([*run, "--approx", "global"])
    monkeypatch.setattr(estimates.shutil, "disk_usage", lambda path: type("U", (), {"free": 1000})())
    with pytest.raises(UserError, match=r"^toy in blocks writes about .* of embeddings and sums into .*, which has "
                                        r"0 MiB free; free space there or choose another --experiment$"):
        train.main(run)
    assert decoded == [] and not (tmp_path / "e").exists()


def test_a_format_3_file_without_its_sums_is_one_line(root, tmp_path, monkeypatch):
    forced_blocks(monkeypatch, 4)
    assert train.main(["--dataroot", str(root), "--category", "toy", "--experiment", str(tmp_path / "e"), *FAST]) == 0
    folder = tmp_path / "e" / "mvtecad" / "toy"
    sums = folder / "model.sums"
    data = sums.read_bytes()
    sums.write_bytes(data[:-4])
    with pytest.raises(UserError, match=r"model.sums has [0-9,]+ bytes, not the [0-9,]+ of its config; the file is "):
        read_model_file(folder / "model.pt")
    sums.unlink()
    with pytest.raises(UserError, match=r"model.sums is missing \(a model fitted in blocks is the two files"):
        SemiOrthogonal.load(folder / "model.pt")
    moved = tmp_path / "moved"
    moved.mkdir()
    (folder / "model.pt").rename(moved / "model.pt")
    (moved / "model.sums").write_bytes(data)  # the pair moved together still loads
    assert SemiOrthogonal.load(moved / "model.pt").stats.n == 18
