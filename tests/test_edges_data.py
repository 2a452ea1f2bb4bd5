"""The edges of the data: flag ranges, faint paper masks, cache entries that are not what their key says,
EXIF orientation, float images, over-long category names and `**` globs through a link to a parent."""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datasets.readers
import train
from common import UserError
from datasets import kolektor
from datasets.base import ImageDataset, Sample, read_image, read_mask
from datasets.cache import ImageCache
from datasets.listing import glob_files
from datasets.mvtec import load
from pipeline.options import check_output_names
from tests.helpers.data import write_category, write_kolektor
from tests.helpers.layouts import write_folder

REPO = Path(__file__).resolve().parents[1]
FAST = ["--weights", "random", "--model", "resnet18", "--k", "5", "--image-size", "64", "--workers", "0",
        "--device", "cpu", "--no-save-model", "--quiet"]


def refuse_decoding(monkeypatch, allow_masks: bool = False) -> None:
    """Any image decoded from here on fails the test (masks too unless `allow_masks`)."""
    decode = datasets.readers._read

    def guarded(path, mode, what):
        if what == "image" or not allow_masks:
            pytest.fail(f"{what} {path} was decoded before the check")
        return decode(path, mode, what)
    monkeypatch.setattr(datasets.readers, "_read", guarded)


# ---- 11, 21: flags -------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value", [("--eps", "inf"), ("--eps", "nan"), ("--eps", "1e300"), ("--fpr", "inf"),
                                         ("--val-fpr", "nan"), ("--normal-test-ratio", "inf"),
                                         ("--seed", "1e20"), ("--seed", "100000000000000000000"), ("--seed", "-1")])
def test_float_flags_and_seed_out_of_range_are_one_line_naming_the_flag(flag, value):
    with pytest.raises(UserError, match=rf"^{flag} \S+ must be (in|positive|an integer in)") as error:
        train.parse_args(["--dataset", "synthetic", *FAST, flag, value])
    assert "\n" not in str(error.value)


def test_eps_inf_on_the_command_line_exits_2_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "train.py", "--dataset", "synthetic", "--category", "washer", *FAST,
                             "--eps", "inf", "--experiment", str(tmp_path / "exp")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: --eps inf"), result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "exp").exists()


def test_seed_in_range_is_kept():
    assert train.parse_args(["--dataset", "synthetic", *FAST, "--seed", str(2**63 - 1)]).seed == 2**63 - 1
    assert train.parse_args(["--dataset", "synthetic", *FAST]).seed == 1111


# ---- 12: 0/1 masks under --protocol paper -------------------------------------------------------------

def faint_masks(root: Path) -> Path:
    write_category(root, "toy", seed=0, n_train=4)
    for mask in sorted((root / "toy" / "ground_truth").rglob("*.png")):
        Image.fromarray((np.asarray(Image.open(mask)) > 0).astype(np.uint8)).save(mask)  # 0/1, not 0/255
    return root


def test_0_1_masks_under_paper_protocol_are_refused_before_the_fit(tmp_path, monkeypatch):
    root = faint_masks(tmp_path / "data")
    refuse_decoding(monkeypatch, allow_masks=True)
    with pytest.raises(UserError, match=r"000_mask\.png has maximum 1 \(and 3 more masks\).*--protocol standard"):
        train.main(["--dataroot", str(root), "--category", "toy", *FAST, "--experiment", str(tmp_path / "exp")])


def test_0_1_masks_count_every_pixel_under_standard_protocol(tmp_path):
    test = load(faint_masks(tmp_path / "data"), "toy").test
    masks = [ImageDataset([s], (64, 64))[0]["mask"] for s in test if s.mask is not None]
    assert [int(m.sum()) for m in masks] == [14 * 14] * 4


def test_0_255_masks_under_paper_protocol_pass_the_check(tmp_path):
    write_category(tmp_path / "data", "toy", seed=0, n_train=2)
    ImageDataset(load(tmp_path / "data", "toy").test, (64, 64), protocol="paper", dataset="mvtecad").check_masks()


