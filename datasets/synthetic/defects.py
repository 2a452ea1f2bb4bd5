"""Defects composited into a scene through an alpha map: scratch, crack, hole, stain, cut, missing.

A defect is drawn as a full layer plus its alpha; apply_defect keeps only draws that land inside the
scene's region and change it visibly, so a masked defect is never invisible.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from datasets.synthetic.scenes import Scene

LOW_CONTRAST_SHARE = 0.3
MIN_CHANGE = 0.02  # mean |change| inside the mask (~5 grey levels): a masked defect is never invisible


_Drawn = tuple[np.ndarray, np.ndarray]  # (the defect layer, like scene.image; its alpha map (H, W))


def apply_defect(rng: np.random.Generator, scene: Scene, defect: str, size: int) -> np.ndarray:
    """Composite one visible defect into scene.image (retrying draws that miss or vanish); return its alpha."""
    for _ in range(30):
        low = rng.random() < LOW_CONTRAST_SHARE
        layer, alpha = _DEFECTS[defect](rng, scene, size, low)
        alpha = (alpha * scene.region).astype(np.float32)
        inside = alpha > 0.5
        if inside.sum() < 4:
            continue  # e.g. a scratch that fell off a small object: draw again
        change = np.abs(layer - scene.image).mean(axis=2)[inside].mean()
        if change >= MIN_CHANGE:
            a = alpha[..., None]
            scene.image = (scene.image * (1 - a) + layer * a).astype(np.float32)
            return alpha
    raise RuntimeError(f"could not place a visible {defect} defect")


def _place(rng: np.random.Generator, scene: Scene, size: int, margin: float = 0.1) -> np.ndarray:
    """A random point (x, y) in pixels, well inside the defect region."""
    lo, hi = int(margin * size), int((1 - margin) * size)
    inner = scene.region[lo:hi, lo:hi] > 0.99
    candidates = np.flatnonzero(inner)
    if len(candidates) == 0:
        return np.array([size / 2, size / 2])
    k = candidates[rng.integers(len(candidates))]
    row, col = divmod(int(k), hi - lo)
    return np.array([col + lo + 0.5, row + lo + 0.5])


def _blob(rng: np.random.Generator, size: int, center: np.ndarray, radius: float,
          irregular: float, soft: float) -> np.ndarray:
    """Alpha of an irregular disc: radius modulated by a few random harmonics, soft edge `soft` px."""
    return _soft(_blob_distance(rng, size, center, radius, irregular), soft)


def _soft(distance: np.ndarray, soft: float) -> np.ndarray:
    return np.clip(0.5 - distance / max(soft, 0.5), 0, 1).astype(np.float32)


def _blob_distance(rng: np.random.Generator, size: int, center: np.ndarray, radius: float,
                   irregular: float) -> np.ndarray:
    """Approximate signed distance in pixels (negative inside) to an irregular disc's outline.

    The outline's radius is kept within [0.2, 2] x `radius`, so only a window around the centre
    is computed (a large saving at 1024 px); pixels outside it get a large positive distance.
    """
    harmonics = [(irregular / k * float(rng.normal()), float(rng.uniform(0, 2 * math.pi))) for k in range(2, 6)]
    cx, cy = float(center[0]), float(center[1])
    reach = int(2 * radius + 0.02 * size + 4)
    x0, x1 = max(0, int(cx) - reach), min(size, int(cx) + reach + 1)
    y0, y1 = max(0, int(cy) - reach), min(size, int(cy) + reach + 1)
    x = np.arange(x0, x1, dtype=np.float32)[None, :] + (0.5 - cx)
    y = np.arange(y0, y1, dtype=np.float32)[:, None] + (0.5 - cy)
    theta = np.arctan2(y, x)
    edge = np.ones_like(theta)
    for k, (amplitude, phase) in enumerate(harmonics, start=2):
        edge += amplitude * np.cos(k * theta + phase)
    distance = np.full((size, size), 4 * size, np.float32)
    distance[y0:y1, x0:x1] = np.sqrt(x * x + y * y) - radius * np.clip(edge, 0.2, 2.0)
    return distance


def _stroke(size: int, points: np.ndarray, width: float, soft: float) -> np.ndarray:
    """Alpha of a polyline `width` px wide, anti-aliased and blurred by `soft` px."""
    canvas = np.zeros((size, size), np.uint8)
    pts = np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)  # 4 bits of sub-pixel precision
    cv2.polylines(canvas, [pts], False, 255, thickness=max(1, int(round(width))), lineType=cv2.LINE_AA, shift=4)
    alpha: np.ndarray = canvas.astype(np.float32) / 255
    if soft > 0.3:
        alpha = cv2.GaussianBlur(alpha, (0, 0), soft)
        alpha = np.clip(alpha * 1.6, 0, 1)  # blurring thins the core; restore a solid centre line
    return alpha


def _curve(rng: np.random.Generator, start: np.ndarray, length: float, bend: float) -> np.ndarray:
    t = np.linspace(0, 1, 40)[:, None]
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    wobble = bend * length * np.sin(np.pi * t * rng.uniform(0.5, 1.5) + rng.uniform(0, np.pi))
    return start + (t - 0.5) * length * direction + wobble * normal


def _scratch(rng: np.random.Generator, scene: Scene, size: int, low: bool) -> _Drawn:
    pts = _curve(rng, _place(rng, scene, size), rng.uniform(0.12, 0.35) * size, rng.uniform(0, 0.08))
    alpha = _stroke(size, pts, max(1.5, rng.uniform(0.004, 0.009) * size), 0.0015 * size)
    strength = float(rng.uniform(0.06, 0.12) if low else rng.uniform(0.2, 0.4))
    img = scene.image
    lighter = rng.random() < 0.6
    layer = img + strength * (1 - img) if lighter else img * (1 - strength)
    return layer, alpha


def _hairline(width: int) -> Callable[[np.random.Generator, Scene, int, bool], _Drawn]:
    """A scratch `width` pixels wide whatever the image size, unblurred: the thin defects a resize to
    256 x 256 erases (a 2 px line at 1024 is half a pixel there)."""
    def draw(rng: np.random.Generator, scene: Scene, size: int, low: bool) -> _Drawn:
        pts = _curve(rng, _place(rng, scene, size), rng.uniform(0.15, 0.4) * size, rng.uniform(0, 0.05))
        alpha = _stroke(size, pts, width, 0.0)
        strength = float(rng.uniform(0.12, 0.2) if low else rng.uniform(0.3, 0.45))
        return scene.image * (1 - strength), alpha
    return draw


def _crack(rng: np.random.Generator, scene: Scene, size: int, low: bool) -> _Drawn:
    steps = rng.integers(12, 25)
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.22, steps))
    step = rng.uniform(0.008, 0.014) * size
    moves = np.stack([np.cos(heading), np.sin(heading)], 1) * step
    pts = _place(rng, scene, size) + np.vstack([[0, 0], np.cumsum(moves, 0)]) - moves.sum(0) / 2
    width = max(1.2, rng.uniform(0.003, 0.006) * size)
    alpha = _stroke(size, pts, width, 0.0015 * size)
    fork = int(rng.integers(2, steps - 1))  # one short branch, as real cracks have
    branch = pts[fork] + np.cumsum(np.stack([np.cos(heading[:6] + 0.8), np.sin(heading[:6] + 0.8)], 1) * step * 0.7, 0)
    alpha = np.maximum(alpha, _stroke(size, np.vstack([pts[fork], branch]), max(1.2, width * 0.7), 0.0015 * size))
    darken = float(rng.uniform(0.25, 0.4) if low else rng.uniform(0.6, 0.85))
    return scene.image * (1 - darken), alpha


def _hole(rng: np.random.Generator, scene: Scene, size: int, low: bool) -> _Drawn:
    radius = max(2.5, rng.uniform(0.02, 0.055) * size)
    alpha = _blob(rng, size, _place(rng, scene, size), radius, 0.35, 0.004 * size)
    depth = float(rng.uniform(0.3, 0.5) if low else rng.uniform(0.8, 1.0))
    # a hole shows what is behind, with a little of the surface's light at the rim
    behind = scene.background if scene.cavity is None else scene.cavity
    layer = scene.image * (1 - depth) + behind * depth
    return np.broadcast_to(layer, scene.image.shape), alpha


def _stain(rng: np.random.Generator, scene: Scene, size: int, low: bool) -> _Drawn:
    radius = max(3.0, rng.uniform(0.035, 0.09) * size)
    alpha = _blob(rng, size, _place(rng, scene, size), radius, 0.5, 0.01 * size)
    strength = float(rng.uniform(0.1, 0.18) if low else rng.uniform(0.3, 0.55))
    tint: np.float32 | np.ndarray  # one grey factor, or an RGB one
    if scene.image.shape[2] == 1:
        tint = np.float32(1 - strength if rng.random() < 0.7 else 1 + strength)
    else:  # a coloured contaminant: dark brown, rust, or a blue-ish dye
        hue = [(0.45, 0.3, 0.15), (0.75, 0.35, 0.1), (0.25, 0.35, 0.6)][rng.integers(3)]
        tint = (1 - strength) + strength * np.asarray(hue, np.float32) * 1.2
    return np.clip(scene.image * tint, 0, 1), alpha


def _cut(rng: np.random.Generator, scene: Scene, size: int, low: bool) -> _Drawn:
    """Cut-and-paste: a patch of the same surface from elsewhere, misaligned with its surroundings."""
    shift = rng.uniform(0.08, 0.4, 2) * size * rng.choice([-1, 1], 2)
    source = np.roll(scene.image, (int(shift[1]), int(shift[0])), axis=(0, 1))
    if not low and rng.random() < 0.5:
        source = np.ascontiguousarray(source.transpose(1, 0, 2))  # a patch laid down at 90 degrees
    radius = max(3.0, rng.uniform(0.04, 0.09) * size)
    distance = _blob_distance(rng, size, _place(rng, scene, size), radius, 0.25)
    if not low:  # the cut edge catches dirt: a thin dark seam just inside the outline
        seam = np.exp(-((distance + 0.004 * size) / (0.003 * size)) ** 2)[..., None]
        source = source * (1 - 0.4 * seam)
    return source, _soft(distance, 0.003 * size)


def _missing(rng: np.random.Generator, scene: Scene, size: int, low: bool) -> _Drawn:
    """A bite out of the part's outline, revealing the background."""
    rim = np.flatnonzero((scene.region > 0.3) & (scene.region < 0.7))
    row, col = divmod(int(rim[rng.integers(len(rim))]), size)
    radius = max(3.0, rng.uniform(0.03, 0.07) * size)
    alpha = _blob(rng, size, np.array([col + 0.5, row + 0.5]), radius, 0.3, 0.003 * size)
    return np.broadcast_to(scene.background, scene.image.shape), alpha


_DEFECTS = {"scratch": _scratch, "crack": _crack, "hole": _hole, "stain": _stain, "cut": _cut, "missing": _missing,
            "hairline2": _hairline(2), "hairline4": _hairline(4), "hairline6": _hairline(6)}
