"""tools/recalibrate.py: train.py's calibration again on other images, for merged and resumed models."""
import subprocess
import sys
from pathlib import Path

import merge_stats
import numpy as np
import pytest
import recalibrate
import torch

import train
from common import UserError
from datasets.base import ImageDataset
from datasets.mvtec import load
from models import SemiOrthogonal
from models.calibration import f1_threshold
from pipeline.plan import file_digests
from tests.helpers.data import write_category

REPO = Path(__file__).resolve().parents[1]
FAST = ["--weights", "random", "--model", "resnet18", "--k", "10", "--image-size", "64", "--batch-size", "8",
        "--workers", "0", "--protocol", "standard"]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One train.py fit of 36 images, validated on the other 4 (every 10th), and where its images are."""
    root = tmp_path_factory.mktemp("data")
    write_category(root, "toy", seed=7, n_train=40)
    exp = tmp_path_factory.mktemp("exp")
    train.main(["--dataroot", str(root), "--category", "toy", "--experiment", str(exp), "--alpha", "0.2", *FAST])
    train_images = load(root, "toy").train
    fit = [s for i, s in enumerate(train_images) if i % 10 != 9]
    val = root / "val"
    val.mkdir()
    for i, s in enumerate(train_images):
        if i % 10 == 9:  # the validation images, by link: the same files (path digests differ, content not)
            (val / s.image.name).symlink_to(s.image)
    return root, exp / "mvtecad" / "toy" / "model.pt", fit, val


def stored(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def test_recalibrating_a_fit_on_its_validation_images_gives_its_thresholds(single, tmp_path):
    _, model, _, val = single
    out = tmp_path / "again.pt"
    assert recalibrate.main([str(model), "--normal", str(val), "--alpha", "0.2", "--out", str(out)]) == 0
    before, after = stored(model), stored(out)
    assert after["thresholds"] == before["thresholds"]  # bit for bit: the same scores, the same order statistic
    assert torch.equal(after["calibration"]["scores"], before["calibration"]["scores"])
    assert after["calibration"]["source"] == "tools/recalibrate.py" and after["calibration"]["n"] == 4
    assert torch.equal(after["stats"]["sum_z"], before["stats"]["sum_z"])  # nothing refitted


def test_a_merged_model_recalibrated_on_the_single_fits_validation_images(single, tmp_path):
    """Shards of the fit images merged: recalibrated on the single fit's validation images, its thresholds
    are the single fit's, the score of the same validation image (to float32 rounding of the merged sums)."""
    _, model, fit, val = single
    config = SemiOrthogonal.load(model).config
    shards = []
    for name, part in (("a", fit[:20]), ("b", fit[20:])):
        shard = SemiOrthogonal(config, weights="random")
        data = ImageDataset(part, config.image_size)
        shard.fit(torch.stack([data[i]["image"] for i in range(len(data))]).split(8))
        shard.fitted, shard.meta = file_digests(part), {"dataset": "mvtecad", "category": "toy"}
        shard.save(tmp_path / f"{name}.pt")
        shards.append(str(tmp_path / f"{name}.pt"))
    merged = tmp_path / "merged.pt"
    assert merge_stats.main([*shards, "-o", str(merged)]) == 0
    assert stored(merged)["thresholds"] == {} and stored(merged)["calibration"] == {}
    out = tmp_path / "merged_calibrated.pt"
    assert recalibrate.main([str(merged), "--normal", str(val), "--alpha", "0.2", "--out", str(out)]) == 0
    single_fit, recalibrated = stored(model), stored(out)
    scores, merged_scores = single_fit["calibration"]["scores"].numpy(), recalibrated["calibration"]["scores"].numpy()
    np.testing.assert_allclose(merged_scores, scores, rtol=1e-5)
    for key in ("image", "pixel"):
        chosen = np.argmin(np.abs(scores - single_fit["thresholds"][key]))
        assert recalibrated["thresholds"][key] == merged_scores[chosen]  # the same image's score
        assert recalibrated["thresholds"][key] == pytest.approx(single_fit["thresholds"][key], rel=1e-5)


