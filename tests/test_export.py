"""tools/export.py: the ONNX graph scores as the torch model; predict.py runs it with onnxruntime."""
import csv
import json
import logging
import signal
import socket
import subprocess
import sys
from pathlib import Path

import export as export_tool
import numpy as np
import onnx  # optional for users; requirements-dev.txt installs it for the tests
import onnxruntime
import pytest
import torch
from PIL import Image

import predict
from common import UserError, run_cli
from models import Config, SemiOrthogonal
from onnx_model import OnnxScorer

THRESHOLDS = {"image": 0.0, "pixel": 0.0, "val_pixel_median": 0.0, "n_val": 3, "val_fpr": 0.01}


def fitted_model(path: Path, thresholds: dict) -> SemiOrthogonal:
    """resnet18 random, k 10, 64 px, fitted on noise images; thresholds set from the scores of others."""
    generator = torch.Generator().manual_seed(0)
    model = SemiOrthogonal(Config(backbone="resnet18", k=10, image_size=(64, 64)), weights="random")
    model.fit(torch.randn(8, 3, 64, 64, generator=generator) for _ in range(3))
    model.finalize()
    if thresholds:
        maps, scores = model.predict(torch.randn(4, 3, 64, 64, generator=generator))
        model.thresholds = {**thresholds, "image": float(scores.median()), "pixel": float(maps.median()),
                            "val_pixel_median": float(maps.quantile(0.25))}
        model.calibration = {"rule": "conformal", "alpha": 0.2, "n": 4, "scores": scores.double(),
                             "maxima": maps.flatten(1).amax(1).double()}  # p-values: predict.py's, ONNX or not
    model.save(path)
    return model


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    model = fitted_model(folder / "model.pt", THRESHOLDS)
    # what a killed export left: its staging folder, named by host and (now dead) process, with the weights
    leftover = folder / f".model.onnx.staging-{socket.gethostname()}-{dead_pid()}-0123abcd"
    leftover.mkdir()
    (leftover / "model.onnx.data").write_bytes(b"weights" * 1000)
    records, ir_logger = Records(), logging.getLogger("onnx_ir._convenience")
    ir_logger.addHandler(records)
    try:
        assert export_tool.main(["--model", str(folder / "model.pt"), "--out", str(folder / "model.onnx")]) == 0
    finally:
        ir_logger.removeHandler(records)
    model.export_log = records.messages
    return model, folder


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_onnxruntime_maps_equal_the_torch_model_for_any_batch_size(exported):
    model, folder = exported
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 3):  # exported with a batch of 2: the batch dimension is dynamic
        images = torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(n))
        maps, scores = session.run(["maps", "scores"], {"images": images.numpy()})
        expected_maps, expected_scores = model.predict(images)
        assert maps.shape == (n, 64, 64) and scores.shape == (n,)
        assert relative_error(maps, expected_maps.numpy()) < 1e-4
        assert relative_error(scores, expected_scores.numpy()) < 1e-4
        np.testing.assert_allclose(scores, maps.reshape(n, -1).max(axis=1), rtol=1e-6)


def test_metadata_holds_the_calibrated_thresholds_and_config(exported):
    model, folder = exported
    props = {p.key: p.value for p in onnx.load(str(folder / "model.onnx")).metadata_props}
    assert json.loads(props["thresholds"]) == model.thresholds
    config = json.loads(props["config"])
    assert config["k"] == 10 and config["image_size"] == [64, 64] and config["backbone"] == "resnet18"
    assert json.loads(props["normalisation"])["mean"] == [0.485, 0.456, 0.406]


def test_model_without_thresholds_exports_with_external_data(tmp_path):
    model = fitted_model(tmp_path / "model.pt", {})
    out = tmp_path / "bare.onnx"
    export_tool.main(["--model", str(tmp_path / "model.pt"), "--out", str(out), "--external-data"])
    assert Path(f"{out}.data").stat().st_size > 1_000_000  # the backbone's weights are there, not in the graph
    assert out.stat().st_size < 1_000_000
    props = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    assert json.loads(props["thresholds"]) == {}
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    maps, _ = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        ["maps", "scores"], {"images": images.numpy()})
    assert relative_error(maps, model.predict(images)[0].numpy()) < 1e-4
    with pytest.raises(UserError, match="exists"):
        export_tool.main(["--model", str(tmp_path / "model.pt"), "--out", str(out)])


