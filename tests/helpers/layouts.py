"""Seeded writers of tiny test trees for the folder dataset and today's benchmarks in their published
layouts: `write_folder`, `write_visa`, `write_mvtecad2`, `write_btad`, `write_mvtec_layout` (MPDD), and the
striped `surface` images with inverted squares (`defective`) they are made of."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def surface(rng: np.random.Generator, h: int = 64, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    stripes = 0.5 + 0.25 * np.sin(x / 2.0 + rng.uniform(0, 0.3)) * np.sin(y / 3.0)
    return np.clip(stripes + rng.normal(0, 0.03, (h, w)), 0, 1)


def save_image(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (array * 255).astype(np.uint8)
    Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(path)
    return path


def save_mask(mask: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path)
    return path


def defective(rng: np.random.Generator, h: int = 64, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """An image with an obvious 14 px inverted square, and its 0/255 mask."""
    image, mask = surface(rng, h, w), np.zeros((h, w), np.uint8)
    top, left = rng.integers(4, h - 18), rng.integers(4, w - 18)
    image[top:top + 14, left:left + 14] = 1.0 - image[top:top + 14, left:left + 14]
    mask[top:top + 14, left:left + 14] = 255
    return image, mask


def write_folder(root: Path, n_normal: int = 10, n_abnormal: int = 4, n_normal_test: int = 0, seed: int = 0,
                 mask_style: str | None = "suffix") -> None:
    """root/good (n_normal), root/bad + root/masks (mask_style "suffix": <stem>_mask.png, "stem":
    <stem>.bmp, None: no masks), root/good_test (n_normal_test, none when 0)."""
    rng = np.random.default_rng(seed)
    for i in range(n_normal):
        save_image(surface(rng), root / "good" / f"part_{i:02d}.png")
    for i in range(n_normal_test):
        save_image(surface(rng), root / "good_test" / f"check_{i:02d}.jpg")
    for i in range(n_abnormal):
        image, mask = defective(rng)
        save_image(image, root / "bad" / f"bad_{i:02d}.png")
        if mask_style == "suffix":
            save_mask(mask, root / "masks" / f"bad_{i:02d}_mask.png")
        elif mask_style == "stem":
            save_mask(mask, root / "masks" / f"bad_{i:02d}.bmp")


def write_visa(root: Path, categories: tuple[str, ...] = ("candle", "pcb1"), n_train: int = 10, n_normal_test: int = 3,
               n_anomaly: int = 3, size: tuple[int, int] = (48, 72), seed: int = 0) -> None:
    """root/<category>/Data/Images/{Normal,Anomaly}/*.JPG, Data/Masks/Anomaly/*.png and the official
    split file root/split_csv/1cls.csv (object,split,label,image,mask; paths relative to root)."""
    rng = np.random.default_rng(seed)
    rows = []
    for category in categories:
        data = Path(category) / "Data"
        for i in range(n_train + n_normal_test):
            image = data / "Images" / "Normal" / f"{i:04d}.JPG"
            save_image(surface(rng, *size), root / image)
            rows.append([category, "train" if i < n_train else "test", "normal", image.as_posix(), ""])
        for i in range(n_anomaly):
            image, mask = data / "Images" / "Anomaly" / f"{i:03d}.JPG", data / "Masks" / "Anomaly" / f"{i:03d}.png"
            pixels, truth = defective(rng, *size)
            save_image(pixels, root / image)
            save_mask(truth, root / mask)
            rows.append([category, "test", "anomaly", image.as_posix(), mask.as_posix()])
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    with open(root / "split_csv" / "1cls.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["object", "split", "label", "image", "mask"])
        writer.writerows(rows)


def write_mvtecad2(root: Path, categories: tuple[str, ...] = ("can", "vial"), n_train: int = 8, n_val: int = 3,
                   n_good: int = 3, n_bad: int = 3, seed: int = 0) -> None:
    """root/<category>/train/good, validation/good, test_public/{good,bad}, test_public/ground_truth/
    bad/<name>_mask.png, and a test_private/ without masks (the loader leaves it alone)."""
    rng = np.random.default_rng(seed)
    for category in categories:
        folder = root / category
        for split, n in (("train", n_train), ("validation", n_val), ("test_public", n_good)):
            for i in range(n):
                save_image(surface(rng), folder / split / "good" / f"{i:03d}_regular.png")
        for i in range(n_bad):
            image, mask = defective(rng)
            save_image(image, folder / "test_public" / "bad" / f"{i:03d}_overexposed.png")
            save_mask(mask, folder / "test_public" / "ground_truth" / "bad" / f"{i:03d}_overexposed_mask.png")
        save_image(defective(rng)[0], folder / "test_private" / "000_regular.png")


BTAD_SUFFIXES = {"01": (".bmp", ".png"), "02": (".png", ".png"), "03": (".bmp", ".bmp")}  # image, mask


def write_btad(root: Path, products: tuple[str, ...] = ("01", "02", "03"), n_train: int = 10, n_ok: int = 3,
               n_ko: int = 3, seed: int = 0) -> None:
    """root/<NN>/train/ok, test/ok, test/ko, ground_truth/ko with each product's published extensions."""
    rng = np.random.default_rng(seed)
    for product in products:
        image_ext, mask_ext = BTAD_SUFFIXES[product]
        folder = root / product
        for i in range(n_train):
            save_image(surface(rng), folder / "train" / "ok" / f"{i:04d}{image_ext}")
        for i in range(n_ok):
            save_image(surface(rng), folder / "test" / "ok" / f"{i:04d}{image_ext}")
        for i in range(n_ko):
            image, mask = defective(rng)
            save_image(image, folder / "test" / "ko" / f"{i:04d}{image_ext}")
            save_mask(mask, folder / "ground_truth" / "ko" / f"{i:04d}{mask_ext}")


MPDD_CATEGORIES = ("bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes")


def write_mvtec_layout(root: Path, categories: tuple[str, ...], n_train: int = 10, n_good: int = 3, n_bad: int = 3,
                       defect: str = "scratches", seed: int = 0) -> None:
    """MVTec AD's layout (which MPDD shares): <category>/train/good, test/{good,<defect>},
    ground_truth/<defect>/NNN_mask.png."""
    rng = np.random.default_rng(seed)
    for category in categories:
        folder = root / category
        for i in range(n_train):
            save_image(surface(rng), folder / "train" / "good" / f"{i:03d}.png")
        for i in range(n_good):
            save_image(surface(rng), folder / "test" / "good" / f"{i:03d}.png")
        for i in range(n_bad):
            image, mask = defective(rng)
            save_image(image, folder / "test" / defect / f"{i:03d}.png")
            save_mask(mask, folder / "ground_truth" / defect / f"{i:03d}_mask.png")
