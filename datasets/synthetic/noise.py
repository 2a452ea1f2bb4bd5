"""Drawing primitives the scenes share: coordinates, fractal noise, shaping curves, colours.

Every random draw goes through the caller's generator in a fixed order: a scene's image depends
on that order, so reordering calls here changes every generated file.
"""
from __future__ import annotations

import math

import cv2
import numpy as np


def coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in [0, 1], as a (1, W) row and an (H, 1) column (broadcast, not materialised)."""
    t = ((np.arange(size, dtype=np.float32) + 0.5) / size)
    return t[None, :], t[:, None]


def upsample(small: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(small.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)


def fbm(rng: np.random.Generator, size: int, base: int = 4, octaves: int = 5, gain: float = 0.5) -> np.ndarray:
    """Fractal value noise, roughly zero-mean, unit-ish amplitude; resolution independent in look."""
    finest = base * 2 ** (octaves - 1)
    work = min(size, finest * 4)  # sum the octaves at a modest resolution, upsample once
    out = np.zeros((work, work), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = base * 2 ** o
        grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
        if cells * 2 <= size:  # finer than the pixel grid would alias; still drawn so streams stay aligned
            out += amp * upsample(grid, work)
            total += amp
        amp *= gain
    out /= max(total, 1e-6)
    return out if work == size else upsample(out, size)


def streaks(rng: np.random.Generator, size: int, along: int, across: int, vertical: bool) -> np.ndarray:
    """Noise stretched along one axis: fibres and grain."""
    across = min(across, size // 2)
    grid = rng.standard_normal((along, across) if vertical else (across, along)).astype(np.float32)
    return upsample(grid, size)


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)


def rotated(size: int, angle_deg: float, cx: float = 0.5, cy: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    x, y = coords(size)
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c


def color(rng: np.random.Generator, rgb: tuple[float, float, float], jitter: float = 0.012) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.normal(0, jitter, 3).astype(np.float32), 0, 1)


def coverage(signed_distance: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased inside-coverage of a shape from its signed distance (negative inside, image units)."""
    return np.clip(0.5 - signed_distance * size, 0, 1).astype(np.float32)
