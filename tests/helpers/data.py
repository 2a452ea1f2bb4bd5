"""Seeded writers of tiny test trees in the real datasets' layouts: loaders and tools run with no download.

- `write_category(root, name, seed, gray=False, n_train=12)`: one MVTec AD category of 64 x 64
  striped textures, inverted squares as `blob` defects.
- `write_mvtec(root, categories, seed=0)`: a few 64 x 64 images per category in MVTec AD's layout,
  bright squares as `hole` defects.
- `write_kolektor(root, n_folders=6, parts=4, seed=0)`: `root/kosNN/PartN.jpg` (grayscale) with
  `PartN_label.bmp` (0/255; all zero = defect-free), one defective part per folder (a dark scratch), and
  the official-format split file `<root>-training-splits/split.pyb`, a pickle
  `[train_split, test_split, all]` of three folds split by kos folder (each folder is tested in exactly
  one fold).
- `write_kolektor2(root, n_train=16, n_test=6, seed=0)`: `root/train|test/NNNNN.png` (RGB) with
  `NNNNN_GT.png`, some defective in both splits, and the known duplicates `10301 (copy).png` /
  `10301_GT (copy).png` in `train/`.
- `write_stc_archives(folder, ...)`: `folder/training.zip` (`training/videos/SS_NNN.avi`, MJPG,
  written with cv2.VideoWriter), `folder/Testing/frames_part1.zip` and `frames_part2.zip`
  (`testing/frames/SS_NNNN/NNN.jpg`), `folder/Testing/test_pixel_mask.zip`
  (`testing/test_pixel_mask/SS_NNNN.npy`, T x H x W uint8 0/1) and `folder/Testing/test_frame_mask.zip`
  (`testing/test_frame_mask/SS_NNNN.npy`, (T,)).
- The folder dataset, VisA, MVTec AD 2, BTAD and MPDD: tests/helpers/layouts.py.
- `write_png16_rgb`, `write_bomb`: PNGs Pillow cannot write (48-bit RGB; a header claiming 60000 x 60000).
"""
from __future__ import annotations

import io
import pickle
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# ------------------------------------------------------------------------------------------ MVTec AD

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


