"""predict.py --runtime openvino: an exported model run by OpenVINO scores as onnxruntime runs it."""
import csv
import json
import sys
import types
from pathlib import Path

import benchmark_runtimes
import export as export_tool
import numpy as np
import pytest
import torch
from PIL import Image

import predict
from common import UserError
from models import Config, SemiOrthogonal
from onnx_model import OnnxScorer
from openvino_model import OpenVinoScorer
from tests.test_export import THRESHOLDS, fitted_model


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def images(n: int, seed: int, size: tuple[int, int] = (64, 64)) -> torch.Tensor:
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("openvino")
    fitted_model(folder / "model.pt", THRESHOLDS)
    assert export_tool.main(["--model", str(folder / "model.pt"), "--out", str(folder / "model.onnx")]) == 0
    return folder


def test_openvino_maps_equal_onnxruntimes_for_any_batch_size(exported):
    vino, ort = OpenVinoScorer(exported / "model.onnx"), OnnxScorer(exported / "model.onnx")
    # the metadata as onnxruntime reads it: fitted_model calibrated the thresholds, so none is 0
    assert (vino.config, vino.thresholds, vino.meta) == (ort.config, ort.thresholds, ort.meta)
    assert vino.thresholds.keys() == THRESHOLDS.keys() and vino.thresholds["pixel"] > 0
    for n in (1, 3, 8):  # exported with a batch of 2: the batch dimension is dynamic
        batch = images(n, n)
        maps, scores = vino.predict(batch)
        expected_maps, expected_scores = ort.predict(batch)
        assert maps.shape == (n, 64, 64) and scores.shape == (n,) and maps.dtype == torch.float32
        assert relative_error(maps, expected_maps) < 1e-4 and relative_error(scores, expected_scores) < 1e-4
        assert maps.std() > 0.01 * maps.abs().max()  # maps with something in them, not a constant


def test_a_tiled_model_with_external_data_runs_under_openvino(tmp_path):
    config = Config(backbone="resnet18", k=10, image_size=(64, 80), tile=(32, 32), tile_stride=(16, 16))
    model = SemiOrthogonal(config, weights="random")
    model.fit(images(4, seed, (64, 80)) for seed in range(2))
    model.finalize()
    model.save(tmp_path / "model.pt")
    out = tmp_path / "tiled.onnx"
    assert export_tool.main(["--model", str(tmp_path / "model.pt"), "--out", str(out), "--external-data"]) == 0
    assert Path(f"{out}.data").stat().st_size > 1_000_000
    vino, ort = OpenVinoScorer(out), OnnxScorer(out)
    for n in (1, 3):
        batch = images(n, 10 + n, (64, 80))
        maps, scores = vino.predict(batch)
        expected_maps, expected_scores = ort.predict(batch)
        assert maps.shape == (n, 64, 80)
        assert relative_error(maps, expected_maps) < 1e-4 and relative_error(scores, expected_scores) < 1e-4
        torch.testing.assert_close(maps, model.predict(batch)[0], rtol=0, atol=1e-4 * float(maps.abs().max()))


def read_predictions(path: Path) -> dict[str, dict]:
    with open(path) as f:
        return {Path(row["path"]).name: row for row in csv.DictReader(f)}


def test_predict_with_openvino_writes_onnxruntimes_predictions(exported, tmp_path):
    rng = np.random.default_rng(1)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (48 + 8 * i, 70, 3)).astype(np.uint8)).save(inputs / f"{i}.png")
    model = str(exported / "model.onnx")
    assert predict.main(["--model", model, "--input", str(inputs), "--out", str(tmp_path / "ort")]) == 0
    assert predict.main(["--model", model, "--input", str(inputs), "--out", str(tmp_path / "vino"),
                         "--runtime", "openvino", "--batch-size", "2"]) == 0
    ort, vino = read_predictions(tmp_path / "ort/predictions.csv"), read_predictions(tmp_path / "vino/predictions.csv")
    assert sorted(ort) == sorted(vino) == [f"{i}.png" for i in range(5)]
    for name, row in ort.items():
        assert float(vino[name]["image_score"]) == pytest.approx(float(row["image_score"]), rel=1e-4)
        assert float(vino[name]["anomalous_area"]) == pytest.approx(float(row["anomalous_area"]), abs=2e-3)


@pytest.mark.parametrize("flags, says", [
    (["--model", "m.pt", "--runtime", "openvino"], "--runtime openvino runs an ONNX model"),
    (["--model", "m.pt", "--runtime", "onnxruntime"], "--runtime onnxruntime runs an ONNX model"),
    (["--model", "m.onnx", "--runtime", "openvino", "--device", "cuda"], "openvino runs on the CPU: drop --device"),
])
def test_a_runtime_that_does_not_fit_the_model_is_refused_before_it_is_read(tmp_path, flags, says):
    # neither model file exists: the flags are refused before anything is read
    flags = [str(tmp_path / f) if f.startswith("m.") else f for f in flags]
    with pytest.raises(UserError, match=says) as error:
        predict.main([*flags, "--input", str(tmp_path), "--out", str(tmp_path / "out")])
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()


def test_missing_or_old_openvino_is_one_line_naming_what_to_install(exported, tmp_path, monkeypatch):
    argv = ["--model", str(exported / "model.onnx"), "--input", str(tmp_path), "--out", str(tmp_path / "o"),
            "--runtime", "openvino"]
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(UserError, match=r"needs OpenVINO: pip install -U 'openvino>=2024\.1'"):
        predict.main(argv)
    old = types.ModuleType("openvino")  # as 2023.0: no openvino.Core, no __version__
    monkeypatch.setitem(sys.modules, "openvino", old)
    with pytest.raises(UserError, match=r"needs OpenVINO >= 2024\.1 \(this is older\): pip install -U"):
        predict.main(argv)
    old.Core, old.__version__ = object, "2024.0.0-14509-34caeefd078-releases/2024/0"
    with pytest.raises(UserError, match=r"needs OpenVINO >= 2024\.1 \(this is 2024\.0\.0\)"):
        predict.main(argv)


def test_a_file_openvino_cannot_read_is_one_line_naming_it(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x0a not a protobuf")
    with pytest.raises(UserError, match=r"broken\.onnx is not an ONNX model OpenVINO \S+ can read") as error:
        OpenVinoScorer(path)
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="no model file"):
        OpenVinoScorer(tmp_path / "missing.onnx")


def test_the_runtime_benchmark_runs_every_runtime(tmp_path):
    """On tiny data, so that it cannot rot (its speeds are not asserted: it measures)."""
    out = tmp_path / "runtimes.json"
    assert benchmark_runtimes.main(["--models", "resnet18", "--image-size", "64", "--train", "12", "--repeats", "1",
                                    "--batch", "1", "2", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["runtime"], r["batch"]) for r in rows] == [(runtime, batch) for runtime in ("torch", "onnxruntime",
                                                          "openvino") for batch in (1, 2)]
    assert all(r["images_per_s"] > 0 and r["max_rel_diff_vs_torch"] < 1e-4 for r in rows)