def test_0_1_kolektor_labels_under_paper_protocol_are_refused(tmp_path):
    write_kolektor(tmp_path / "ksdd", n_folders=3, parts=2, seed=1)
    for label in (tmp_path / "ksdd").rglob("*_label.bmp"):
        Image.fromarray((np.asarray(Image.open(label)) > 0).astype(np.uint8)).save(label)
    options = kolektor.KolektorOptions(dataset="kolektor", protocol="paper")
    with pytest.raises(UserError, match=r"_label\.bmp has maximum 1.*--protocol standard"):
        kolektor.load(tmp_path / "ksdd", "fold0", options)  # before: every defective part was labelled good


# ---- 13: cache entries checked against their key -----------------------------------------------------

def test_replaced_cache_entries_are_misses_decoded_again(tmp_path):
    write_category(tmp_path / "data", "toy", seed=0, n_train=2)
    samples = [s for s in load(tmp_path / "data", "toy").test if s.mask is not None][:2]
    cache = ImageCache.open(tmp_path / "cache")
    reference = [ImageDataset([s], (48, 48))[0] for s in samples]
    for s in samples:
        ImageDataset([s], (48, 48), cache=cache)[0]
    key = ImageDataset(samples, (48, 48)).transform_key()
    first, second = (cache.entry("image", s.image, key) for s in samples)
    shutil.copyfile(second, first)  # another image's entry: right shape and dtype, wrong key
    mask_entry = cache.entry("mask", samples[1].mask, key)
    with open(mask_entry, "wb") as f:
        np.savez(f, pixels=np.full((48, 48), 255, np.uint8), size=np.array((64, 64)),
                 key=np.array(mask_entry.stem))  # its own key, but a mask holds 0 and 1 only
    with open(second, "wb") as f:
        np.savez(f, pixels=np.zeros((32, 32, 3), np.float32), size=np.array((64, 64)), key=np.array(second.stem))
    for s, expected in zip(samples, reference):
        item = ImageDataset([s], (48, 48), cache=cache)[0]
        assert torch.equal(item["image"], expected["image"]) and torch.equal(item["mask"], expected["mask"])
    with np.load(second) as stored:  # rewritten with the decoded pixels
        assert stored["pixels"].dtype == np.uint8 and stored["pixels"].shape == (48, 48, 3)


# ---- 15: EXIF orientation, float images ------------------------------------------------------------

def rotated_file(path: Path, pixels: np.ndarray, orientation: int = 6) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation  # 6: the camera was turned 90 degrees clockwise
    Image.fromarray(pixels).save(path, exif=exif)
    return path


def test_exif_orientation_is_applied_when_reading(tmp_path):
    upright = np.random.default_rng(0).integers(0, 256, (40, 24, 3)).astype(np.uint8)  # H 40, W 24 as viewed
    stored = np.rot90(upright, 1)  # what a camera writes for orientation 6: viewers turn it 90 degrees clockwise
    path = rotated_file(tmp_path / "phone.png", np.ascontiguousarray(stored))
    Image.fromarray(upright).save(tmp_path / "upright.png")
    assert np.array_equal(np.asarray(read_image(path)), upright)
    for size in ((40, 24), (32, 32)):  # training and prediction read through ImageDataset
        torch.testing.assert_close(ImageDataset([Sample(path)], size)[0]["image"],
                                   ImageDataset([Sample(tmp_path / "upright.png")], size)[0]["image"], rtol=0, atol=0)
    jpeg = rotated_file(tmp_path / "phone.jpg", np.ascontiguousarray(stored))
    assert read_image(jpeg).size == (24, 40)  # (W, H) upright


