"""Generated images and defect masks for the --protocol tests, and ImageNet's normalisation."""
import numpy as np
from PIL import Image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def defect_mask(rng: np.random.Generator, h: int, w: int, kind: str) -> np.ndarray:
    """0/255: a one-pixel defect, a one-pixel-wide crack, a two-pixel-wide one, or a blob."""
    mask = np.zeros((h, w), np.uint8)
    y, x = int(rng.integers(h // 4, 3 * h // 4)), int(rng.integers(w // 4, 3 * w // 4))
    if kind == "pixel":
        mask[y, x] = 255
    elif kind == "crack":
        mask[h // 5: 4 * h // 5, x] = 255
    elif kind == "crack2":
        mask[y, w // 5: 4 * w // 5] = 255
        mask[y + 1, w // 5: 4 * w // 5] = 255
    else:
        mask[y - h // 8: y + h // 8, x - w // 8: x + w // 8] = 255
    return mask


def noise_image(rng: np.random.Generator, h: int, w: int, gray: bool = False) -> Image.Image:
    pixels = rng.integers(0, 256, (h, w) if gray else (h, w, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


KINDS = ("pixel", "crack", "crack2", "blob")
