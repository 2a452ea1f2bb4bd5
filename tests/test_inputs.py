"""Hostile inputs: 16-bit and decompression-bomb images, mismatched masks, model files and merges.

The hand-made PNGs (48-bit, bomb headers) come from tests/helpers/data.py.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common import UserError
from datasets.base import ImageDataset, Sample, read_image, read_mask
from models import Config, SemiOrthogonal
from models.semi_ortho import read_model_file
from tests.helpers.data import write_bomb, write_png16_rgb

REPO = Path(__file__).resolve().parents[1]


def pixels(path: Path) -> torch.Tensor:
    return ImageDataset([Sample(path)], (64, 64))[0]["image"]


def test_16bit_gray_png_decodes_like_its_8bit_version(tmp_path):
    eight = np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8)
    Image.fromarray(eight).save(tmp_path / "8.png")
    Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "16.png")  # 0..255 -> 0..65535
    assert Image.open(tmp_path / "16.png").mode.startswith("I")
    torch.testing.assert_close(pixels(tmp_path / "16.png"), pixels(tmp_path / "8.png"), rtol=0, atol=1e-6)
    # any 16-bit value lands within one 8-bit level of its true brightness
    sixteen = np.random.default_rng(1).integers(0, 65536, (64, 64)).astype(np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "any.png")
    decoded = np.asarray(read_image(tmp_path / "any.png")).astype(np.float64) / 255
    assert decoded.shape == (64, 64, 3)
    assert np.abs(decoded - sixteen[..., None] / 65535).max() <= 1 / 255


def test_16bit_rgb_png_decodes_like_its_8bit_version(tmp_path):
    eight = np.random.default_rng(2).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    Image.fromarray(eight).save(tmp_path / "8.png")
    write_png16_rgb(eight.astype(np.uint16) * 257, tmp_path / "16.png")
    torch.testing.assert_close(pixels(tmp_path / "16.png"), pixels(tmp_path / "8.png"), rtol=0, atol=1e-6)


def test_16bit_mask_keeps_faint_defect_pixels(tmp_path):
    mask = np.zeros((64, 64), np.uint16)
    mask[10:20, 10:20] = 1  # a label image: any non-zero value marks the defect
    mask[30:40, 30:40] = 65535
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert (np.asarray(read_mask(tmp_path / "mask.png")) > 0).sum() == 200


def test_decompression_bomb_is_one_line_user_error(tmp_path):
    write_bomb(tmp_path / "bomb.png")
    with pytest.raises(UserError, match=r"bomb\.png.*3600000000 pixels") as error:
        read_image(tmp_path / "bomb.png")
    assert "\n" not in str(error.value) and "downscale" in str(error.value)


def write_tree(root: Path) -> Path:
    """A tiny MVTec-layout category: noise textures, one square defect; 10 training images so one validates."""
    rng = np.random.default_rng(0)
    folder = root / "toy"
    for split, count in (("train/good", 10), ("test/good", 1), ("test/blob", 1)):
        (folder / split).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)).save(folder / split / f"{i:03d}.png")
    (folder / "ground_truth" / "blob").mkdir(parents=True)
    mask = np.zeros((64, 64), np.uint8)
    mask[20:30, 20:30] = 255
    Image.fromarray(mask).save(folder / "ground_truth" / "blob" / "000_mask.png")
    return folder


def test_train_with_a_bomb_test_image_prints_one_line(tmp_path):
    folder = write_tree(tmp_path / "data")
    write_bomb(folder / "test" / "good" / "001.png")
    result = subprocess.run([sys.executable, "train.py", "--dataroot", str(tmp_path / "data"), "--category", "toy",
                             "--experiment", str(tmp_path / "exp"), "--weights", "random", "--model", "resnet18",
                             "--k", "5", "--image-size", "64", "--workers", "0"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "001.png" in result.stderr, result.stderr


def test_mask_of_another_size_is_refused(tmp_path):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "image.png")
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(tmp_path / "mask.png")
    data = ImageDataset([Sample(tmp_path / "image.png", tmp_path / "mask.png", 1, "x")], (64, 64))
    with pytest.raises(UserError, match=r"mask\.png.*48 x 32.*image\.png.*64 x 64") as error:
        data[0]
    assert "\n" not in str(error.value)


# ---- model files -------------------------------------------------------------------------------

CONFIG = Config(backbone="resnet18", k=5, image_size=(64, 64))


def fitted_model(path: Path, config: Config = CONFIG, seed: int = 0, meta: dict | None = None) -> Path:
    model = SemiOrthogonal(config, weights="random")
    if meta is not None:
        model.meta = meta
    model.fit([torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))])
    model.save(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    toy = {"dataset": "mvtecad", "category": "toy"}
    paths = {
        "a": fitted_model(folder / "a.pt", seed=0, meta=toy),
        "b": fitted_model(folder / "b.pt", seed=1, meta=toy),
        "other": fitted_model(folder / "other.pt", seed=2, meta={"dataset": "mvtecad", "category": "grid"}),
        "bf16": fitted_model(folder / "bf16.pt", Config(**{**CONFIG.__dict__, "backbone_dtype": "bfloat16"}), 3,
                             meta=toy),
    }
    paths["copy"] = folder / "copy.pt"
    shutil.copy(paths["a"], paths["copy"])
    old = torch.load(paths["b"], weights_only=True)  # a file written before models carried meta
    del old["meta"]
    torch.save(old, folder / "old.pt")
    paths["old"] = folder / "old.pt"
    return paths


def test_model_meta_round_trips_and_older_files_load(models):
    assert SemiOrthogonal.load(models["other"]).meta == {"dataset": "mvtecad", "category": "grid"}
    assert SemiOrthogonal.load(models["old"]).meta == {}


@pytest.mark.parametrize("key", ["W", "stats", "config", "backbone"])
def test_model_file_missing_a_key_is_one_line_user_error(models, tmp_path, key):
    state = torch.load(models["a"], weights_only=True)
    del state[key]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(UserError, match=rf"broken\.pt.*'{key}'") as error:
        read_model_file(tmp_path / "broken.pt")
    assert "\n" not in str(error.value)


def merge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tools/merge_stats.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_merge_of_two_fits_and_of_an_older_file_works(models, tmp_path):
    result = merge(str(models["a"]), str(models["old"]), "-o", str(tmp_path / "m.pt"))
    assert result.returncode == 0, result.stderr
    assert int(torch.load(tmp_path / "m.pt", weights_only=True)["stats"]["n"]) == 4


@pytest.mark.parametrize("first, second, names", [
    ("a", "a", "a.pt"),  # the same path twice
    ("a", "copy", "copy.pt"),  # a copy: identical sums
    ("a", "other", "category"),
    ("a", "bf16", "backbone_dtype"),
])
def test_merge_refuses_what_would_not_be_one_fit(models, tmp_path, first, second, names):
    args = [str(models[first]), str(models[second])]
    if first == second:
        args[1] = str(models[first].parent / ".." / models[first].parent.name / models[first].name)  # same, spelt apart
    result = merge(*args, "-o", str(tmp_path / "m.pt"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and names in result.stderr, result.stderr
    assert not (tmp_path / "m.pt").exists()


def test_merge_out_naming_a_folder_is_one_line(models, tmp_path):
    result = merge(str(models["a"]), str(models["b"]), "-o", str(tmp_path), "--overwrite")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and str(tmp_path) in result.stderr, result.stderr
