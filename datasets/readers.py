"""Image and mask files decoded to PIL images: 16-bit, floating-point and EXIF-rotated files included."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from common import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ORIENTATION = 0x0112  # the EXIF tag a camera sets when it stored the image rotated


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_image(path: Path | Image.Image, mode: str = "RGB") -> Image.Image:
    """RGB image (or `mode`); grayscale is repeated to 3 channels. Unreadable or truncated files raise UserError.

    16-bit images keep their high byte (value >> 8), for grayscale as Pillow already does for 48-bit
    RGB, so a 16-bit file decodes like its 8-bit version however many channels it has. Floating-point
    images (mode F, e.g. float32 TIFF) must hold values in [0, 1], scaled to 0..255; others are refused.
    An EXIF orientation (phone and camera JPEGs) is applied, so the image is read upright, as viewers
    show it and as its mask was drawn.
    """
    return _read(path, mode, "image")


def image_size_of(path: Path) -> tuple[int, int]:
    """(H, W) of an image file as read_image returns it (EXIF orientation applied), from its header alone."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8):  # stored turned by 90 degrees
                width, height = height, width
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise UserError(f"cannot read image {path}: {e}; replace or remove the file") from None
    return height, width


def read_mask(path: Path, mode: str = "L") -> Image.Image:
    """Grayscale mask (or `mode`); any non-zero pixel marks a defect, also in a 16-bit mask."""
    return _read(path, mode, "mask")


def _read(path: Path | Image.Image, mode: str, what: str) -> Image.Image:
    """`path` may be an image already in memory (api.py): it is then decoded as its file would be."""
    try:
        if isinstance(path, Image.Image):
            return _decoded(path, path, mode, what)
        with Image.open(path) as img:
            img.load()
            return _decoded(img, path, mode, what)
    except Image.DecompressionBombError as e:  # raised on the header alone, before decoding a byte
        raise UserError(f"cannot read {what} {path}: {str(e).rstrip('.')}; if it is a real image, "
                        "downscale it first") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise UserError(f"cannot read {what} {path}: {e}; replace or remove the file") from None


def _decoded(img: Image.Image, path: Path | Image.Image, mode: str, what: str) -> Image.Image:
    if img.getexif().get(ORIENTATION, 1) != 1:  # checked first: without a tag (MVTec AD...) no copy is made
        img = ImageOps.exif_transpose(img)  # not in_place=True, which Pillow 9.3 (the floor) lacks
    if img.mode.startswith("I"):  # I;16 (16-bit PNG, TIFF) or I: convert() would clip at 255
        img = _to_8bit(np.asarray(img), keep_nonzero=what == "mask")
    elif img.mode == "F":  # convert() would clip [0, 1] data to black
        img = _float_to_8bit(np.asarray(img), path, what)
    return img.convert(mode)


def _to_8bit(values: np.ndarray, keep_nonzero: bool) -> Image.Image:
    """16-bit values -> 8 bits by their high byte; a mask keeps faint labels (1..255) as non-zero."""
    values = np.clip(values.astype(np.int64), 0, 65535)
    scaled = values >> 8
    if keep_nonzero:
        scaled = np.where(values > 0, np.maximum(scaled, 1), 0)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def _float_to_8bit(values: np.ndarray, path: Path | Image.Image, what: str) -> Image.Image:
    """Floating-point values in [0, 1] -> 0..255, rounded (v / 255 gives v back); a mask keeps faint labels."""
    finite = np.isfinite(values).all()
    if not finite or values.min() < 0 or values.max() > 1:
        found = "non-finite values" if not finite else f"values {values.min():g}..{values.max():g}"
        raise UserError(f"cannot read {what} {path}: floating-point pixels must lie in [0, 1], found {found}; "
                        "save it as an 8- or 16-bit image or scaled to [0, 1]")
    scaled = np.rint(values.astype(np.float64) * 255)
    if what == "mask":
        scaled = np.where(values > 0, np.maximum(scaled, 1), 0)
    return Image.fromarray(scaled.astype(np.uint8))  # 2-D uint8: mode L
