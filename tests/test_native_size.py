"""--image-size native: each category at its own training images' size, read from a header before decoding."""
import json

import numpy as np
import pytest
from PIL import Image

import train
from common import UserError
from datasets.readers import image_size_of
from tests.helpers.layouts import write_mvtecad2

FAST = ["--weights", "random", "--model", "resnet18", "--k", "10", "--workers", "0", "--quiet"]


def test_each_category_runs_at_its_own_size(tmp_path):
    root = tmp_path / "ad2"
    write_mvtecad2(root, categories=("can", "vial"))
    for path in (root / "can").rglob("*.png"):  # can: 96 wide, 48 high; vial keeps the generated size
        Image.open(path).resize((96, 48)).save(path)
    vial = image_size_of(next((root / "vial" / "train" / "good").iterdir()))
    exp = tmp_path / "exp"
    assert train.main(["--dataset", "mvtecad2", "--dataroot", str(root), "--image-size", "native",
                       "--experiment", str(exp), *FAST]) == 0
    for category, size in (("can", [48, 96]), ("vial", list(vial))):
        folder = exp / "mvtecad2" / category
        assert json.loads((folder / "metrics.json").read_text())["image_size"] == size
        assert np.load(folder / "scores.npz")["maps"].shape[1:] == tuple(size)


def test_the_size_honours_exif_orientation(tmp_path):
    image = Image.new("RGB", (40, 20))
    exif = image.getexif()
    exif[0x0112] = 6  # stored turned: shown 20 wide, 40 high
    image.save(tmp_path / "turned.jpg", exif=exif)
    assert image_size_of(tmp_path / "turned.jpg") == (40, 20)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="broken.png"):
        image_size_of(tmp_path / "broken.png")


@pytest.mark.parametrize("flags, message", [
    (["--image-size", "big"], "--image-size big: pass one size S, two sizes H W, or native"),
    (["--image-size", "native"], "--image-size native: --protocol paper resizes"),  # MVTec AD's default protocol
])
def test_bad_sizes_are_one_line(flags, message, tmp_path):
    with pytest.raises(UserError, match=message):
        train.main(["--dataset", "mvtecad", "--dataroot", str(tmp_path), "--category", "washer", *flags, *FAST])