def read_predictions(path: Path) -> dict[str, dict]:
    with open(path) as f:
        return {Path(row["path"]).name: row for row in csv.DictReader(f)}


def test_predict_through_onnx_writes_the_same_predictions(exported, tmp_path):
    _, folder = exported
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(6):
        smooth = np.kron(rng.integers(0, 256, (5 + i, 7, 3)), np.ones((10, 10, 1))) if i % 2 else None
        pixels = smooth if smooth is not None else rng.integers(0, 256, (50 + 10 * i, 70, 3))
        Image.fromarray(pixels.astype(np.uint8)).save(inputs / f"{i}.png")
    predict.main(["--model", str(folder / "model.pt"), "--input", str(inputs), "--out", str(tmp_path / "first")])
    scores = sorted(float(r["image_score"]) for r in read_predictions(tmp_path / "first/predictions.csv").values())
    # thresholds between observed scores, so that both outcomes occur and a flip would show
    split = ["--image-threshold", str((scores[2] + scores[3]) / 2), "--threshold", str((scores[1] + scores[2]) / 2)]
    assert predict.main(["--model", str(folder / "model.pt"), "--input", str(inputs), "--out",
                         str(tmp_path / "torch"), *split]) == 0
    assert predict.main(["--model", str(folder / "model.onnx"), "--input", str(inputs), "--out",
                         str(tmp_path / "onnx"), "--batch-size", "4", *split]) == 0
    torch_rows = read_predictions(tmp_path / "torch/predictions.csv")
    onnx_rows = read_predictions(tmp_path / "onnx/predictions.csv")
    assert sorted(torch_rows) == sorted(onnx_rows) == [f"{i}.png" for i in range(6)]
    for name, row in torch_rows.items():
        other = onnx_rows[name]
        assert float(other["image_score"]) == pytest.approx(float(row["image_score"]), rel=1e-4)
        assert float(other["anomalous_area"]) == pytest.approx(float(row["anomalous_area"]), abs=2e-3)
        assert other["is_anomalous"] == row["is_anomalous"]
        assert other["p_value"] == row["p_value"] != ""  # the calibration scores travel in the metadata
    assert {row["is_anomalous"] for row in torch_rows.values()} == {"0", "1"}
    assert 0 < sum(float(row["anomalous_area"]) for row in torch_rows.values()) < 6
    heat_torch = np.asarray(Image.open(tmp_path / "torch/3_heatmap.png"), dtype=float)
    heat_onnx = np.asarray(Image.open(tmp_path / "onnx/3_heatmap.png"), dtype=float)
    assert heat_torch.shape == (80, 70, 3) and np.abs(heat_torch - heat_onnx).mean() < 0.5


def test_missing_onnxruntime_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(UserError, match="pip install onnxruntime"):
        predict.main(["--model", str(tmp_path / "model.onnx"), "--input", str(tmp_path), "--out", str(tmp_path / "o")])


def test_export_removes_a_killed_exports_staging_and_logs_no_attribute_noise(exported):
    model, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.pt"]
    assert not [m for m in model.export_log if "Attribute type is ambiguous" in m]  # 33 lines before


