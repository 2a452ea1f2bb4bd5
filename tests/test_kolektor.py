"""KolektorSDD / KolektorSDD2 loaders on generated trees in the distributed layout."""
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common import UserError
from datasets import kolektor, kolektor2
from datasets.base import ImageDataset
from datasets.kolektor import KolektorOptions
from tests.helpers.data import write_kolektor, write_kolektor2

N_FOLDERS, PARTS = 6, 4


def make_args(**kw) -> KolektorOptions:
    return KolektorOptions(**{"dataset": "kolektor", **kw})


@pytest.fixture(scope="module")
def ksdd(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "KolektorSDD"
    write_kolektor(root, n_folders=N_FOLDERS, parts=PARTS, seed=3)
    return root


@pytest.fixture(scope="module")
def ksdd2(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data2") / "KolektorSDD2"
    write_kolektor2(root, n_train=16, n_test=6, seed=4)
    return root


def folders(samples):
    return {s.image.parent.name for s in samples}


def test_generated_layout_is_the_distributed_one(ksdd):
    assert sorted(p.name for p in ksdd.iterdir()) == [f"kos{i:02d}" for i in range(1, N_FOLDERS + 1)]
    assert sorted(p.name for p in (ksdd / "kos01").iterdir()) == sorted(
        [f"Part{i}.jpg" for i in range(PARTS)] + [f"Part{i}_label.bmp" for i in range(PARTS)])
    with Image.open(ksdd / "kos01" / "Part0.jpg") as img:
        assert img.mode == "L"
    data = pickle.loads((ksdd.parent / "KolektorSDD-training-splits" / "split.pyb").read_bytes())
    assert len(data) == 3 and len(data[0]) == 3 and len(data[1]) == 3


def test_categories_and_fold_flag(ksdd):
    assert kolektor.categories(ksdd, make_args()) == ["fold0", "fold1", "fold2"]
    assert kolektor.categories(ksdd, make_args(fold=2)) == ["fold2"]
    with pytest.raises(UserError, match="outside 0..2"):
        kolektor.categories(ksdd, make_args(fold=3))
    for bad in ("fold3", "fold-1", "nope"):
        with pytest.raises(UserError, match="outside 0..2"):
            kolektor.load(ksdd, bad, make_args())


def test_folds_counts_negative_only_training_and_disjointness(ksdd):
    tested = []
    for fold in range(3):
        splits = kolektor.load(ksdd, f"fold{fold}", make_args())
        train_folders, test_folders = folders(splits.train), folders(splits.test)
        assert not train_folders & test_folders  # split by physical item
        assert len(test_folders) == N_FOLDERS // 3 and len(train_folders) == N_FOLDERS - N_FOLDERS // 3
        # every folder has exactly one defective part: it is left out of training, kept in test
        assert len(splits.train) == len(train_folders) * (PARTS - 1)
        assert len(splits.test) == len(test_folders) * PARTS
        assert all(s.label == 0 and s.mask is None for s in splits.train)
        defective = [s for s in splits.test if s.label == 1]
        assert len(defective) == len(test_folders)
        for s in defective:
            assert np.asarray(Image.open(s.mask)).any() and s.mask.name == f"{s.image.stem}_label.bmp"
        for s in splits.test:
            if s.label == 0:
                assert not np.asarray(Image.open(s.image.with_name(f"{s.image.stem}_label.bmp"))).any()
        assert splits.image_size == (704, 256) and splits.notes == []
        tested += sorted(test_folders)
    assert sorted(tested) == sorted(p.name for p in ksdd.iterdir())  # each folder tested in exactly one fold


def test_non_square_scales_reach_the_tensors(ksdd):
    assert kolektor.load(ksdd, "fold0", make_args(scale="full")).image_size == (1408, 512)
    splits = kolektor.load(ksdd, "fold1", make_args())
    item = ImageDataset([s for s in splits.test if s.label][:1], splits.image_size)[0]
    assert item["image"].shape == (3, 704, 256) and item["mask"].shape == (704, 256) and item["mask"].any()
    with pytest.raises(UserError, match="--scale"):
        kolektor.load(ksdd, "fold0", make_args(scale="quarter"))


def test_split_file_missing_or_elsewhere(ksdd, tmp_path):
    elsewhere = tmp_path / "KolektorSDD"
    elsewhere.symlink_to(ksdd, target_is_directory=True)  # same images, no split folder beside it
    with pytest.raises(UserError, match=r"split\.pyb.*--split-file"):
        kolektor.load(elsewhere, "fold0", make_args())
    split = tmp_path / "my_split.pyb"
    shutil.copy(ksdd.parent / "KolektorSDD-training-splits" / "split.pyb", split)
    a = kolektor.load(elsewhere, "fold0", make_args(split_file=str(split)))
    b = kolektor.load(ksdd, "fold0", make_args())
    assert [s.image.name for s in a.test] == [s.image.name for s in b.test]
    with pytest.raises(UserError, match="nothere.pyb"):
        kolektor.load(ksdd, "fold0", make_args(split_file=str(tmp_path / "nothere.pyb")))


def test_split_file_is_not_executed_and_must_name_existing_folders(ksdd, tmp_path):
    evil = tmp_path / "evil.pyb"

    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "victim"),))

    (tmp_path / "victim").mkdir()
    evil.write_bytes(pickle.dumps([[Evil()] * 3, [[]] * 3, []]))
    with pytest.raises(UserError, match="evil.pyb"):
        kolektor.load(ksdd, "fold0", make_args(split_file=str(evil)))
    assert (tmp_path / "victim").is_dir()

    wrong = tmp_path / "wrong.pyb"
    wrong.write_bytes(pickle.dumps({"train": []}))
    with pytest.raises(UserError, match="wrong.pyb"):
        kolektor.load(ksdd, "fold0", make_args(split_file=str(wrong)))

    missing = tmp_path / "missing.pyb"
    missing.write_bytes(pickle.dumps([[["kos01", "kos99"]] * 3, [["kos02"]] * 3, []], protocol=2))
    with pytest.raises(UserError, match="kos99"):
        kolektor.load(ksdd, "fold0", make_args(split_file=str(missing)))


