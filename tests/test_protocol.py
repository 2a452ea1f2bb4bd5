"""--protocol paper on MVTec AD: the decoded images and masks and the validation images equal a literal
reimplementation of the authors' data pipeline (torchvision transforms on PIL images, ImageFolder order),
on generated trees with non-square images and thin defects; train.py, predict.py and --resume keep it.
KolektorSDD and mSTC: tests/test_protocol_kolektor_stc.py."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import pil_loader

import predict
import train
from common import UserError
from datasets import mvtec
from datasets.base import ImageDataset
from datasets.options import DataOptions
from datasets.transforms import check_protocol
from models import SemiOrthogonal
from pipeline import predict_images
from pipeline.options import RunOptions
from pipeline.plan import plan_category, split_validation
from tests.helpers.protocol_data import KINDS, MEAN, STD, defect_mask, noise_image


# ---------------------------------------------------------------------------------------------- MVTec AD
@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mvtec")
    rng = np.random.default_rng(0)
    folder = root / "odd"
    names = [f"{i:03d}.png" for i in range(21)] + ["B.png", "a.png"]  # ImageFolder sorts names as text
    (folder / "train" / "good").mkdir(parents=True)
    for i, name in enumerate(names):
        size = (211, 300) if i % 2 else (300, 211)  # (H, W) portrait and landscape
        noise_image(rng, *size).save(folder / "train" / "good" / name)
    (folder / "test" / "good").mkdir(parents=True)
    noise_image(rng, 517, 411).save(folder / "test" / "good" / "000.png")
    for kind in KINDS:
        for i, (h, w) in enumerate([(517, 411), (411, 517)]):
            (folder / "test" / kind).mkdir(parents=True, exist_ok=True)
            (folder / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
            noise_image(rng, h, w).save(folder / "test" / kind / f"{i:03d}.png")
            Image.fromarray(defect_mask(rng, h, w, kind)).save(folder / "ground_truth" / kind / f"{i:03d}_mask.png")
    return root


def authors_mvtec(path: Path, mask: Path | None, first: int, side: int):
    """dataset.py MVTecAD: pil_loader, the cached Resize(320), then the test transform and Normalize."""
    pretrain = T.Compose([T.Resize(first)])
    transform = T.Compose([T.Compose([T.Resize(side), T.CenterCrop(side), T.ToTensor()]), T.Normalize(MEAN, STD)])
    x = transform(pretrain(pil_loader(path)))
    a = transform(pretrain(pil_loader(mask)))[0] > .5 if mask is not None else torch.zeros_like(x[0]) > .5
    return x, a


@pytest.mark.parametrize("first, side", [(320, 256), (40, 32)])  # the authors' sizes; 1.25 S, S for a small S
def test_mvtec_images_and_masks_equal_the_authors(mvtec_root, first, side):
    splits = mvtec.load(mvtec_root, "odd")
    data = ImageDataset(splits.test + splits.train[:2], (side, side), protocol="paper", dataset="mvtecad")
    assert data.pipeline == "paper-mvtecad"
    survived = 0
    for i, sample in enumerate(data.samples):
        item = data[i]
        x, a = authors_mvtec(sample.image, sample.mask, first, side)
        assert torch.equal(item["image"], x), sample.image
        assert torch.equal(item["mask"], a.to(torch.uint8)), sample.mask
        survived += bool(a.any())
    # the threshold at 152.9 / 255 after two bilinear resizes erases one-pixel defects, keeps blobs
    assert 2 <= survived < len(KINDS) * 2


def test_mvtec_validation_is_index_mod_10_equal_0_in_imagefolder_order(mvtec_root, tmp_path):
    folder = ImageFolder(str(mvtec_root / "odd" / "train"))
    ordered = [Path(p) for p, _ in folder.samples]
    options = RunOptions(dataset="mvtecad", report=tmp_path / "r.csv", backbone="resnet18", k=5)
    paper = plan_category(options, DataOptions(protocol="paper"), mvtec_root, "odd", tmp_path / "o")
    assert [s.image for s in paper.val] == [p for i, p in enumerate(ordered) if i % 10 == 0]
    assert [s.image for s in paper.fit] == [p for i, p in enumerate(ordered) if i % 10 != 0]
    assert paper.config.protocol == "paper" and len(paper.val) == 3
    standard = plan_category(options, DataOptions(), mvtec_root, "odd", tmp_path / "o")
    assert [s.image for s in standard.val] == [p for i, p in enumerate(ordered) if i % 10 == 9]
    assert standard.config.protocol == "standard"
    assert split_validation(list(range(21)), "paper")[1] == [0, 10, 20]


def test_paper_is_refused_where_the_authors_have_no_pipeline():
    with pytest.raises(UserError, match="--dataset synthetic has --protocol standard only"):
        check_protocol("synthetic", "paper", None)
    with pytest.raises(UserError, match="--image-size 64 96"):
        check_protocol("mvtecad", "paper", (64, 96))
    check_protocol("kolektor", "paper", (64, 96))


# ------------------------------------------------------------------------------- train.py, predict.py, --resume
FAST = ["--weights", "random", "--model", "resnet18", "--k", "8", "--image-size", "48", "--batch-size", "8",
        "--workers", "0"]


def test_train_stores_the_protocol_and_predict_decodes_with_it(mvtec_root, tmp_path):
    exp = tmp_path / "exp"
    assert train.main(["--dataroot", str(mvtec_root), "--category", "odd", "--experiment", str(exp), *FAST]) == 0
    folder = exp / "mvtecad" / "odd"
    assert json.loads((folder / "metrics.json").read_text())["protocol"] == "paper"
    assert [r["protocol"] for r in csv.DictReader(open(exp / "results.csv"))] == ["paper"]
    model = SemiOrthogonal.load(folder / "model.pt")
    assert model.config.protocol == "paper" and model.meta["dataset"] == "mvtecad"

    image = mvtec_root / "odd" / "test" / "blob" / "001.png"  # 517 x 411 (W x H): landscape
    (tmp_path / "in").mkdir()
    Image.open(image).save(tmp_path / "in" / "x.png")
    predict.main(["--model", str(folder / "model.pt"), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "o")])
    (row,) = csv.DictReader(open(tmp_path / "o" / "predictions.csv"))
    paper = ImageDataset([mvtec.Sample(image)], (48, 48), protocol="paper", dataset="mvtecad")[0]["image"]
    standard = ImageDataset([mvtec.Sample(image)], (48, 48))[0]["image"]
    score = float(model.predict(paper[None])[1][0])
    assert float(row["image_score"]) == pytest.approx(score, abs=1e-5)
    assert abs(float(model.predict(standard[None])[1][0]) - score) > 1e-3  # the other pipeline scores otherwise
    heat = np.asarray(Image.open(tmp_path / "o" / "x_heatmap.png"))
    assert heat.shape[:2] == (411, 517)
    mapped = predict_images.to_original_size(np.ones((48, 48), np.float32), model, (411, 517))
    assert not mapped[:, :53].any() and not mapped[:, 53 + 411:].any()  # only the centre square was seen
    assert (mapped[:, 54:53 + 410] > 0.99).all()

    # --resume keeps the file's pipeline; another one is refused (new images: the fitted ones would count twice)
    more = tmp_path / "more"
    shutil.copytree(mvtec_root, more)
    train.main(["--dataroot", str(more), "--category", "odd", "--experiment", str(tmp_path / "r"),
                "--resume", str(folder / "model.pt"), "--weights", "random", "--workers", "0"])
    assert json.loads((tmp_path / "r" / "mvtecad" / "odd" / "metrics.json").read_text())["protocol"] == "paper"
    with pytest.raises(UserError, match="fitted with --protocol paper, not standard"):
        train.main(["--dataroot", str(more), "--category", "odd", "--experiment", str(tmp_path / "s"),
                    "--resume", str(folder / "model.pt"), "--protocol", "standard", "--workers", "0"])
