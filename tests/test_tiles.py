"""Shared tiles (--tile, --tile-stride): cutting and putting back, the fit on tiles, the scores against a slow
float64 reference, the flags, train.py and predict.py end to end, the model file, merges, the estimate and export."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

import predict
import train
from common import SettingError, UserError
from models import Config, SemiOrthogonal
from models.footprint import activation_bytes, state_bytes, tile_bytes
from models.gaussian import unpack_lower
from models.tiles import check_tiling, corners, starts, tile, untile
from pipeline.estimate import ACTIVATION_FACTOR, estimate
from tests.helpers.data import write_category

REPO = Path(__file__).resolve().parents[1]
# 96 x 80 input, 64 px tiles at stride 32 x 48: rows 0, 32; columns 0 and 16 (the last one flush with the edge)
TILED = Config(backbone="resnet18", k=10, image_size=(96, 80), tile=(64, 64), tile_stride=(32, 48))
FAST = ["--weights", "random", "--model", "resnet18", "--workers", "0", "--k", "10", "--batch-size", "4"]


def images(n: int, seed: int, size: tuple[int, int] = (96, 80)) -> torch.Tensor:
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tiled() -> SemiOrthogonal:
    model = SemiOrthogonal(TILED, weights="random")
    model.fit(images(3, seed) for seed in range(3))
    model.finalize()
    return model


def test_tiles_start_at_multiples_of_the_stride_and_end_flush_with_the_edge():
    assert starts(96, 64, 32) == [0, 32]
    assert starts(80, 64, 48) == [0, 16]  # 48 would pass the edge: one tile flush with it instead
    assert starts(100, 64, 24) == [0, 24, 36]
    assert starts(64, 64, 64) == [0]
    assert corners((96, 80), (64, 64), (32, 48)) == [(0, 0), (0, 16), (32, 0), (32, 16)]


@pytest.mark.parametrize("size, tile_size, stride", [
    ((128, 96), (64, 32), (64, 32)),  # no overlap
    ((96, 80), (64, 64), (32, 48)),  # overlap, and a last tile flush with the edge
    ((100, 70), (48, 32), (16, 10)),  # up to 9 tiles over a pixel
])
def test_untile_inverts_tile(size, tile_size, stride):
    batch = images(2, 0, size)
    tiles = tile(batch, tile_size, stride)
    n = len(corners(size, tile_size, stride))
    assert tiles.shape == (2 * n, 3, *tile_size)
    top, left = corners(size, tile_size, stride)[-1]
    assert torch.equal(tiles[n + n - 1], batch[1, :, top:top + tile_size[0], left:left + tile_size[1]])
    torch.testing.assert_close(untile(tiles, size, tile_size, stride), batch, rtol=1e-6, atol=1e-6)
    constant = torch.full((3 * n, *tile_size), 2.5)  # maps without channels: (B * n, S, S) -> (B, H, W)
    assert torch.equal(untile(constant, size, tile_size, stride), torch.full((3, *size), 2.5))


def test_untile_averages_overlapping_tiles():
    tiles = torch.stack([torch.full((1, 4, 4), float(i)) for i in range(2)])  # two tiles over a 4 x 6 map
    out = untile(tiles, (4, 6), (4, 4), (4, 2))[0, 0]
    assert out[:, :2].eq(0).all() and out[:, 2:4].eq(0.5).all() and out[:, 4:].eq(1).all()


def test_fit_on_tiles_is_the_fit_on_the_cut_tiles_as_images(tiled):
    whole = SemiOrthogonal(Config(backbone="resnet18", k=10, image_size=(64, 64)), extractor=tiled.extractor)
    assert torch.equal(whole.W, tiled.W) and whole.feature_size == tiled.feature_size == (16, 16)
    # as the tiled model runs them: each batch's tiles at most as many at a time as the batch has images
    whole.fit(chunk for seed in range(3) for chunk in tile(images(3, seed), (64, 64), (32, 48)).split(3))
    assert tiled.stats.n == whole.stats.n == 3 * 3 * 4
    for key, value in whole.stats.state().items():
        assert torch.equal(tiled.stats.state()[key], value), key


def reference_maps(model: SemiOrthogonal, batch: torch.Tensor) -> np.ndarray:
    """Slow and literal: each tile's float64 Mahalanobis distances from the model's mu and L, upsampled,
    averaged where tiles overlap, blurred with scipy."""
    c = model.config
    places = corners(c.input_size, c.tile, c.stride)
    z = model.embed(tile(batch, c.tile, c.stride)).double()  # (P, B * n, k)
    L = unpack_lower(model.L_packed.double(), c.k).tril()  # the factor: its lower triangle
    cov = L @ L.transpose(1, 2)
    centred = (z - model.mu.double().unsqueeze(1)).transpose(1, 2)  # (P, k, B * n)
    distances = (centred * torch.linalg.solve(cov, centred)).sum(dim=1).sqrt().t().reshape(-1, 1, 16, 16)
    up = F.interpolate(distances, size=c.tile, mode="bilinear", align_corners=False)[:, 0].numpy()
    out = []
    for b in range(len(batch)):
        total, count = np.zeros(c.input_size), np.zeros(c.input_size)
        for i, (top, left) in enumerate(places):
            total[top:top + 64, left:left + 64] += up[b * len(places) + i]
            count[top:top + 64, left:left + 64] += 1
        out.append(gaussian_filter(total / count, sigma=4, mode="reflect", truncate=4))
    return np.stack(out)


def test_tiled_scores_equal_a_float64_reference(tiled):
    batch = images(2, 10)
    maps, scores = tiled.predict(batch)
    expected = reference_maps(tiled, batch)
    assert maps.shape == (2, 96, 80)
    assert np.abs(maps.numpy() - expected).max() < 1e-4 * np.abs(expected).max()
    assert torch.equal(scores, maps.flatten(1).amax(dim=1))
    assert tiled.distances(batch).shape == (2 * 4, 16, 16)
    batched = list(tiled.predict_batches([batch[:1], batch[1:]]))
    torch.testing.assert_close(torch.cat([m for m, _ in batched]), maps, rtol=1e-5, atol=1e-5)


def test_scoring_by_the_inverse_factor_gives_the_same_maps(tiled):
    """L^-1 and one GEMM, as on a GPU."""
    other = SemiOrthogonal(TILED, extractor=tiled.extractor)
    other.stats = tiled.stats
    other.finalize(inverse=True)
    batch = images(2, 11)
    torch.testing.assert_close(other.predict(batch)[0], tiled.predict(batch)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("approx", ["global", "lowrank", "lowranki"])
def test_the_ablations_score_on_the_tile_grid(approx):
    config = Config(backbone="resnet18", k=64 if approx == "global" else 10, approx=approx, image_size=(96, 80),
                    tile=(64, 64), layers=(1,))  # F = 64
    model = SemiOrthogonal(config, weights="random")
    model.fit([images(3, 0)])
    model.finalize()
    maps, scores = model.predict(images(2, 1))
    assert maps.shape == (2, 96, 80) and torch.isfinite(maps).all() and torch.equal(scores, maps.flatten(1).amax(1))


def test_the_model_file_keeps_the_tiles(tiled, tmp_path):
    tiled.save(tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert state["config"]["tile"] == [64, 64] and state["config"]["tile_stride"] == [32, 48]
    loaded = SemiOrthogonal.load(tmp_path / "model.pt")
    assert loaded.config == TILED
    torch.testing.assert_close(loaded.predict(images(1, 4))[0], tiled.predict(images(1, 4))[0])
    state["config"]["tile_stride"] = [80, 48]  # a stride beyond the tile
    torch.save(state, tmp_path / "damaged.pt")
    with pytest.raises(UserError, match="tile"):
        SemiOrthogonal.load(tmp_path / "damaged.pt")


def test_merging_a_tiled_with_an_untiled_fit_is_refused(tiled, tmp_path):
    import merge_stats

    tiled.save(tmp_path / "tiled.pt")
    whole = SemiOrthogonal(Config(backbone="resnet18", k=10, image_size=(96, 80)), extractor=tiled.extractor)
    whole.fit([images(2, 7)])
    whole.save(tmp_path / "whole.pt")
    with pytest.raises(UserError, match="tile"):
        merge_stats.merge([tmp_path / "tiled.pt", tmp_path / "whole.pt"])


@pytest.mark.parametrize("config, says", [
    (Config(backbone="resnet18", image_size=(64, 64), tile=(50, 50)), "$tile 50 x 50: resnet18 needs tiles a multiple"),
    (Config(backbone="resnet18", image_size=(64, 64), tile=(128, 64)), "$tile 128 x 64 is larger than the 64 x 64"),
    (Config(backbone="resnet18", image_size=(64, 64), tile=(32, 32), tile_stride=(48, 16)), "$tile_stride 48 x 16"),
    (Config(backbone="resnet18", image_size=(64, 64), tile_stride=(16, 16)), "$tile_stride needs $tile"),
])
def test_impossible_tiles_are_refused(config, says):
    with pytest.raises(SettingError) as error:
        check_tiling(config)
    assert says in error.value.template


def test_the_estimate_holds_one_tile_models_state_and_a_batch_of_tiles():
    tiled_config = Config(backbone="resnet18", k=10, image_size=(256, 256), tile=(64, 64))
    assert state_bytes(tiled_config) == state_bytes(Config(backbone="resnet18", k=10, image_size=(64, 64)))
    assert tile_bytes(tiled_config, 4) == 4 * 16 * 4 * 64 * 64 * 4  # 16 tiles of 3 channels and a map each
    e = estimate(tiled_config, n_val=2, n_test=5, batch_size=4, workers=0, device=torch.device("cpu"),
                 backbone_stored=True, baseline=0)
    assert e.parts["activations"] == int(ACTIVATION_FACTOR * activation_bytes("resnet18", (64, 64), 4)) + \
        tile_bytes(tiled_config, 4)
    assert e.parts["maps"] == estimate(Config(backbone="resnet18", k=10, image_size=(256, 256)), 2, 5, 4, 0,
                                       torch.device("cpu"), True, 0).parts["maps"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mvtec")
    write_category(folder, "toy", seed=0)
    return folder


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DATA"}
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def trained(root, tmp_path_factory) -> Path:
    """train.py with --tile on 96 px images: the experiment's category folder."""
    experiment = tmp_path_factory.mktemp("exp")
    assert train.main(["--dataroot", str(root), *FAST, "--image-size", "96", "80", "--protocol", "standard",
                       "--tile", "64", "--tile-stride", "32", "48", "--experiment", str(experiment)]) == 0
    return experiment / "mvtecad" / "toy"


