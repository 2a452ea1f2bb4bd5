"""api.py: the README's example runs, scores equal predict.py's, its model file is train.py's."""
import csv
import functools
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import api
import predict
import train
from common import UserError
from datasets.mvtec import load as load_mvtec
from models import SemiOrthogonal
from pipeline import predict_score
from pipeline.plan import split_validation
from tests.helpers.data import write_category
from tests.helpers.layouts import defective, save_image, surface

REPO = Path(__file__).resolve().parents[1]
# small and random: seconds on a CPU, no download (the README example's defaults are WRN-50-2, ImageNet, 256)
FAST = {"backbone": "resnet18", "weights": "random", "image_size": 64, "k": 10}


def readme_example() -> str:
    """The ```python block of README.md's "## Python API" section."""
    readme = (REPO / "README.md").read_text()
    section = re.search(r"^## Python API\n(.*?)(?=^## )", readme, re.MULTILINE | re.DOTALL)
    assert section, "README.md has no '## Python API' section"
    block = re.search(r"^```python\n(.*?)^```", section[1], re.MULTILINE | re.DOTALL)
    assert block, "the '## Python API' section has no ```python block"
    return block[1]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A model fitted by api.fit on 20 normal images (2 held out), saved; and a defective image 90 x 50."""
    folder = tmp_path_factory.mktemp("api")
    rng = np.random.default_rng(0)
    paths = [save_image(surface(rng), folder / "good" / f"{i:02d}.png") for i in range(20)]
    image, _ = defective(rng, 50, 90)
    new = save_image(image, folder / "wide.png")
    model = api.fit(paths[2:], val_images=paths[:2], val_fpr=0.25, **FAST)
    model.save(folder / "model.pt")
    return folder, model, new


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(1)
    for i in range(14):
        save_image(surface(rng), tmp_path / "good_images" / f"{i:02d}.png")
    save_image(defective(rng)[0], tmp_path / "new_image.png")
    monkeypatch.chdir(tmp_path)
    # the example's own code, run as written; only fit's defaults are made small
    monkeypatch.setattr(api, "fit", functools.partial(api.fit, **FAST))
    exec(compile(readme_example(), "README.md", "exec"), {"__name__": "readme_example"})
    printed = capsys.readouterr().out.split()
    assert len(printed) == 5 and float(printed[0]) > 0 and printed[1] in ("True", "False")
    assert api.load("model.pt").thresholds["n_val"] == 10


def test_predict_equals_predict_py(fitted, tmp_path, monkeypatch):
    folder, model, new = fitted
    loaded = api.load(folder / "model.pt")
    result = loaded.predict(new)
    assert result.score_map.dtype == np.float32 and result.score_map.shape == (50, 90)
    assert np.array_equal(model.predict(new).score_map, result.score_map)  # in memory as from its file
    assert np.array_equal(loaded.predict(Image.open(new)).score_map, result.score_map)  # a PIL image as its file
    maps, scores = [], []
    real_map, real_predict = predict_score.to_original_size, SemiOrthogonal.predict

    def record_map(*args):
        maps.append(real_map(*args))
        return maps[-1]

    def record_scores(self, images):
        out = real_predict(self, images)
        scores.append(out[1])
        return out

    monkeypatch.setattr(predict_score, "to_original_size", record_map)
    monkeypatch.setattr(SemiOrthogonal, "predict", record_scores)
    out = tmp_path / "out"
    assert predict.main(["--model", str(folder / "model.pt"), "--input", str(new), "--out", str(out),
                         "--device", "cpu"]) == 0
    assert len(maps) == 1 and np.abs(maps[0] - result.score_map).max() <= 1e-6
    assert abs(float(scores[0][0]) - result.image_score) <= 1e-6
    row = next(csv.DictReader(open(out / "predictions.csv")))
    assert abs(float(row["image_score"]) - result.image_score) <= 1e-6
    assert int(row["is_anomalous"]) == result.is_anomalous
    assert np.array_equal(np.asarray(Image.open(out / "wide_mask.png")) > 0, result.mask)


def test_a_saved_model_runs_in_predict_py(fitted, tmp_path):
    folder, _, new = fitted
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "predict.py", "--model", str(folder / "model.pt"), "--input", str(new),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [Path(r["path"]).name for r in csv.DictReader(open(out / "predictions.csv"))] == ["wide.png"]


def test_fit_equals_train_py(tmp_path):
    """The same images, split and settings give train.py's sums and thresholds, bit for bit."""
    write_category(tmp_path / "data", "toy", seed=0, n_train=20)
    train.main(["--dataroot", str(tmp_path / "data"), "--category", "toy", "--experiment", str(tmp_path / "exp"),
                "--weights", "random", "--model", "resnet18", "--k", "10", "--image-size", "64",
                "--batch-size", "8", "--workers", "0", "--protocol", "standard"])
    fit, val = split_validation(load_mvtec(tmp_path / "data", "toy").train)
    model = api.fit([s.image for s in fit], val_images=[s.image for s in val], **FAST)
    theirs = torch.load(tmp_path / "exp" / "mvtecad" / "toy" / "model.pt", weights_only=True)
    assert model.thresholds == theirs["thresholds"]
    for key, value in model.core.stats.state().items():
        assert torch.equal(value, theirs["stats"][key]), key
    assert torch.equal(model.core.fitted, theirs["fitted"])


def test_uncalibrated_model_has_scores_but_no_decisions(fitted):
    folder, _, new = fitted
    result = api.fit(sorted((folder / "good").glob("*.png"))[:4], **FAST).predict(new)
    assert result.image_score > 0 and result.is_anomalous is None and result.mask is None


def test_bad_input_is_one_line_naming_it(fitted, tmp_path):
    folder, model, _ = fitted
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    cases = [(lambda: model.predict(tmp_path / "missing.png"), "missing.png"),
             (lambda: model.predict(corrupt), "corrupt.png"),
             (lambda: api.fit([tmp_path / "missing.png"], **FAST), "missing.png"),
             (lambda: api.fit(str(folder / "good"), **FAST), "good"),
             (lambda: api.fit([], **FAST), "train_images"),
             (lambda: api.fit([corrupt], **FAST), "corrupt.png"),
             (lambda: api.load(tmp_path / "missing.pt"), "missing.pt"),
             (lambda: api.fit([corrupt], **{**FAST, "k": 10**6}), "k 1000000"),
             (lambda: api.fit([corrupt], **{**FAST, "val_fpr": float("nan")}), "val_fpr")]
    for call, named in cases:
        with pytest.raises(UserError) as caught:
            call()
        assert named in str(caught.value) and "\n" not in str(caught.value)
