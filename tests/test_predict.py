"""Using a fitted model: calibrated thresholds, predict.py on a folder, --resume and merged fits."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import predict
import train
from common import UserError
from datasets.base import ImageDataset
from datasets.mvtec import load
from models import Config, SemiOrthogonal, threshold_at_fpr
from models.gaussian import unpack_lower
from tests.helpers.data import write_bomb, write_category

REPO = Path(__file__).resolve().parents[1]
FAST = ["--weights", "random", "--model", "resnet18", "--k", "10", "--image-size", "64", "--batch-size", "8",
        "--workers", "0", "--protocol", "standard"]  # the paper pipeline's predict: tests/test_protocol.py


@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.1, 0.25])
def test_threshold_gives_at_most_the_requested_false_positive_rate(fpr):
    scores = np.random.default_rng(0).normal(size=1000).round(2)  # with ties
    t = threshold_at_fpr(scores, fpr)
    assert (scores > t).mean() <= fpr
    lower = scores[scores < t]
    if lower.size:  # and it is the lowest such threshold among the observed scores
        assert (scores > lower.max()).mean() > fpr


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_category(root, "toy", seed=0, n_train=40)
    exp = tmp_path_factory.mktemp("exp")
    train.main(["--dataroot", str(root), "--category", "toy", "--experiment", str(exp), "--val-fpr", "0.25", *FAST])
    return root, exp / "mvtecad" / "toy"


def test_calibration_holds_on_the_validation_images(fitted):
    root, folder = fitted
    state = torch.load(folder / "model.pt", weights_only=True)
    thresholds = state["thresholds"]
    assert thresholds["n_val"] == 4 and thresholds["val_fpr"] == 0.25
    assert json.loads((folder / "metrics.json").read_text())["thresholds"] == thresholds
    model = SemiOrthogonal.load(folder / "model.pt")
    validation = [s for i, s in enumerate(load(root, "toy").train) if i % 10 == 9]
    images = torch.stack([ImageDataset(validation, (64, 64))[i]["image"] for i in range(len(validation))])
    maps, scores = model.predict(images)
    assert (scores.numpy() > thresholds["image"]).mean() <= 0.25
    assert (maps.numpy() > thresholds["pixel"]).mean() <= 0.25
    assert np.isclose(scores.numpy(), thresholds["image"], rtol=1e-5).any()  # an observed score, not a guess


def test_scoring_by_the_inverse_gives_the_solves_maps(fitted):
    """predict --watch scores with L^{-1} (one GEMM): the maps of the triangular solve, and no sums kept."""
    root, folder = fitted
    model = SemiOrthogonal.load(folder / "model.pt")
    images = torch.stack([ImageDataset(load(root, "toy").test, (64, 64))[i]["image"] for i in range(3)])
    maps, scores = model.predict(images)
    L = unpack_lower(model.L_packed.double(), 10, symmetric=False).tril()
    model.score_by_inverse()
    assert model.L_packed is None and model.L_inv is not None and model.stats is None
    identity = model.L_inv.double() @ L  # L^{-1} L = I, in float64
    torch.testing.assert_close(identity, torch.eye(10, dtype=torch.float64).expand_as(identity), rtol=0, atol=1e-5)
    inverse_maps, inverse_scores = model.predict(images)
    torch.testing.assert_close(inverse_maps, maps, rtol=1e-5, atol=1e-5 * maps.abs().max().item())
    torch.testing.assert_close(inverse_scores, scores, rtol=1e-5, atol=0)
    with pytest.raises(RuntimeError, match="sums"):
        model.save(folder.parent / "never.pt")


def write_inputs(folder: Path, root: Path) -> None:
    folder.mkdir()
    rgb = Image.open(root / "toy" / "test" / "blob" / "000.png").convert("RGB")
    rgb.save(folder / "rgb.png")
    rgb.convert("L").save(folder / "gray.png")
    rgb.resize((90, 50)).save(folder / "wide.jpg")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "notes.txt").write_text("not an image")


def test_predict_on_a_folder(fitted, tmp_path):
    root, folder = fitted
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    write_inputs(inputs, root)
    result = subprocess.run([sys.executable, "predict.py", "--model", str(folder / "model.pt"),
                             "--input", str(inputs), "--out", str(out)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr  # the corrupt file makes the run fail at the end
    assert "corrupt.png" in result.stderr
    rows = {Path(r["path"]).name: r for r in csv.DictReader(open(out / "predictions.csv"))}
    assert set(rows) == {"rgb.png", "gray.png", "wide.jpg"}
    for name, size in [("rgb", (64, 64)), ("gray", (64, 64)), ("wide", (90, 50))]:
        for kind in ("heatmap", "mask"):
            assert Image.open(out / f"{name}_{kind}.png").size == size
        overlay = np.asarray(Image.open(out / f"{name}_overlay.png"))  # the image, a colour bar and a caption
        assert overlay.shape[0] > size[1] and overlay.shape[1] > size[0]
        mask = np.asarray(Image.open(out / f"{name}_mask.png"))
        assert float(rows[f"{name}.png" if name != "wide" else "wide.jpg"]["anomalous_area"]) == pytest.approx(
            (mask > 0).mean(), abs=1e-6)
    # the same image in colour and in grey scores alike (grey is repeated to three channels)
    assert float(rows["rgb.png"]["image_score"]) == pytest.approx(float(rows["gray.png"]["image_score"]), rel=0.05)
    with pytest.raises(UserError, match="already holds predictions"):
        predict.main(["--model", str(folder / "model.pt"), "--input", str(inputs), "--out", str(out)])


def test_predict_bad_model_file(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 truncated")
    result = subprocess.run([sys.executable, "predict.py", "--model", str(tmp_path / "junk.pt"), "--input",
                             str(tmp_path), "--out", str(tmp_path / "o")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "junk.pt" in result.stderr


def fit_direct(samples, config) -> SemiOrthogonal:
    model = SemiOrthogonal(config, weights="random")
    data = ImageDataset(samples, config.image_size)
    model.fit(torch.stack([data[i]["image"] for i in range(len(data))]).split(8))
    model.finalize()
    return model


def test_resume_equals_one_fit_on_all_images(tmp_path):
    write_category(tmp_path / "a", "toy", seed=3, n_train=12)
    write_category(tmp_path / "b", "toy", seed=4, n_train=12)
    train.main(["--dataroot", str(tmp_path / "a"), "--category", "toy", "--experiment", str(tmp_path / "e1"), *FAST])
    first = tmp_path / "e1" / "mvtecad" / "toy" / "model.pt"
    train.main(["--dataroot", str(tmp_path / "b"), "--category", "toy", "--experiment", str(tmp_path / "e2"),
                "--resume", str(first), "--weights", "random", "--workers", "0"])
    resumed = SemiOrthogonal.load(tmp_path / "e2" / "mvtecad" / "toy" / "model.pt")
    fit_set = [s for part in "ab" for i, s in enumerate(load(tmp_path / part, "toy").train) if i % 10 != 9]
    direct = fit_direct(fit_set, resumed.config)
    assert resumed.stats.n == direct.stats.n == 22
    images = torch.stack([ImageDataset(load(tmp_path / "a", "toy").test, (64, 64))[i]["image"] for i in range(3)])
    torch.testing.assert_close(resumed.predict(images)[0], direct.predict(images)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(UserError, match="fitted with --model resnet18"):
        train.main(["--dataroot", str(tmp_path / "b"), "--category", "toy", "--experiment", str(tmp_path / "e3"),
                    "--resume", str(first), "--model", "wide_resnet50_2"])


def test_merged_fits_equal_one_fit_on_the_union(tmp_path):
    write_category(tmp_path, "toy", seed=5, n_train=20)
    samples = load(tmp_path, "toy").train
    config = Config(backbone="resnet18", k=10, image_size=(64, 64))
    paths = []
    for name, part in (("a", samples[:9]), ("b", samples[9:])):
        model = SemiOrthogonal(config, weights="random")
        data = ImageDataset(part, (64, 64))
        model.fit(torch.stack([data[i]["image"] for i in range(len(data))]).split(4))
        model.save(tmp_path / f"{name}.pt")
        paths.append(str(tmp_path / f"{name}.pt"))
    merged_path = tmp_path / "merged.pt"
    result = subprocess.run([sys.executable, "tools/merge_stats.py", *paths, "-o", str(merged_path)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    merged = SemiOrthogonal.load(merged_path)
    direct = fit_direct(samples, config)
    torch.testing.assert_close(merged.mu, direct.mu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged.L_packed, direct.L_packed, rtol=1e-5,
                               atol=1e-5 * direct.L_packed.abs().max().item())

    other = SemiOrthogonal(Config(backbone="resnet18", k=10, image_size=(64, 64), seed=7), weights="random")
    other.fit([torch.zeros(2, 3, 64, 64)])
    other.save(tmp_path / "other.pt")
    result = subprocess.run([sys.executable, "tools/merge_stats.py", paths[0], str(tmp_path / "other.pt"), "-o",
                             str(tmp_path / "bad.pt")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and not (tmp_path / "bad.pt").exists()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A model fitted on noise with hand-set thresholds: enough for predict.py's file handling."""
    model = SemiOrthogonal(Config(backbone="resnet18", k=5, image_size=(64, 64)), weights="random")
    model.fit([torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))])
    model.thresholds = {"pixel": 1.0, "image": 1.0, "val_pixel_median": 0.0}
    path = tmp_path_factory.mktemp("model") / "model.pt"
    model.save(path)
    return path