def write_mvtec(root: Path, categories: Iterable[str], seed: int = 0) -> None:
    """A few 64 x 64 images per category in MVTec AD's layout (bright squares as defects)."""
    rng = np.random.default_rng(seed)

    def image():
        y, x = np.mgrid[0:64, 0:64]
        base = 120 + 40 * np.sin(x / 3 + rng.uniform(0, 1)) * np.sin(y / 4) + rng.normal(0, 4, (64, 64))
        return np.clip(base, 0, 255).astype(np.uint8)

    for category in categories:
        folder = root / category
        for sub in ("train/good", "test/good", "test/hole", "ground_truth/hole"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for i in range(10):
            Image.fromarray(image()).convert("RGB").save(folder / "train" / "good" / f"{i:03d}.png")
        for i in range(2):
            Image.fromarray(image()).convert("RGB").save(folder / "test" / "good" / f"{i:03d}.png")
            img, mask = image(), np.zeros((64, 64), np.uint8)
            img[20:34, 16 + 8 * i:30 + 8 * i] = 250
            mask[20:34, 16 + 8 * i:30 + 8 * i] = 255
            Image.fromarray(img).convert("RGB").save(folder / "test" / "hole" / f"{i:03d}.png")
            Image.fromarray(mask).save(folder / "ground_truth" / "hole" / f"{i:03d}_mask.png")


# ------------------------------------------------------------------------ KolektorSDD, KolektorSDD2, mSTC

def _texture(rng: np.random.Generator, h: int, w: int, channels: int = 1) -> np.ndarray:
    """A smooth, slightly noisy surface: vertical shading plus blurred noise, uint8."""
    y = np.linspace(0, 1, h)[:, None]
    base = 110 + 60 * np.sin(np.pi * y) + np.zeros((h, w))
    noise = cv2.GaussianBlur(rng.normal(0, 12, (h, w)), (0, 0), 1.5)
    img = np.clip(base + noise, 0, 255).astype(np.uint8)
    if channels == 3:
        tint = rng.uniform(0.85, 1.0, 3)
        img = np.clip(img[..., None] * tint, 0, 255).astype(np.uint8)
    return img


def _scratch(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Draw a visible dark scratch into `img` (in place); return its 0/255 mask."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    x0, y0 = int(rng.integers(w // 5, 4 * w // 5)), int(rng.integers(h // 5, 4 * h // 5))
    x1 = int(np.clip(x0 + rng.integers(-w // 4, w // 4 + 1), 0, w - 1))
    y1 = int(np.clip(y0 + rng.integers(h // 8, h // 4 + 1), 0, h - 1))
    thickness = max(2, min(h, w) // 16)
    cv2.line(mask, (x0, y0), (x1, y1), 255, thickness)
    color = 20 if img.ndim == 2 else (20, 20, 20)
    cv2.line(img, (x0, y0), (x1, y1), color, thickness)
    return mask


def write_kolektor(root: str | Path, n_folders: int = 6, parts: int = 4, seed: int = 0,
                   size: tuple[int, int] = (125, 50)) -> Path:
    """KolektorSDD layout with `n_folders` kos folders of `parts` parts each (size = (H, W)); the split file path."""
    if n_folders < 3:
        raise ValueError("KolektorSDD needs at least 3 folders for 3 folds")
    root = Path(root)
    rng = np.random.default_rng(seed)
    h, w = size
    names = [f"kos{i + 1:02d}" for i in range(n_folders)]
    for name in names:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        bad = int(rng.integers(parts))
        for part in range(parts):
            img = _texture(rng, h, w)
            mask = _scratch(rng, img) if part == bad else np.zeros((h, w), np.uint8)
            Image.fromarray(img, "L").save(folder / f"Part{part}.jpg", quality=95)
            Image.fromarray(mask, "L").save(folder / f"Part{part}_label.bmp")
    order = [names[i] for i in rng.permutation(n_folders)]
    groups = [sorted(order[f::3]) for f in range(3)]  # fold f tests group f, trains on the others
    test_split = groups
    train_split = [sorted(n for g in range(3) if g != f for n in groups[g]) for f in range(3)]
    split_file = root.parent / f"{root.name}-training-splits" / "split.pyb"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    with open(split_file, "wb") as f:
        pickle.dump([train_split, test_split, sorted(names)], f, protocol=2)
    return split_file


def write_kolektor2(root: str | Path, n_train: int = 16, n_test: int = 6, seed: int = 0,
                    size: tuple[int, int] = (126, 46), defective_every: int = 3) -> Path:
    """KolektorSDD2 layout; every `defective_every`-th image is defective. Returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    h, w = size
    for split, count, first in (("train", n_train, 10295), ("test", n_test, 20000)):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img = _texture(rng, h, w, channels=3)
            mask = _scratch(rng, img) if i % defective_every == 1 else np.zeros((h, w), np.uint8)
            stem = f"{first + i:05d}"
            Image.fromarray(img, "RGB").save(folder / f"{stem}.png")
            Image.fromarray(mask, "L").save(folder / f"{stem}_GT.png")
            if split == "train" and stem == "10301":  # the known duplicates of the distribution
                Image.fromarray(img, "RGB").save(folder / "10301 (copy).png")
                Image.fromarray(mask, "L").save(folder / "10301_GT (copy).png")
    return root


def _scene_frame(rng_state: int, t: int, h: int, w: int, scene: int) -> np.ndarray:
    """A BGR frame of a static scene with a small walker moving across it."""
    rng = np.random.default_rng(1000 + scene)
    img = _texture(rng, h, w, channels=3)
    x = int((t * 3 + rng_state) % max(1, w - 8))
    cv2.rectangle(img, (x, h // 2), (x + 5, h // 2 + 10), (90, 60, 40), -1)
    return img


def write_stc_archives(folder: str | Path, scenes: tuple[int, ...] = (1, 2), videos_per_scene: int = 2,
                       frames_per_video: int = 12, clips_per_scene: int = 2, frames_per_clip: int = 15,
                       size: tuple[int, int] = (48, 64), seed: int = 0) -> Path:
    """ShanghaiTech Campus archives as distributed (see module docstring); size = (H, W). Returns folder.

    Clip k of every scene has an anomaly (a bright square, marked in both masks) in frames 5..9 when k
    is odd; the first clip of every scene is normal.
    """
    folder = Path(folder)
    (folder / "Testing").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    with tempfile.TemporaryDirectory() as tmp, \
            zipfile.ZipFile(folder / "training.zip", "w", zipfile.ZIP_STORED) as train_zip:
        for scene in scenes:
            for v in range(videos_per_scene):
                path = Path(tmp) / f"{scene:02d}_{v + 1:03d}.avi"
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 24, (w, h))
                if not writer.isOpened():
                    raise RuntimeError("OpenCV cannot write MJPG .avi files here")
                offset = int(rng.integers(0, w))
                for t in range(frames_per_video):
                    writer.write(_scene_frame(offset, t, h, w, scene))
                writer.release()
                train_zip.write(path, f"training/videos/{path.name}")
    frame_zips = [zipfile.ZipFile(folder / "Testing" / f"frames_part{i}.zip", "w", zipfile.ZIP_STORED)
                  for i in (1, 2)]
    pixel_zip = zipfile.ZipFile(folder / "Testing" / "test_pixel_mask.zip", "w", zipfile.ZIP_DEFLATED)
    frame_mask_zip = zipfile.ZipFile(folder / "Testing" / "test_frame_mask.zip", "w", zipfile.ZIP_DEFLATED)
    try:
        for s, scene in enumerate(scenes):
            for c in range(clips_per_scene):
                clip = f"{scene:02d}_{c + 1:04d}"
                pixel = np.zeros((frames_per_clip, h, w), np.uint8)
                offset = int(rng.integers(0, w))
                target = frame_zips[s % 2]
                for t in range(frames_per_clip):
                    img = _scene_frame(offset, t, h, w, scene)
                    if c % 2 == 1 and 5 <= t < 10:
                        y, x = h // 4, w // 2 + t
                        img[y:y + h // 4, x:x + w // 6] = (240, 240, 250)
                        pixel[t, y:y + h // 4, x:x + w // 6] = 1
                    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
                    target.writestr(f"testing/frames/{clip}/{t:03d}.jpg", data.tobytes())
                frame_mask = pixel.reshape(frames_per_clip, -1).any(1).astype(np.uint8)
                for zf, array, sub in ((pixel_zip, pixel, "test_pixel_mask"),
                                       (frame_mask_zip, frame_mask, "test_frame_mask")):
                    buffer = io.BytesIO()
                    np.save(buffer, array)
                    zf.writestr(f"testing/{sub}/{clip}.npy", buffer.getvalue())
    finally:
        for zf in (*frame_zips, pixel_zip, frame_mask_zip):
            zf.close()
    return folder


# Hand-made PNGs that Pillow cannot write: 48-bit RGB, and a header claiming a huge size.

def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png16_rgb(array: np.ndarray, path: Path) -> None:
    """A 48-bit RGB PNG written by hand: Pillow cannot save one."""
    h, w, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw))
                     + png_chunk(b"IEND", b""))


def write_bomb(path: Path, side: int = 60000) -> None:
    """A valid PNG header claiming side x side pixels, with almost no data behind it."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + png_chunk(b"IEND", b""))