def test_refusals_before_decoding(single, tmp_path):
    root, model, fit, val = single
    with pytest.raises(UserError, match=r"is one of the images .* was fitted on \(36 of these 40\)"):
        recalibrate.main([str(model), "--normal", str(root / "toy" / "train" / "good"), "--out",
                          str(tmp_path / "x.pt")])
    with pytest.raises(UserError, match=r"--alpha 0.05 needs at least 19 normal images, --normal has 4; add images "
                                        r"or pass --alpha 0.2 or more"):
        recalibrate.main([str(model), "--normal", str(val), "--alpha", "0.05", "--out", str(tmp_path / "x.pt")])
    with pytest.raises(UserError, match="--rule f1 needs --defects and --masks"):
        recalibrate.main([str(model), "--normal", str(val), "--rule", "f1", "--out", str(tmp_path / "x.pt")])
    (tmp_path / "exists.pt").write_bytes(b"")
    with pytest.raises(UserError, match="exists; pass --overwrite"):
        recalibrate.main([str(model), "--normal", str(val), "--out", str(tmp_path / "exists.pt")])
    done = subprocess.run([sys.executable, "tools/recalibrate.py", str(model), "--normal", str(val), "--alpha", "0.01",
                           "--out", str(tmp_path / "x.pt")], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "needs at least 99" in done.stderr
    assert not (tmp_path / "x.pt").exists()


def test_f1_rule_with_defects_and_masks(single, tmp_path):
    root, model, _, val = single
    out = tmp_path / "f1.pt"
    assert recalibrate.main([str(model), "--normal", str(val), "--rule", "f1", "--defects",
                             str(root / "toy" / "test" / "blob"), "--masks",
                             str(root / "toy" / "ground_truth" / "blob"), "--out", str(out)]) == 0
    state = stored(out)
    calibration, thresholds = state["calibration"], state["thresholds"]
    assert calibration["rule"] == "f1" and calibration["alpha"] is None and calibration["n_defects"] == 4
    # the image threshold flags exactly what F1-optimal "score >= t*" flags on these scores
    loaded = SemiOrthogonal.load(out)
    samples = [s for s in load(root, "toy").test if s.label == 1]
    data = ImageDataset(samples, (64, 64))
    _, defect_scores = loaded.predict(torch.stack([data[i]["image"] for i in range(len(data))]))
    scores = np.r_[calibration["scores"].numpy(), defect_scores.numpy()]
    t, _ = f1_threshold(scores, np.r_[np.zeros(4), np.ones(len(samples))])
    assert np.array_equal(scores > thresholds["image"], scores >= t)


def test_a_resumed_model_recalibrated_on_the_single_fits_validation_images(single, tmp_path):
    """32 of the fit images, then train.py --resume with the other 4: the same sums as the single fit, bit for
    bit (the same batches and groups), so the same thresholds exactly once recalibrated."""
    _, model, fit, val = single
    config = SemiOrthogonal.load(model).config
    first = SemiOrthogonal(config, weights="random")
    data = ImageDataset(fit[:32], config.image_size)
    first.fit(torch.stack([data[i]["image"] for i in range(len(data))]).split(8))
    first.fitted, first.meta = file_digests(fit[:32]), {"dataset": "mvtecad", "category": "toy", "weights": "random"}
    first.save(tmp_path / "first.pt")
    write_category(tmp_path / "rest", "toy", seed=8, n_train=4)
    for i, sample in enumerate(fit[32:]):
        (tmp_path / "rest" / "toy" / "train" / "good" / f"{i:03d}.png").write_bytes(sample.image.read_bytes())
    train.main(["--dataroot", str(tmp_path / "rest"), "--category", "toy", "--experiment", str(tmp_path / "e"),
                "--resume", str(tmp_path / "first.pt"), "--weights", "random", "--workers", "0", "--batch-size", "8"])
    resumed = tmp_path / "e" / "mvtecad" / "toy" / "model.pt"
    assert stored(resumed)["thresholds"] == {}  # 4 new images: no validation images of its own
    out = tmp_path / "resumed_calibrated.pt"
    assert recalibrate.main([str(resumed), "--normal", str(val), "--alpha", "0.2", "--out", str(out)]) == 0
    assert stored(out)["thresholds"] == stored(model)["thresholds"]
    assert torch.equal(stored(out)["calibration"]["scores"], stored(model)["calibration"]["scores"])
