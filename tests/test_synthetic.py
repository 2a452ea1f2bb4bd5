"""The synthetic MVTec-layout generator: determinism, layout, exact masks, crash safety, caching, CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from common import UserError
from datasets import synthetic
from datasets.options import DataOptions
from datasets.synthetic import loader

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(image_size=64, n_train=3, n_test_good=2)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _small(root: Path, category: str, **params) -> Path:
    merged = {**SMALL, "n_test_defect": len(synthetic.CATEGORIES[category]["defects"]), **params}
    return synthetic.generate_category(root, category, **merged)


@pytest.mark.parametrize("category", ["weave", "bolt"])
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, category):
    a = _files(_small(tmp_path / "a", category, seed=3))
    b = _files(_small(tmp_path / "b", category, seed=3))
    c = _files(_small(tmp_path / "c", category, seed=4))
    assert a == b
    assert a.keys() == c.keys()
    images = [k for k in a if k.endswith(".png") and "ground_truth" not in k]
    assert all(a[k] != c[k] for k in images)


def test_normal_images_differ_from_each_other():
    images = [synthetic.render_sample("washer", split="train", index=i, image_size=64)[0] for i in range(3)]
    assert not np.array_equal(images[0], images[1])
    assert not np.array_equal(images[1], images[2])


@pytest.mark.parametrize("category", list(synthetic.CATEGORIES))
def test_layout_counts_and_masks(tmp_path, category):
    defects = synthetic.CATEGORIES[category]["defects"]
    n_defect = 2 * len(defects) + 1  # the first type gets the remainder
    folder = _small(tmp_path, category, n_test_defect=n_defect)
    assert folder == tmp_path / category
    assert len(list((folder / "train" / "good").glob("*.png"))) == 3
    assert sorted(p.name for p in (folder / "test" / "good").iterdir()) == ["000.png", "001.png"]
    assert sorted(p.name for p in (folder / "test").iterdir()) == sorted(["good", *defects])
    assert sorted(p.name for p in (folder / "ground_truth").iterdir()) == sorted(defects)
    assert not (folder / "ground_truth" / "good").exists()
    total = 0
    for defect in defects:
        images = sorted((folder / "test" / defect).glob("*.png"))
        masks = sorted((folder / "ground_truth" / defect).glob("*.png"))
        assert [m.name for m in masks] == [f"{p.stem}_mask.png" for p in images]
        total += len(images)
        for image, mask in zip(images, masks):
            with Image.open(image) as im, Image.open(mask) as mk:
                assert mk.mode == "L" and mk.size == im.size == (64, 64)
                values = np.asarray(mk)
            assert set(np.unique(values)) <= {0, 255} and (values == 255).any()
    assert total == n_defect
    assert len(list((folder / "test" / defects[0]).glob("*.png"))) == 3


@pytest.mark.parametrize("category", list(synthetic.CATEGORIES))
def test_mask_covers_what_was_drawn(category):
    kernel = np.ones((7, 7), np.uint8)  # a 3-pixel margin for the soft rim (alpha <= 0.5)
    for defect in synthetic.CATEGORIES[category]["defects"]:
        for index in range(3):
            kw = dict(split="defect", index=index, defect=defect, image_size=128, seed=1)
            image, mask = synthetic.render_sample(category, **kw)
            clean, _ = synthetic.render_sample(category, draw_defect=False, **kw)
            diff = np.abs(image.astype(np.int16) - clean.astype(np.int16))
            diff = diff.sum(axis=2) if diff.ndim == 3 else diff
            inside, near = mask > 0, cv2.dilate(mask, kernel) > 0
            assert diff.sum() > 0, (defect, index)
            assert diff[near].sum() >= 0.97 * diff.sum(), (defect, index)  # nothing drawn far from the mask
            assert diff[inside].sum() >= 0.5 * diff.sum(), (defect, index)
            assert diff[inside].mean() >= 3, (defect, index)  # visible: a few grey levels at least


def test_low_contrast_share_exists():
    changes = []
    for index in range(30):
        kw = dict(split="defect", index=index, defect="stain", image_size=64)
        image, mask = synthetic.render_sample("marble", **kw)
        clean, _ = synthetic.render_sample("marble", draw_defect=False, **kw)
        changes.append(np.abs(image.astype(float) - clean)[mask > 0].mean())
    assert min(changes) < 0.5 * max(changes)


def test_grayscale_categories_and_overrides(tmp_path):
    for category, info in synthetic.CATEGORIES.items():
        image, _ = synthetic.render_sample(category, split="train", index=0, image_size=64)
        assert image.ndim == (2 if info["grayscale"] else 3)
    assert any(info["grayscale"] for info in synthetic.CATEGORIES.values())
    mesh = _small(tmp_path / "g", "mesh")
    weave = _small(tmp_path / "g", "weave", grayscale=True)
    colour = _small(tmp_path / "c", "mesh", grayscale=False)
    with Image.open(mesh / "test" / "good" / "000.png") as a, Image.open(weave / "train" / "good" / "000.png") as b, \
            Image.open(colour / "train" / "good" / "000.png") as c:
        assert (a.mode, b.mode, c.mode) == ("L", "L", "RGB")


def test_crash_mid_generation_leaves_nothing(tmp_path, monkeypatch):
    original, calls = loader._write_job, []

    def failing(folder, params, job):
        calls.append(job)
        if len(calls) == 4:
            raise RuntimeError("disk on fire")
        original(folder, params, job)

    monkeypatch.setattr(loader, "_write_job", failing)  # raised in a worker thread where there are several
    with pytest.raises(RuntimeError, match="disk on fire"):
        synthetic.generate_category(tmp_path, "weave", **SMALL, n_test_defect=4)
    assert list(tmp_path.iterdir()) == []  # neither the category nor a temporary folder


def test_crash_while_regenerating_keeps_the_old_category(tmp_path, monkeypatch):
    folder = _small(tmp_path, "caplet")
    before = _files(folder)
    monkeypatch.setattr(loader, "_write_job", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        _small(tmp_path, "caplet", seed=9)
    assert _files(folder) == before
    assert [p.name for p in tmp_path.iterdir()] == ["caplet"]


def test_ensure_reuses_and_rejects_other_parameters(tmp_path, monkeypatch):
    params = dict(SMALL, n_test_defect=4, seed=2)
    folder = synthetic.ensure_category(tmp_path, "plank", **params)
    assert (folder / "synthetic.json").is_file()
    before = _files(folder)

    def no_build(*a, **k):
        raise AssertionError("should have reused the category")

    monkeypatch.setattr(loader, "_build_and_publish", no_build)
    assert synthetic.ensure_category(tmp_path, "plank", **params) == folder
    assert _files(folder) == before
    with pytest.raises(UserError, match="delete the folder or use another root") as info:
        synthetic.ensure_category(tmp_path, "plank", **{**params, "seed": 5})
    assert "\n" not in str(info.value) and "seed=2" in str(info.value)


def test_foreign_folders_are_never_replaced(tmp_path):
    (tmp_path / "weave" / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="another root"):
        synthetic.ensure_category(tmp_path, "weave", **SMALL)
    with pytest.raises(UserError, match="refusing"):
        synthetic.generate_category(tmp_path, "weave", **SMALL)
    assert list((tmp_path / "weave").rglob("*")) == [tmp_path / "weave" / "train"]


def test_bad_category_and_parameters(tmp_path):
    with pytest.raises(UserError, match="known: weave"):
        synthetic.generate_category(tmp_path, "carpet")
    with pytest.raises(UserError, match="known:"):
        synthetic.load(tmp_path, "carpet", DataOptions())
    with pytest.raises(UserError, match="image_size"):
        synthetic.generate_category(tmp_path, "weave", image_size=8)
    with pytest.raises(UserError, match="n_train"):
        synthetic.ensure_category(tmp_path, "weave", n_train=0)
    assert list(tmp_path.iterdir()) == []


def test_default_root_and_categories(monkeypatch, tmp_path):
    monkeypatch.delenv("SEMIORTHO_SYNTHETIC", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert synthetic.default_root() == tmp_path / "cache" / "semiortho" / "synthetic"
    monkeypatch.setenv("SEMIORTHO_SYNTHETIC", str(tmp_path / "elsewhere"))
    assert synthetic.default_root() == tmp_path / "elsewhere"
    assert synthetic.categories(None, DataOptions()) == list(synthetic.CATEGORIES)
    assert len([c for c, i in synthetic.CATEGORIES.items() if i["kind"] == "texture"]) >= 3
    assert len([c for c, i in synthetic.CATEGORIES.items() if i["kind"] == "object"]) >= 2


def test_load_goes_through_the_mvtec_loader(tmp_path):
    pytest.importorskip("datasets.mvtec")
    _small(tmp_path, "washer", n_test_defect=5)
    splits = synthetic.load(tmp_path, "washer", DataOptions())
    assert len(splits.train) == 3
    assert len(splits.test) == 7
    assert sum(s.label for s in splits.test) == 5
    assert all((s.mask is None) == (s.label == 0) for s in splits.test)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tools/make_synthetic.py", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_cli_help_unknown_category_and_a_run(tmp_path):
    help_run = _cli("-h")
    assert help_run.returncode == 0 and "--n-test-defect" in help_run.stdout
    bad = _cli("--root", str(tmp_path), "--category", "weave,carpet")
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1 and "carpet" in bad.stderr
    assert _cli("--root", str(tmp_path), "--image-size", "x").returncode == 2
    ok = _cli("--root", str(tmp_path), "--category", "mesh", "--image-size", "48", "--n-train", "2",
              "--n-test-good", "1", "--n-test-defect", "4", "--color")
    assert ok.returncode == 0, ok.stderr
    assert "wrote" in ok.stdout and (tmp_path / "mesh" / "synthetic.json").is_file()
    with Image.open(tmp_path / "mesh" / "train" / "good" / "000.png") as im:
        assert im.mode == "RGB" and im.size == (48, 48)