def test_an_interrupted_export_leaves_no_staging_and_the_earlier_file(exported, tmp_path, monkeypatch):
    _, folder = exported
    out = tmp_path / "model.onnx"
    out.write_bytes(b"earlier export")

    def killed(*args, **kwargs):
        raise SystemExit(128 + signal.SIGTERM)  # what run_cli's SIGTERM handler raises
    monkeypatch.setattr(torch.onnx, "export", killed)
    with pytest.raises(SystemExit):
        export_tool.main(["--model", str(folder / "model.pt"), "--out", str(out), "--overwrite"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"] and out.read_bytes() == b"earlier export"


def damaged_copy(folder: Path, tmp_path: Path, change) -> Path:
    graph = onnx.load(str(folder / "model.onnx"))
    props = {p.key: p.value for p in graph.metadata_props}
    change(props)
    del graph.metadata_props[:]
    for key, value in props.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(tmp_path / "damaged.onnx"))
    return tmp_path / "damaged.onnx"


def config_with(**values):
    return lambda props: props.update(config=json.dumps({**json.loads(props["config"]), **values}))


@pytest.mark.parametrize("change, says", [
    (lambda props: props.pop("config"), "no 'config' metadata"),
    (lambda props: props.update(thresholds="{pixel: 1"), "'thresholds' is not JSON"),
    (lambda props: props.update(thresholds=json.dumps({"pixel": "high"})), "'thresholds' are not numbers"),
    (config_with(colour_space="lab"), "newer release (unknown field colour_space)"),
    (config_with(image_size=[128, 128]), "graph takes 64 x 64 images, its metadata says 128 x 128"),
])
def test_damaged_onnx_metadata_is_one_line_naming_the_file(exported, tmp_path, change, says):
    _, folder = exported
    path = damaged_copy(folder, tmp_path, change)
    with pytest.raises(UserError, match="damaged.onnx") as error:
        OnnxScorer(path)
    assert says in str(error.value) and "\n" not in str(error.value)


def test_export_to_a_full_or_read_only_disk_is_one_line_and_leaves_nothing(exported, tmp_path, capsys):
    _, folder = exported
    full, read_only = tmp_path / "full", tmp_path / "ro"
    full.mkdir()
    read_only.mkdir()
    mounted = [subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                              capture_output=True).returncode == 0
               for options, target in (("size=3m", full), ("ro,size=1m", read_only))]
    try:
        if not all(mounted):
            pytest.skip("cannot mount a tmpfs here (needs root): full and read-only disks untested")
        (full / "model.onnx").write_bytes(b"earlier export")
        handler = signal.getsignal(signal.SIGTERM)
        for out, reason in ((full / "model.onnx", "no space left"), (read_only / "model.onnx", "read-only")):
            with pytest.raises(SystemExit) as code:
                run_cli(lambda out=out: export_tool.main(["--model", str(folder / "model.pt"), "--out", str(out),
                                                          "--overwrite"]))
            signal.signal(signal.SIGTERM, handler)
            err = capsys.readouterr().err
            assert code.value.code == 2 and err.count("\n") == 1 and str(out.parent) in err and reason in err, err
        assert sorted(p.name for p in full.iterdir()) == ["model.onnx"]
        assert (full / "model.onnx").read_bytes() == b"earlier export" and not list(read_only.iterdir())
    finally:
        for target, done in zip((full, read_only), mounted):
            if done:
                subprocess.run(["umount", "-l", str(target)])


def test_a_model_fitted_in_blocks_is_refused_in_one_line(tmp_path, monkeypatch):
    from tests.helpers.data import write_category
    from tests.test_blocks import FAST, forced_blocks

    write_category(tmp_path / "data", "toy", seed=0)
    forced_blocks(monkeypatch, 4)
    import train

    assert train.main(["--dataroot", str(tmp_path / "data"), "--category", "toy", "--experiment",
                       str(tmp_path / "e"), *FAST]) == 0
    model = tmp_path / "e" / "mvtecad" / "toy" / "model.pt"
    with pytest.raises(UserError, match=r"model.pt was fitted in blocks: its graph would hold L\^-1 of 256 "
                                        r"positions .*; score it with predict.py, or fit shared tiles"):
        export_tool.main(["--model", str(model), "--out", str(tmp_path / "m.onnx")])
    assert not (tmp_path / "m.onnx").exists()


def test_an_export_leaves_the_processs_torch_scoring_intact(tmp_path):
    from models import postprocess

    model = fitted_model(tmp_path / "model.pt", {})
    batch = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    expected = model.predict(batch)[0]
    for cached in (postprocess.axis_matrix, postprocess.upsampling_matrix, postprocess.blur_matrix):
        cached.cache_clear()  # the export is then the first to ask for the smoothing matrices
    export_tool.main(["--model", str(tmp_path / "model.pt"), "--out", str(tmp_path / "model.onnx")])
    maps = model.predict(batch)[0]  # a fake tensor, once, when the exporter's tracing filled the cache
    assert type(maps) is torch.Tensor and torch.equal(maps, expected)
