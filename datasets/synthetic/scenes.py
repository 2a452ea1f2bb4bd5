"""The defect-free scenes: procedural textures and aligned objects, one renderer per category.

A renderer draws everything from the generator it is given, in a fixed order (see noise.py), and
returns a Scene: the image before lighting and sensor noise plus what defects need to know about it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from datasets.synthetic.noise import color, coords, coverage, fbm, rotated, smoothstep, streaks


@dataclass
class Scene:
    image: np.ndarray       # (H, W, C) float32 in [0, 1], before lighting and sensor noise
    background: np.ndarray  # what a missing part reveals, broadcastable to image
    region: np.ndarray      # (H, W) float32: where defects may sit (1 for textures, coverage for objects)
    cavity: np.ndarray | None = None  # what a hole reveals; None: the background (textures)


# ----------------------------------------------------------------------------- textures

def _weave(rng: np.random.Generator, size: int) -> Scene:
    threads = 22
    u, v = rotated(size, float(rng.normal(0, 0.5)))
    u = u * threads + float(rng.uniform(0, 2))  # the plain weave repeats every two threads
    v = v * threads + float(rng.uniform(0, 2))
    i, j = np.floor(u), np.floor(v)
    fu, fv = u - i, v - j
    warp_on_top = np.mod(i + j, 2) == 0
    # each thread is a rounded ridge, bulging where it passes over the crossing one
    warp = np.sin(np.pi * fu) ** 0.7 * (0.7 + 0.3 * np.sin(np.pi * fv))
    weft = np.sin(np.pi * fv) ** 0.7 * (0.7 + 0.3 * np.sin(np.pi * fu))
    lut_w, lut_f = rng.normal(1, 0.05, 64).astype(np.float32), rng.normal(1, 0.05, 64).astype(np.float32)
    fib_w = streaks(rng, size, 6, size // 3, vertical=True)
    fib_f = streaks(rng, size, 6, size // 3, vertical=False)
    shade_w = warp * lut_w[np.mod(i, 64).astype(np.int64)] * (1 + 0.12 * fib_w)
    shade_f = weft * lut_f[np.mod(j, 64).astype(np.int64)] * (1 + 0.12 * fib_f)
    top = np.where(warp_on_top, shade_w, shade_f)[..., None]
    warp_col, weft_col = color(rng, (0.62, 0.50, 0.36)), color(rng, (0.56, 0.46, 0.34))
    col = np.where(warp_on_top[..., None], warp_col, weft_col)
    gap = np.float32(0.10)
    image = gap + (col - gap) * top
    background = np.full((1, 1, 3), 0.06, np.float32) + 0.02 * fbm(rng, size, 8, 3)[..., None]
    return Scene(image.astype(np.float32), background, np.ones((size, size), np.float32))


def _marble(rng: np.random.Generator, size: int) -> Scene:
    x, y = coords(size)
    angle = math.radians(35 + float(rng.normal(0, 4)))
    along = x * math.cos(angle) + y * math.sin(angle)
    turb = fbm(rng, size, 2, 6, 0.5)
    s = np.sin(along * 2 * math.pi * 2 + 3.5 * turb + float(rng.uniform(0, 2 * math.pi)))
    strength = np.clip(0.6 + 0.8 * fbm(rng, size, 2, 3), 0, 1)  # veins fade in and out
    veins = (1 - np.abs(s)) ** 6 * strength
    fine = fbm(rng, size, 4, 6, 0.6)
    s2 = np.sin((x * math.cos(angle + 1.2) + y * math.sin(angle + 1.2)) * 2 * math.pi * 3 + 5 * fine)
    thin = (1 - np.abs(s2)) ** 14 * np.clip(fbm(rng, size, 3, 3), 0, 1)
    base, vein = color(rng, (0.88, 0.87, 0.84)), color(rng, (0.40, 0.45, 0.44))
    mottle = (1 + 0.05 * fbm(rng, size, 6, 5))[..., None]
    t = np.clip(0.75 * veins + 0.35 * thin, 0, 1)[..., None]
    image = (base * (1 - t) + vein * t) * mottle
    background = np.full((1, 1, 3), 0.25, np.float32)
    return Scene(image.astype(np.float32), background, np.ones((size, size), np.float32))


def _plank(rng: np.random.Generator, size: int) -> Scene:
    x, y = coords(size)
    warp = fbm(rng, size, 2, 4, 0.5)
    g = x * 11 + 0.9 * warp + 0.25 * y + float(rng.uniform(0, 1))
    ring = np.mod(g, 1)
    late = smoothstep(0.55, 0.8, ring) * (1 - smoothstep(0.9, 1.0, ring))  # dark late-wood band
    fibres = streaks(rng, size, 4, size // 2, vertical=True)
    pores = streaks(rng, size, 24, size // 2, vertical=True)
    t = np.clip(0.6 * late + 0.08 * fibres + 0.05 * np.maximum(pores, 0), 0, 1)[..., None]
    light, dark = color(rng, (0.80, 0.62, 0.42)), color(rng, (0.55, 0.36, 0.21))
    image = light * (1 - t) + dark * t
    background = np.full((1, 1, 3), 0.12, np.float32) * np.array([1.3, 1.0, 0.8], np.float32)
    return Scene(image.astype(np.float32), background, np.ones((size, size), np.float32))


def _sheet(rng: np.random.Generator, size: int) -> Scene:
    """Brushed steel: fine streaks along the brushing and a faint mottle; plain enough that a hairline
    scratch is the only thing of its width."""
    brushed = streaks(rng, size, 48, size // 2, vertical=False)
    mottle = fbm(rng, size, 3, 4, 0.5)
    grey = 0.55 + 0.05 * brushed + 0.03 * mottle
    image = np.repeat(grey[..., None], 3, axis=2)
    background = np.full((1, 1, 3), 0.1, np.float32)
    return Scene(image.astype(np.float32), background, np.ones((size, size), np.float32))


def _mesh(rng: np.random.Generator, size: int) -> Scene:
    wires, half = 12, 0.16  # wire half width as a fraction of the wire period
    u, v = rotated(size, float(rng.normal(0, 0.7)))
    u = u * wires + float(rng.uniform(0, 2))
    v = v * wires + float(rng.uniform(0, 2))
    i, j = np.floor(u), np.floor(v)
    du, dv = np.abs(u - i - 0.5) / half, np.abs(v - j - 0.5) / half
    aa = wires / size / half  # one pixel in units of the half width, for anti-aliased edges
    cov_v, cov_h = np.clip((1 - du) / aa + 0.5, 0, 1), np.clip((1 - dv) / aa + 0.5, 0, 1)
    round_v, round_h = np.sqrt(np.clip(1 - du ** 2, 0, 1)), np.sqrt(np.clip(1 - dv ** 2, 0, 1))
    vertical_on_top = np.mod(i + j, 2) == 0
    on_top_v = np.where(vertical_on_top, 1.0, 1 - cov_h)  # the upper wire hides the lower one
    cov_v_vis = cov_v * on_top_v
    cov_h_vis = cov_h * (1 - cov_v_vis)
    bg = 0.14 + 0.03 * fbm(rng, size, 4, 4)
    # the lower wire dips at a crossing, so it is darker there
    dip_v = np.where(vertical_on_top, 1.0, 0.75 + 0.25 * np.clip(np.abs(v - j - 0.5) / 0.5, 0, 1))
    dip_h = np.where(vertical_on_top, 0.75 + 0.25 * np.clip(np.abs(u - i - 0.5) / 0.5, 0, 1), 1.0)
    metal = 0.62 + 0.04 * fbm(rng, size, 16, 3)
    shade_v = metal * (0.45 + 0.55 * round_v) * dip_v
    shade_h = metal * (0.45 + 0.55 * round_h) * dip_h
    image = bg * (1 - cov_v_vis - cov_h_vis) + shade_v * cov_v_vis + shade_h * cov_h_vis
    return Scene(image[..., None].astype(np.float32), bg[..., None].astype(np.float32),
                 np.ones((size, size), np.float32))


# ----------------------------------------------------------------------------- objects

def _washer(rng: np.random.Generator, size: int) -> Scene:
    x, y = coords(size)
    cx, cy = (0.5 + rng.normal(0, 0.004, 2)).tolist()
    dx, dy = x - cx, y - cy
    r = np.sqrt(dx * dx + dy * dy) + 1e-6
    r_out, r_in = 0.36 * (1 + float(rng.normal(0, 0.004))), 0.155
    obj = coverage(r - r_out, size) * coverage(r_in - r, size)
    # concentric machining marks: a random radial profile
    profile = rng.standard_normal(512).astype(np.float32)
    marks = np.interp(r.ravel(), np.linspace(0, 0.5, 512), np.convolve(profile, np.ones(3) / 3, "same"))
    marks = marks.reshape(r.shape).astype(np.float32)
    light = (-dx - dy) / (r * np.sqrt(2))  # light from the top left, on the radial normal
    bevel_out = smoothstep(r_out - 0.035, r_out - 0.01, r)
    bevel_in = 1 - smoothstep(r_in + 0.008, r_in + 0.03, r)
    face = 0.62 + 0.04 * marks + 0.05 * fbm(rng, size, 4, 3)
    shade = face * (1 - bevel_out - bevel_in) + (0.6 + 0.32 * light) * bevel_out + (0.6 - 0.32 * light) * bevel_in
    steel = color(rng, (0.80, 0.80, 0.84), 0.008)
    bg = (0.10 + 0.02 * fbm(rng, size, 8, 4))[..., None] * np.array([1.0, 1.0, 1.1], np.float32)
    shadow = 1 - 0.35 * coverage(np.sqrt((dx - 0.012) ** 2 + (dy - 0.012) ** 2) - r_out - 0.01, size // 8 or 1)
    background = bg * shadow[..., None]
    image = background * (1 - obj[..., None]) + (shade[..., None] * steel) * obj[..., None]
    pit = np.full((1, 1, 3), 0.07, np.float32)
    return Scene(image.astype(np.float32), background.astype(np.float32), obj, pit)


def _stadium(a: np.ndarray, b: np.ndarray, half_length: float, radius: float) -> np.ndarray:
    return np.sqrt(np.maximum(np.abs(a) - (half_length - radius), 0) ** 2 + b ** 2) - radius


def _caplet(rng: np.random.Generator, size: int) -> Scene:
    cx, cy = (0.5 + rng.normal(0, 0.004, 2)).tolist()
    a, b = rotated(size, float(rng.normal(0, 0.6)), cx, cy)
    half, radius = 0.34, 0.12
    d = _stadium(a, b, half, radius)
    obj = coverage(d, size)
    depth = np.clip(-d / radius, 0, 1)  # 0 at the rim, 1 on the axis: a cylinder-like profile
    z = np.sqrt(1 - (1 - depth) ** 2)
    spec = np.exp(-((b + 0.045) / 0.018) ** 2) * smoothstep(0, 0.3, depth)
    left, right = color(rng, (0.55, 0.13, 0.10)), color(rng, (0.93, 0.85, 0.62))
    col = np.where((a < 0)[..., None], left, right)
    seam = 1 - 0.35 * np.exp(-(a / 0.004) ** 2)
    # printed code on the light half: three dark dashes, aligned with the part
    ink = np.zeros_like(depth)
    for k in range(3):
        ink = np.maximum(ink, coverage(_stadium(a - (0.08 + 0.07 * k), b, 0.025, 0.009), size))
    shade = (0.55 + 0.45 * z) * seam
    body = col * shade[..., None] * (1 - 0.75 * ink[..., None]) + 0.5 * spec[..., None]
    bg = (0.80 + 0.02 * fbm(rng, size, 6, 4))[..., None] * np.array([1.0, 1.0, 0.97], np.float32)
    shadow = 1 - 0.25 * coverage(_stadium(a - 0.01, b - 0.015, half + 0.01, radius + 0.01), size // 10 or 1)
    background = bg * shadow[..., None]
    image = background * (1 - obj[..., None]) + body * obj[..., None]
    pit = np.array([[[0.25, 0.12, 0.08]]], np.float32)  # the powder inside, seen through the shell
    return Scene(image.astype(np.float32), background.astype(np.float32), obj, pit)


def _bolt(rng: np.random.Generator, size: int) -> Scene:
    cx, cy = (0.5 + rng.normal(0, 0.004, 2)).tolist()
    a, b = rotated(size, float(rng.normal(0, 0.6)), cx, cy)
    pitch = 0.028
    head = coverage(np.maximum(np.abs(a + 0.30) - 0.07, np.abs(b) - 0.15), size)
    ridge = 0.5 + 0.5 * np.cos(2 * np.pi * (a / pitch + 0.35 * b / 0.07))
    taper = np.clip((0.36 - a) / 0.05, 0.35, 1)  # a chamfered tip
    half_width = (0.058 + 0.008 * (0.5 + 0.5 * np.cos(2 * np.pi * a / pitch))) * taper
    shaft = coverage(np.maximum(np.abs(b) - half_width, np.maximum(-0.23 - a, a - 0.36)), size)
    obj = np.maximum(head, shaft)
    z_shaft = np.sqrt(np.clip(1 - (b / np.maximum(half_width, 1e-3)) ** 2, 0, 1))
    shaft_shade = (0.30 + 0.35 * z_shaft) * (0.65 + 0.35 * ridge)
    facet = np.where(np.abs(b) < 0.05, 0.62, np.where(b < 0, 0.5, 0.36))  # hex flats, lit from above
    head_shade = facet * (1 - 0.25 * smoothstep(0.055, 0.07, np.abs(a + 0.30)))
    metal = np.where(head > shaft, head_shade, shaft_shade) * (1 + 0.05 * fbm(rng, size, 8, 3))
    bg = 0.78 + 0.02 * fbm(rng, size, 6, 4)
    image = bg * (1 - obj) + metal * obj
    pit = np.full((1, 1, 1), 0.08, np.float32)
    return Scene(image[..., None].astype(np.float32), bg[..., None].astype(np.float32), obj, pit)


RENDERERS: dict[str, Callable[[np.random.Generator, int], Scene]] = {
    "weave": _weave, "marble": _marble, "plank": _plank, "mesh": _mesh, "sheet": _sheet,
    "washer": _washer, "caplet": _caplet, "bolt": _bolt,
}