def run_predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "predict.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def noise(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3)).astype(np.uint8)).save(path)


def test_predict_gives_every_input_its_own_outputs(tiny_model, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    names = ["a.png", "a_2.png", "sub/a.png", "a.jpg", "A.PNG"]
    for seed, name in enumerate(names):
        noise(inputs / name, seed)
    result = run_predict("--model", str(tiny_model), "--input", str(inputs), "--out", str(out))
    assert result.returncode == 0, result.stderr
    heatmaps = sorted(p.relative_to(out).as_posix() for p in out.rglob("*_heatmap.png"))
    assert len(heatmaps) == len(names) and len({h.lower() for h in heatmaps}) == len(names), heatmaps
    assert "sub/a_heatmap.png" in heatmaps and "a_2_heatmap.png" in heatmaps  # mirrors the input folders
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert sorted(Path(r["path"]).relative_to(inputs).as_posix() for r in rows) == sorted(names)


def test_predict_never_writes_over_an_existing_file(tiny_model, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    noise(inputs / "a.png", 0)
    noise(inputs / "b.png", 1)
    out.mkdir()
    (out / "b_overlay.png").write_bytes(b"the user's own file")
    result = run_predict("--model", str(tiny_model), "--input", str(inputs), "--out", str(out))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "b_overlay.png" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["b_overlay.png"]  # nothing written, nothing replaced
    assert (out / "b_overlay.png").read_bytes() == b"the user's own file"
    result = run_predict("--model", str(tiny_model), "--input", str(inputs), "--out", str(out), "--overwrite")
    assert result.returncode == 0, result.stderr
    assert Image.open(out / "b_heatmap.png").size == (64, 64) and Image.open(out / "b_overlay.png").size > (64, 64)


@pytest.mark.parametrize("flag, value", [("--out", "FILE"), ("--batch-size", "0"), ("--workers", "-1")])
def test_predict_bad_flags_are_one_line(tiny_model, tmp_path, flag, value):
    noise(tmp_path / "in" / "a.png", 0)
    (tmp_path / "FILE").write_text("not a folder")
    args = {"--model": str(tiny_model), "--input": str(tmp_path / "in"), "--out": str(tmp_path / "out")}
    args[flag] = str(tmp_path / "FILE") if value == "FILE" else value
    result = run_predict(*[part for item in args.items() for part in item])
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and flag in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_predict_skips_a_decompression_bomb(tiny_model, tmp_path):

    inputs, out = tmp_path / "in", tmp_path / "out"
    noise(inputs / "a.png", 0)
    write_bomb(inputs / "bomb.png")
    result = run_predict("--model", str(tiny_model), "--input", str(inputs), "--out", str(out))
    assert result.returncode == 1, result.stderr  # reported and skipped; the run fails at the end
    assert "bomb.png" in result.stderr and "Traceback" not in result.stderr
    assert [r["path"] for r in csv.DictReader(open(out / "predictions.csv"))] == [str(inputs / "a.png")]


def test_gather_keeps_every_image_in_order_when_a_batch_outgrows_the_group():
    torch.manual_seed(0)
    model = SemiOrthogonal(Config(backbone="resnet18", k=8, image_size=(32, 32)), weights="random")
    images = torch.randn(13, 3, 32, 32)
    batches = [images[:2], images[2:3], images[3:10], images[10:13]]  # 7 images > a group of 3
    features = [model.features(b) for b in batches]
    groups = [(z.clone(), sizes) for z, sizes in model.gather(features, capacity=3)]
    assert [sizes for _, sizes in groups] == [[2, 1], [7], [3]]
    torch.testing.assert_close(torch.cat([z for z, _ in groups], dim=1), model.project(model.features(images)))