def test_float_tiff_in_0_1_decodes_like_its_8bit_version(tmp_path):
    eight = np.random.default_rng(1).integers(0, 256, (32, 32)).astype(np.uint8)
    Image.fromarray(eight).save(tmp_path / "8.png")
    Image.fromarray(eight.astype(np.float32) / 255).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    assert np.array_equal(np.asarray(read_image(tmp_path / "f.tif")), np.asarray(read_image(tmp_path / "8.png")))
    mask = np.zeros((32, 32), np.float32)
    mask[4:8, 4:8] = 0.001  # a faint label still marks the defect
    Image.fromarray(mask).save(tmp_path / "m.tif")
    assert (np.asarray(read_mask(tmp_path / "m.tif")) > 0).sum() == 16


@pytest.mark.parametrize("value", [255.0, -1.0, float("nan")])
def test_float_image_outside_0_1_is_one_line_naming_the_file(tmp_path, value):
    pixels = np.full((16, 16), 0.5, np.float32)
    pixels[0, 0] = value
    Image.fromarray(pixels).save(tmp_path / "odd.tif")
    with pytest.raises(UserError, match=r"odd\.tif: floating-point pixels must lie in \[0, 1\]") as error:
        read_image(tmp_path / "odd.tif")
    assert "\n" not in str(error.value)


# ---- 20: category names against the file system's name limit -------------------------------------

def test_overlong_category_is_refused_before_any_image_is_decoded(tmp_path, monkeypatch):
    write_folder(tmp_path / "own", n_normal=4, n_abnormal=2)
    refuse_decoding(monkeypatch)
    with pytest.raises(UserError, match=r"^--category c{40}\.\.\. \(235 bytes\) is too long") as error:
        train.main(["--dataset", "folder", "--dataroot", str(tmp_path / "own"), "--normal-dir", "good",
                    "--abnormal-dir", "bad", "--mask-dir", "masks", "--category", "c" * 235, *FAST,
                    "--experiment", str(tmp_path / "exp")])
    assert "\n" not in str(error.value)


def test_longest_accepted_category_fits_its_staging_folder(tmp_path):
    accepted = [n for n in range(150, 256) if not _refused(tmp_path, "c" * n)]
    longest = "c" * max(accepted)
    assert _refused(tmp_path, longest + "c")
    staging = tmp_path / f".{longest}.staging-{socket.gethostname()}-4194304-0123abcd"  # the longest pid
    staging.mkdir()  # fits the limit: no ENAMETOOLONG


def _refused(tmp_path: Path, name: str) -> bool:
    try:
        check_output_names(tmp_path, [name])
    except UserError:
        return True
    return False


# ---- 21: ** globs through a link to a parent --------------------------------------------------------

def test_recursive_glob_through_links_to_parents_terminates(tmp_path):
    top = tmp_path / "dir"
    (top / "sub").mkdir(parents=True)
    for path in (top / "a.png", top / "sub" / "b.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    os.symlink("..", top / "sub" / "up")  # two links back up: glob walks 2^40 paths before ELOOP stops it
    os.symlink(".", top / "here")
    # the listing alone gets 20 s (SIGALRM ends the process), however long importing torch takes on a busy machine
    code = ("import signal, predict; signal.alarm(20); "
            f"print([p.name for p in predict.find_images({str(top / '**' / '*.png')!r})])")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"the listing did not end within 20 s ({result.returncode}) {result.stderr}"
    assert result.stdout.strip() == "['a.png', 'b.png']"


def test_recursive_glob_lists_what_glob_lists_without_loops(tmp_path, monkeypatch):
    import glob

    for name in ("x.png", "a/y.png", "a/b/z.PNG", "a/b/w.jpg", ".h/q.png", "a/.s.png", "a/b/t.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    os.symlink("b", tmp_path / "a" / "link")  # a link to a sibling is followed, as glob follows it
    monkeypatch.chdir(tmp_path)
    for pattern in ("**/*.png", "**", "a/**/*", "**/.*", "**/b/*", "*/**/*.jpg", str(tmp_path / "**" / "*.PNG"),
                    "a/*.png", "**/[yz].*"):
        expected = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        assert glob_files(pattern) == expected, pattern
