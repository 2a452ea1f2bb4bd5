"""The category catalogue and the renderer of one image: scene, defect, lighting and sensor noise.

Every image comes from its own random streams keyed by (seed, category, split, defect, index), so
an image does not depend on which other images were rendered, or in what order.
"""
from __future__ import annotations

import zlib

import numpy as np

from common import UserError
from datasets.synthetic.defects import apply_defect
from datasets.synthetic.noise import coords
from datasets.synthetic.scenes import RENDERERS

VERSION = 1  # bump when the rendering changes, so cached categories are not silently reused

CATEGORIES: dict[str, dict] = {
    "weave": {"kind": "texture", "grayscale": False,
              "defects": ("hole", "stain", "cut", "scratch"),
              "info": "plain-woven fabric, carpet-like"},
    "marble": {"kind": "texture", "grayscale": False,
               "defects": ("crack", "stain", "scratch", "cut"),
               "info": "polished stone with turbulent veins"},
    "plank": {"kind": "texture", "grayscale": False,
              "defects": ("scratch", "hole", "crack", "stain", "cut"),
              "info": "wood grain, vertical"},
    "mesh": {"kind": "texture", "grayscale": True,
             "defects": ("hole", "crack", "cut", "stain"),
             "info": "woven metal wire grid, grayscale"},
    # rendered at 1024 x 1024 (its own default size): hairline scratches 2, 4 and 6 px wide
    "sheet": {"kind": "texture", "grayscale": True, "size": 1024,
              "defects": ("hairline2", "hairline4", "hairline6"),
              "info": "brushed steel sheet, 1024 x 1024, hairline scratches 2-6 px wide"},
    "washer": {"kind": "object", "grayscale": False,
               "defects": ("scratch", "stain", "crack", "missing", "hole"),
               "info": "machined steel ring on dark cloth"},
    "caplet": {"kind": "object", "grayscale": False,
               "defects": ("scratch", "crack", "stain", "missing"),
               "info": "two-colour elongated pill with a print"},
    "bolt": {"kind": "object", "grayscale": True,
             "defects": ("scratch", "missing", "stain", "hole"),
             "info": "threaded hex bolt, side view, grayscale"},
}

_SPLITS = {"train": 0, "good": 1, "defect": 2}
_DEFECT_CODES: dict[str | None, int] = {"scratch": 1, "hole": 2, "stain": 3, "crack": 4, "cut": 5, "missing": 6,
                                         "hairline2": 7, "hairline4": 8, "hairline6": 9}
_NOISE_SIGMA = 0.01


def check_category(category: str) -> None:
    if category not in CATEGORIES:
        raise UserError(f"unknown synthetic category {category!r}; known: {', '.join(CATEGORIES)}")


def render_sample(category: str, *, split: str, index: int, defect: str | None = None,
                  seed: int = 0, image_size: int = 256, grayscale: bool | None = None,
                  draw_defect: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """One image as written to disk: (uint8 (H, W) or (H, W, 3), uint8 0/255 mask or None).

    split is "train", "good" or "defect". With draw_defect=False a defect sample is rendered
    with everything but its defect (same nuisances, same noise): the clean reference.
    """
    check_category(category)
    gray = CATEGORIES[category]["grayscale"] if grayscale is None else grayscale
    image, alpha = _render(category, seed, split, index, defect, image_size, draw_defect)
    mask = None if alpha is None else np.where(alpha > 0.5, 255, 0).astype(np.uint8)
    return _to_uint8(image, gray), mask


def _rng(seed: int, category: str, split: str, defect: str | None, index: int, stream: int) -> np.random.Generator:
    key = [seed, zlib.crc32(category.encode()), _SPLITS[split], _DEFECT_CODES.get(defect, 0), index, stream]
    return np.random.default_rng(np.random.SeedSequence(key))


def _render(category: str, seed: int, split: str, index: int, defect: str | None, size: int,
            draw_defect: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {', '.join(_SPLITS)}, got {split!r}")
    if split == "defect" and defect not in CATEGORIES[category]["defects"]:
        raise ValueError(f"{category} has no defect {defect!r}")
    scene_rng = _rng(seed, category, split, defect, index, 0)
    scene = RENDERERS[category](scene_rng, size)
    clean, alpha = scene.image, None
    if split == "defect":
        assert defect is not None  # checked against the category's defects above
        alpha = apply_defect(_rng(seed, category, split, defect, index, 1), scene, defect, size)
    image = scene.image if draw_defect else clean
    # lighting and noise come after the defect: the defect is lit like the rest, and the clean
    # reference shares exactly the same nuisances
    return _finish(scene_rng, image, size), alpha


def _finish(rng: np.random.Generator, image: np.ndarray, size: int) -> np.ndarray:
    x, y = coords(size)
    gain = 1 + float(rng.normal(0, 0.025))
    gx, gy = rng.normal(0, 0.04, 2).tolist()
    light = (gain * (1 + gx * (x - 0.5) + gy * (y - 0.5)))[..., None]
    noise = rng.standard_normal(image.shape, dtype=np.float32) * _NOISE_SIGMA
    return image * light + noise


def _to_uint8(image: np.ndarray, gray: bool) -> np.ndarray:
    if gray and image.shape[2] == 3:
        image = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    elif gray:
        image = image[..., 0]
    elif image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
