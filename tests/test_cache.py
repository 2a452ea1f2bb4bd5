"""--cache: decoded images stored once, never served stale, the same inputs and metrics as without it."""
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datasets.readers
import train
from common import UserError
from datasets.base import ImageDataset, Sample
from datasets.cache import ImageCache
from datasets.mvtec import load
from tests.helpers.data import write_category


@pytest.fixture
def category(tmp_path) -> list:
    write_category(tmp_path / "data", "toy", seed=0, n_train=2)
    return load(tmp_path / "data", "toy").test  # 7 images, 4 with masks


def items(dataset: ImageDataset) -> list[dict]:
    return [dataset[i] for i in range(len(dataset))]


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])


def count_decodes(monkeypatch) -> list:
    calls = []
    decode = datasets.readers._read

    def counting(path, mode, what):
        calls.append(Path(path).name)
        return decode(path, mode, what)
    monkeypatch.setattr(datasets.readers, "_read", counting)
    return calls


def test_warm_cache_decodes_nothing_and_gives_identical_tensors(category, tmp_path, monkeypatch):
    cache = ImageCache.open(tmp_path / "cache")
    reference = items(ImageDataset(category, (48, 40), crop=(32, 32)))
    cold = items(ImageDataset(category, (48, 40), crop=(32, 32), cache=cache))
    assert_same(cold, reference)
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 11  # 7 images + 4 masks
    assert not list((tmp_path / "cache").rglob("*.tmp"))

    def no_decoding(*args):
        raise AssertionError("a warm cache must not decode")
    monkeypatch.setattr(datasets.readers, "_read", no_decoding)
    assert_same(items(ImageDataset(category, (48, 40), crop=(32, 32), cache=cache)), reference)


def test_changed_file_size_or_setting_is_decoded_again(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    path = tmp_path / "image.bmp"  # BMP: the same byte count for any content of the same dimensions
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    samples, cache = [Sample(path)], ImageCache.open(tmp_path / "cache")
    ImageDataset(samples, (48, 48), cache=cache)[0]
    info = path.stat()
    # the same size and mtime, other pixels (as cp -p or rsync -a could leave it): only ctime tells
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert path.stat().st_size == info.st_size and path.stat().st_mtime_ns == info.st_mtime_ns
    calls = count_decodes(monkeypatch)
    changed = ImageDataset(samples, (48, 48), cache=cache)[0]
    assert calls == [path.name]
    assert torch.equal(changed["image"], ImageDataset(samples, (48, 48))[0]["image"])  # the new pixels
    calls.clear()
    ImageDataset(samples, (48, 32), cache=cache)[0]  # another size
    ImageDataset(samples, (48, 48), crop=(40, 40), cache=cache)[0]  # another crop
    later = ImageDataset(samples, (48, 48), cache=cache)
    later.sharpen = True  # a transform setting added later is part of the key without code changes
    later[0]
    assert calls == [path.name] * 3
    keys = {ImageDataset(samples, (48, 48), protocol=protocol, dataset="mvtecad").transform_key()
            for protocol in ("standard", "paper")}
    assert len(keys) == 2  # the protocol is part of the key
    ImageDataset(samples, (48, 48), cache=cache)[0]  # unchanged since: served from the cache
    assert len(calls) == 3


def test_unreadable_entry_is_decoded_again_and_replaced(category, tmp_path):
    cache = ImageCache.open(tmp_path / "cache")
    reference = ImageDataset(category[:1], (48, 48), cache=cache)[0]
    entry = cache.entry("image", category[0].image, ImageDataset(category[:1], (48, 48)).transform_key())
    entry.write_bytes(entry.read_bytes()[:100])  # e.g. written before a disk filled up by another tool
    assert torch.equal(ImageDataset(category[:1], (48, 48), cache=cache)[0]["image"], reference["image"])
    assert np.load(entry)["pixels"].shape == (48, 48, 3)


def fill(samples: list, cache_root: Path, start) -> list[np.ndarray]:
    start.wait()  # both processes decode and write the same entries at the same moment
    dataset = ImageDataset(samples, (48, 40), crop=(32, 32), cache=ImageCache.open(cache_root))
    return [item["image"].numpy() for item in items(dataset)]


def test_two_runs_filling_one_cache_at_once_read_whole_entries(category, tmp_path):
    reference = [item["image"].numpy() for item in items(ImageDataset(category, (48, 40), crop=(32, 32)))]
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(2, mp_context=context) as pool:
        start = manager.Barrier(2)
        runs = [pool.submit(fill, category, tmp_path / "cache", start) for _ in range(2)]
        results = [run.result(timeout=120) for run in runs]
    for images in results:
        assert all(np.array_equal(a, b) for a, b in zip(images, reference, strict=True))
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    cache = ImageCache.open(tmp_path / "cache")
    for sample in category:  # every entry a whole one: read back, no decoding
        entry = cache.entry("image", sample.image, ImageDataset(category, (48, 40), crop=(32, 32)).transform_key())
        with np.load(entry) as stored:
            assert stored["pixels"].shape == (32, 32, 3)


def test_metrics_equal_with_and_without_cache(tmp_path, monkeypatch):
    write_category(tmp_path / "data", "toy", seed=0)
    fast = ["--weights", "random", "--model", "resnet18", "--workers", "0", "--k", "10", "--image-size", "64",
            "--batch-size", "4", "--dataroot", str(tmp_path / "data"), "--category", "toy", "--no-save-model"]
    cache = ["--cache", str(tmp_path / "cache")]
    assert train.main([*fast, "--experiment", str(tmp_path / "plain")]) == 0
    assert train.main([*fast, *cache, "--experiment", str(tmp_path / "cold")]) == 0
    monkeypatch.setattr(datasets.readers, "_read", lambda *args: pytest.fail("a warm run decoded an image"))
    assert train.main([*fast, *cache, "--experiment", str(tmp_path / "warm")]) == 0
    runs = [tmp_path / name / "mvtecad" / "toy" for name in ("plain", "cold", "warm")]
    metrics = [json.loads((run / "metrics.json").read_text())["metrics"] for run in runs]
    assert metrics[0] == metrics[1] == metrics[2]
    maps = [np.load(run / "scores.npz")["maps"] for run in runs]
    assert np.array_equal(maps[0], maps[1]) and np.array_equal(maps[0], maps[2])


def test_cache_naming_a_file_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"--cache .*file is a file; pass a folder"):
        train.parse_args(["--dataset", "synthetic", "--cache", str(tmp_path / "file")])
