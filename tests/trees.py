"""Tiny MVTec-layout trees for tests: striped textures, inverted squares as defects."""
from pathlib import Path

import numpy as np
from PIL import Image


def texture(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    stripes = 0.5 + 0.25 * np.sin(x / 2.0 + rng.uniform(0, 0.3)) * np.sin(y / 3.0)
    return np.clip(stripes + rng.normal(0, 0.03, (size, size)), 0, 1)


def write_category(root: Path, name: str, seed: int, gray: bool = False, n_train: int = 12) -> None:
    rng = np.random.default_rng(seed)
    folder = root / name

    def save(array: np.ndarray, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = (array * 255).astype(np.uint8)
        Image.fromarray(pixels if gray else np.stack([pixels] * 3, axis=-1)).save(path)

    for i in range(n_train):
        save(texture(rng), folder / "train" / "good" / f"{i:03d}.png")
    for i in range(3):
        save(texture(rng), folder / "test" / "good" / f"{i:03d}.png")
    for i in range(4):
        image, mask = texture(rng), np.zeros((64, 64), np.uint8)
        top, left = rng.integers(8, 40, size=2)
        image[top:top + 14, left:left + 14] = 1.0 - image[top:top + 14, left:left + 14]  # an obvious defect
        mask[top:top + 14, left:left + 14] = 255
        save(image, folder / "test" / "blob" / f"{i:03d}.png")
        (folder / "ground_truth" / "blob").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(folder / "ground_truth" / "blob" / f"{i:03d}_mask.png")