def test_missing_label_bitmap(tmp_path):
    root = tmp_path / "KolektorSDD"
    write_kolektor(root, n_folders=3, parts=2, seed=0, size=(40, 16))
    (root / "kos02" / "Part1_label.bmp").unlink()
    with pytest.raises(UserError, match="Part1_label.bmp"):
        for fold in range(3):
            kolektor.load(root, f"fold{fold}", make_args())


def test_kolektor2(ksdd2):
    args = make_args(dataset="kolektor2")
    assert kolektor2.categories(ksdd2, args) == ["ksdd2"]
    splits = kolektor2.load(ksdd2, "ksdd2", args)
    assert (ksdd2 / "train" / "10301 (copy).png").is_file()
    assert all("(copy)" not in s.image.name for s in splits.train + splits.test)
    assert any("10301 (copy).png" in n and "10301_GT (copy).png" in n for n in splits.notes)
    train_images = [p for p in (ksdd2 / "train").glob("*.png") if "_GT" not in p.name and "copy" not in p.name]
    defective_train = [p for p in train_images
                       if np.asarray(Image.open(p.with_name(f"{p.stem}_GT.png"))).any()]
    assert defective_train  # the generated train split has defective images...
    assert len(splits.train) == len(train_images) - len(defective_train)  # ...which training leaves out
    assert all(s.label == 0 and s.mask is None for s in splits.train)
    assert len(splits.test) == 6 and {s.label for s in splits.test} == {0, 1}
    for s in splits.test:
        assert (s.mask is not None) == bool(s.label)
    assert splits.image_size == (704, 256)
    item = ImageDataset(splits.test[:2], splits.image_size)[1]
    assert item["image"].shape == (3, 704, 256)


def test_kolektor2_errors(tmp_path):
    root = tmp_path / "KolektorSDD2"
    write_kolektor2(root, n_train=4, n_test=2, seed=1, size=(40, 16))
    args = make_args(dataset="kolektor2")
    (root / "test" / "20001_GT.png").unlink()
    with pytest.raises(UserError, match="20001_GT.png"):
        kolektor2.load(root, "ksdd2", args)
    shutil.rmtree(root / "test")
    with pytest.raises(UserError, match="test"):
        kolektor2.load(root, "ksdd2", args)