def test_train_with_tiles_records_them(trained):
    summary = json.loads((trained / "metrics.json").read_text())
    assert summary["tile"] == [64, 64] and summary["tile_stride"] == [32, 48]
    assert summary["image_size"] == [96, 80] and 0 <= summary["metrics"]["pixel_auroc"] <= 1
    model = SemiOrthogonal.load(trained / "model.pt")
    assert model.config.tile == (64, 64) and model.stats.n == 4 * summary["n_train"]


@pytest.mark.parametrize("args, says", [
    (["--tile", "50"], "--tile 50 x 50: resnet18 needs tiles a multiple of 16, e.g. --tile 48"),
    (["--tile", "128"], "--tile 128 x 128 is larger than the 64 x 64 input"),
    (["--tile", "32", "--tile-stride", "40"], "--tile-stride 40 x 40 must be positive and at most the --tile"),
    (["--tile-stride", "16"], "--tile-stride needs --tile"),
    (["--tile", "8"], "--tile takes one size S or two sizes H W, each at least 16"),
    (["--tile", "32", "32", "32"], "--tile takes one size S or two sizes H W"),
])
def test_bad_tiles_are_one_line_exit_2(root, tmp_path, args, says):
    result = run_cli("--dataroot", str(root), *FAST, "--image-size", "64", "--experiment", str(tmp_path / "exp"), *args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and says in result.stderr, result.stderr
    assert not (tmp_path / "exp").exists()


def test_resuming_an_untiled_model_with_tiles_is_refused(root, tmp_path):
    assert train.main(["--dataroot", str(root), *FAST, "--image-size", "64", "--experiment", str(tmp_path / "e")]) == 0
    model = tmp_path / "e" / "mvtecad" / "toy" / "model.pt"
    result = run_cli("--dataroot", str(root), "--workers", "0", "--resume", str(model), "--tile", "32",
                     "--experiment", str(tmp_path / "again"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "a model of whole images, not of tiles" in result.stderr


def predictions(folder: Path) -> dict[str, dict]:
    with open(folder / "predictions.csv") as f:
        return {Path(row["path"]).name: row for row in csv.DictReader(f)}


def test_predict_and_export_of_a_tiled_model(trained, root, tmp_path):
    onnx = pytest.importorskip("onnx")  # optional: the floors' environment has no ONNX package
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import export as export_tool

    from onnx_model import OnnxScorer

    inputs = root / "toy" / "test" / "blob"
    assert predict.main(["--model", str(trained / "model.pt"), "--input", str(inputs), "--out",
                         str(tmp_path / "torch")]) == 0
    rows = predictions(tmp_path / "torch")
    assert sorted(rows) == sorted(p.name for p in inputs.iterdir())

    out = tmp_path / "model.onnx"
    assert export_tool.main(["--model", str(trained / "model.pt"), "--out", str(out)]) == 0
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    tiling = json.loads(props["tiling"])
    assert tiling["tile"] == [64, 64] and tiling["stride"] == [32, 48] and tiling["sigma"] == 4.0
    model = SemiOrthogonal.load(trained / "model.pt")
    batch = images(3, 5)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["tiles"] and [o.name for o in session.get_outputs()] == \
        ["tile_maps"]
    tiles = tile(batch, (64, 64), (32, 48))
    (tile_maps,) = session.run(["tile_maps"], {"tiles": tiles.numpy()})
    expected = F.interpolate(model.distances(batch)[:, None], size=(64, 64), mode="bilinear", align_corners=False)
    assert tile_maps.shape == (12, 64, 64)
    assert np.abs(tile_maps - expected[:, 0].numpy()).max() < 1e-4 * float(expected.abs().max())
    maps, scores = OnnxScorer(out).predict(batch)
    expected_maps, expected_scores = model.predict(batch)
    assert np.abs((maps - expected_maps).numpy()).max() < 1e-4 * float(expected_maps.abs().max())
    torch.testing.assert_close(scores, expected_scores, rtol=1e-4, atol=0)

    assert predict.main(["--model", str(out), "--input", str(inputs), "--out", str(tmp_path / "onnx")]) == 0
    for name, row in predictions(tmp_path / "onnx").items():
        assert float(row["image_score"]) == pytest.approx(float(rows[name]["image_score"]), rel=1e-4)
