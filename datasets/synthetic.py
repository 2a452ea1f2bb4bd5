"""Seeded synthetic anomaly-segmentation data written in MVTec AD's on-disk layout.

Each category is a procedural texture or an aligned object. Normal images differ by small
nuisances (lighting, sensor noise, texture phase, a pixel or two of object jitter); defective
test images get one defect composited through an alpha map, and the mask written is exactly
`alpha > 0.5` (the soft rim with alpha <= 0.5 is a faint blend outside the mask, like a
hand-drawn MVTec mask that hugs the visible defect).

Every image comes from its own random stream keyed by (seed, category, split, defect, index),
so files are byte-identical across runs (on one machine and library stack: OpenCV's and numpy's
SIMD kernels may differ in the last bit between CPUs), whatever the thread scheduling, and a
defect image can be re-rendered without its defect.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import cv2
import numpy as np
from PIL import Image

from common import UserError, write_json

if TYPE_CHECKING:  # base imports torch, which the generator CLI does not need
    from datasets.base import Splits

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
_DEFECT_CODES = {"scratch": 1, "hole": 2, "stain": 3, "crack": 4, "cut": 5, "missing": 6}
_LOW_CONTRAST_SHARE = 0.3
_MIN_CHANGE = 0.02  # mean |change| inside the mask (~5 grey levels): a masked defect is never invisible
_NOISE_SIGMA = 0.01


# ----------------------------------------------------------------------------- public API

def default_root() -> Path:
    """Cache folder for generated categories; SEMIORTHO_SYNTHETIC overrides it."""
    override = os.environ.get("SEMIORTHO_SYNTHETIC")
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "semiortho" / "synthetic"


def generate_category(root: Path, category: str, *, seed: int = 0, image_size: int = 256,
                      n_train: int = 60, n_test_good: int = 10, n_test_defect: int = 20,
                      grayscale: bool | None = None) -> Path:
    """Write `<root>/<category>` (replacing an earlier synthetic one) and return its path.

    `n_test_defect` is the total number of defective test images, spread evenly over the
    category's defect types (the first types get the remainder). A folder that was not written
    by this generator is never replaced.
    """
    params = _resolve_params(category, seed=seed, image_size=image_size, n_train=n_train,
                             n_test_good=n_test_good, n_test_defect=n_test_defect, grayscale=grayscale)
    target = Path(root) / category
    if target.exists() and not (target / "synthetic.json").is_file():
        raise UserError(f"{target} exists and was not written by the synthetic generator; "
                        "refusing to replace it, use another root")
    return _build_and_publish(Path(root), category, params, replace=True)


def ensure_category(root: Path, category: str, **params) -> Path:
    """Generate `<root>/<category>` if missing, else reuse it when it was made with the same parameters."""
    wanted = _resolve_params(category, **params)
    target = Path(root) / category
    if not target.exists():
        try:
            return _build_and_publish(Path(root), category, wanted, replace=False)
        except FileExistsError:
            pass  # another process published it first: check theirs below
    _check_existing(target, wanted)
    return target


def categories(root: Path | None, args) -> list[str]:
    """Every synthetic category (they are generated on demand, so the root's content does not matter)."""
    return list(CATEGORIES)


def load(root: Path | None, category: str, args) -> Splits:
    """Splits of a synthetic category, generated on first use (defaults unless already on disk).

    A category already generated under `root` (e.g. by tools/make_synthetic.py with other sizes)
    is used as it is, like any dataset root.
    """
    _check_category(category)
    root = Path(root) if root is not None else default_root()
    if not (root / category / "synthetic.json").is_file():
        ensure_category(root, category)
    from datasets import mvtec
    return mvtec.load(root, category, args)


def render_sample(category: str, *, split: str, index: int, defect: str | None = None,
                  seed: int = 0, image_size: int = 256, grayscale: bool | None = None,
                  draw_defect: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """One image as written to disk: (uint8 (H, W) or (H, W, 3), uint8 0/255 mask or None).

    split is "train", "good" or "defect". With draw_defect=False a defect sample is rendered
    with everything but its defect (same nuisances, same noise): the clean reference.
    """
    _check_category(category)
    gray = CATEGORIES[category]["grayscale"] if grayscale is None else grayscale
    image, alpha = _render(category, seed, split, index, defect, image_size, draw_defect)
    mask = None if alpha is None else np.where(alpha > 0.5, 255, 0).astype(np.uint8)
    return _to_uint8(image, gray), mask


# ----------------------------------------------------------------------------- parameters and files

def _check_category(category: str) -> None:
    if category not in CATEGORIES:
        raise UserError(f"unknown synthetic category {category!r}; known: {', '.join(CATEGORIES)}")


def _resolve_params(category: str, *, seed: int = 0, image_size: int = 256, n_train: int = 60,
                    n_test_good: int = 10, n_test_defect: int = 20, grayscale: bool | None = None) -> dict:
    _check_category(category)
    checks = [("seed", seed, 0, 2**63 - 1), ("image_size", image_size, 32, 4096),
              ("n_train", n_train, 1, 100_000), ("n_test_good", n_test_good, 0, 100_000),
              ("n_test_defect", n_test_defect, 0, 100_000)]
    for name, value, low, high in checks:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
            raise UserError(f"synthetic {name} must be an integer in [{low}, {high}], got {value!r}")
    if n_test_good + n_test_defect == 0:
        raise UserError("synthetic data needs at least one test image (n_test_good + n_test_defect > 0)")
    gray = CATEGORIES[category]["grayscale"] if grayscale is None else bool(grayscale)
    return {"version": VERSION, "category": category, "seed": int(seed), "image_size": int(image_size),
            "n_train": int(n_train), "n_test_good": int(n_test_good), "n_test_defect": int(n_test_defect),
            "grayscale": gray}


def _check_existing(target: Path, wanted: dict) -> None:
    try:
        found = json.loads((target / "synthetic.json").read_text())
    except (OSError, ValueError):
        raise UserError(f"{target} exists but has no readable synthetic.json (not made by the generator); "
                        "delete the folder or use another root") from None
    diff = [f"{k}={found.get(k)!r} (wanted {v!r})" for k, v in wanted.items() if found.get(k) != v]
    if diff:
        raise UserError(f"{target} was generated with other parameters: {', '.join(diff)}; "
                        "delete the folder or use another root")


def _defect_counts(category: str, n_test_defect: int) -> dict[str, int]:
    types = CATEGORIES[category]["defects"]
    base, extra = divmod(n_test_defect, len(types))
    return {d: base + (i < extra) for i, d in enumerate(types)}


def _jobs(params: dict) -> list[tuple[str, int, str | None, str, str | None]]:
    """(split, index, defect, image path, mask path) of every file, relative to the category folder."""
    width = lambda n: max(3, len(str(max(n - 1, 0))))  # noqa: E731 - MVTec's 000.png naming
    jobs = [("train", i, None, f"train/good/{i:0{width(params['n_train'])}d}.png", None)
            for i in range(params["n_train"])]
    jobs += [("good", i, None, f"test/good/{i:0{width(params['n_test_good'])}d}.png", None)
             for i in range(params["n_test_good"])]
    for defect, count in _defect_counts(params["category"], params["n_test_defect"]).items():
        for i in range(count):
            name = f"{i:0{width(count)}d}"
            jobs.append(("defect", i, defect, f"test/{defect}/{name}.png", f"ground_truth/{defect}/{name}_mask.png"))
    return jobs


def _write_job(folder: Path, params: dict, job: tuple) -> None:
    split, index, defect, image_path, mask_path = job
    image, mask = render_sample(params["category"], split=split, index=index, defect=defect,
                                seed=params["seed"], image_size=params["image_size"],
                                grayscale=params["grayscale"])
    # compress_level 1: several times faster than the default at 1024 px, files ~15% larger
    Image.fromarray(image).save(folder / image_path, compress_level=1)
    if mask_path is not None:
        Image.fromarray(mask, mode="L").save(folder / mask_path, compress_level=1)


def _build_and_publish(root: Path, category: str, params: dict, *, replace: bool) -> Path:
    """Render into a hidden sibling folder, then rename it into place: a crash leaves no category."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / category
    # one level down, so that a leftover of a killed run has no train/good a loader could take
    # for a category
    scratch = _sibling(target, "tmp")
    tmp = scratch / category
    try:
        jobs = _jobs(params)
        folders = {"train/good", "test/good"} | {str(Path(p).parent) for job in jobs for p in job[3:] if p}
        for folder in sorted(folders):
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        _run_jobs(lambda job: _write_job(tmp, params, job), jobs)
        write_json(tmp / "synthetic.json", params)  # written last: it marks the folder complete
        _publish(tmp, target, replace)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _sibling(target: Path, suffix: str) -> Path:
    """A new hidden folder beside `target`; unlike mkdtemp it honours the umask (a shared cache stays readable)."""
    folder = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{suffix}"
    folder.mkdir()
    return folder


def _run_jobs(work: Callable[[tuple], None], jobs: list[tuple]) -> None:
    # numpy, OpenCV and zlib release the GIL, so threads overlap rendering and PNG encoding;
    # every job has its own random stream, so the output does not depend on the scheduling
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(8, cpus)
    if workers <= 1 or len(jobs) < 4:
        for job in jobs:
            work(job)
        return
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(work, jobs):
            pass


def _publish(tmp: Path, target: Path, replace: bool) -> None:
    if not target.exists():
        try:
            os.rename(tmp, target)
            return
        except OSError:
            if not target.exists():
                raise
    if not replace:
        raise FileExistsError(target)
    trash = _sibling(target, "old")
    os.rename(target, trash / "old")
    os.rename(tmp, target)
    shutil.rmtree(trash, ignore_errors=True)


# ----------------------------------------------------------------------------- rendering core

@dataclass
class Scene:
    image: np.ndarray       # (H, W, C) float32 in [0, 1], before lighting and sensor noise
    background: np.ndarray  # what a missing part reveals, broadcastable to image
    region: np.ndarray      # (H, W) float32: where defects may sit (1 for textures, coverage for objects)
    cavity: np.ndarray | None = None  # what a hole reveals; None: the background (textures)


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
    scene = _RENDERERS[category](scene_rng, size)
    clean, alpha = scene.image, None
    if split == "defect":
        alpha = _apply_defect(_rng(seed, category, split, defect, index, 1), scene, defect, size)
    image = scene.image if draw_defect else clean
    # lighting and noise come after the defect: the defect is lit like the rest, and the clean
    # reference shares exactly the same nuisances
    return _finish(scene_rng, image, size), alpha


def _finish(rng: np.random.Generator, image: np.ndarray, size: int) -> np.ndarray:
    x, y = _coords(size)
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


# ----------------------------------------------------------------------------- noise helpers

def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in [0, 1], as a (1, W) row and an (H, 1) column (broadcast, not materialised)."""
    t = ((np.arange(size, dtype=np.float32) + 0.5) / size)
    return t[None, :], t[:, None]


def _upsample(small: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(small.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)


def _fbm(rng: np.random.Generator, size: int, base: int = 4, octaves: int = 5, gain: float = 0.5) -> np.ndarray:
    """Fractal value noise, roughly zero-mean, unit-ish amplitude; resolution independent in look."""
    finest = base * 2 ** (octaves - 1)
    work = min(size, finest * 4)  # sum the octaves at a modest resolution, upsample once
    out = np.zeros((work, work), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = base * 2 ** o
        grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
        if cells * 2 <= size:  # finer than the pixel grid would alias; still drawn so streams stay aligned
            out += amp * _upsample(grid, work)
            total += amp
        amp *= gain
    out /= max(total, 1e-6)
    return out if work == size else _upsample(out, size)


def _streaks(rng: np.random.Generator, size: int, along: int, across: int, vertical: bool) -> np.ndarray:
    """Noise stretched along one axis: fibres and grain."""
    across = min(across, size // 2)
    grid = rng.standard_normal((along, across) if vertical else (across, along)).astype(np.float32)
    return _upsample(grid, size)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)


def _rotated(size: int, angle_deg: float, cx: float = 0.5, cy: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    x, y = _coords(size)
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c


def _color(rng: np.random.Generator, rgb: tuple[float, float, float], jitter: float = 0.012) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.normal(0, jitter, 3).astype(np.float32), 0, 1)


# ----------------------------------------------------------------------------- textures

def _weave(rng: np.random.Generator, size: int) -> Scene:
    threads = 22
    u, v = _rotated(size, float(rng.normal(0, 0.5)))
    u = u * threads + float(rng.uniform(0, 2))  # the plain weave repeats every two threads
    v = v * threads + float(rng.uniform(0, 2))
    i, j = np.floor(u), np.floor(v)
    fu, fv = u - i, v - j
    warp_on_top = np.mod(i + j, 2) == 0
    # each thread is a rounded ridge, bulging where it passes over the crossing one
    warp = np.sin(np.pi * fu) ** 0.7 * (0.7 + 0.3 * np.sin(np.pi * fv))
    weft = np.sin(np.pi * fv) ** 0.7 * (0.7 + 0.3 * np.sin(np.pi * fu))
    lut_w, lut_f = rng.normal(1, 0.05, 64).astype(np.float32), rng.normal(1, 0.05, 64).astype(np.float32)
    fib_w = _streaks(rng, size, 6, size // 3, vertical=True)
    fib_f = _streaks(rng, size, 6, size // 3, vertical=False)
    shade_w = warp * lut_w[np.mod(i, 64).astype(np.int64)] * (1 + 0.12 * fib_w)
    shade_f = weft * lut_f[np.mod(j, 64).astype(np.int64)] * (1 + 0.12 * fib_f)
    top = np.where(warp_on_top, shade_w, shade_f)[..., None]
    warp_col, weft_col = _color(rng, (0.62, 0.50, 0.36)), _color(rng, (0.56, 0.46, 0.34))
    col = np.where(warp_on_top[..., None], warp_col, weft_col)
    gap = np.float32(0.10)
    image = gap + (col - gap) * top
    background = np.full((1, 1, 3), 0.06, np.float32) + 0.02 * _fbm(rng, size, 8, 3)[..., None]
    return Scene(image.astype(np.float32), background, np.ones((size, size), np.float32))


def _marble(rng: np.random.Generator, size: int) -> Scene:
    x, y = _coords(size)
    angle = math.radians(35 + float(rng.normal(0, 4)))
    along = x * math.cos(angle) + y * math.sin(angle)
    turb = _fbm(rng, size, 2, 6, 0.5)
    s = np.sin(along * 2 * math.pi * 2 + 3.5 * turb + float(rng.uniform(0, 2 * math.pi)))
    strength = np.clip(0.6 + 0.8 * _fbm(rng, size, 2, 3), 0, 1)  # veins fade in and out
    veins = (1 - np.abs(s)) ** 6 * strength
    fine = _fbm(rng, size, 4, 6, 0.6)
    s2 = np.sin((x * math.cos(angle + 1.2) + y * math.sin(angle + 1.2)) * 2 * math.pi * 3 + 5 * fine)
    thin = (1 - np.abs(s2)) ** 14 * np.clip(_fbm(rng, size, 3, 3), 0, 1)
    base, vein = _color(rng, (0.88, 0.87, 0.84)), _color(rng, (0.40, 0.45, 0.44))
    mottle = (1 + 0.05 * _fbm(rng, size, 6, 5))[..., None]
    t = np.clip(0.75 * veins + 0.35 * thin, 0, 1)[..., None]
    image = (base * (1 - t) + vein * t) * mottle
    background = np.full((1, 1, 3), 0.25, np.float32)
    return Scene(image.astype(np.float32), background, np.ones((size, size), np.float32))


def _plank(rng: np.random.Generator, size: int) -> Scene:
    x, y = _coords(size)
    warp = _fbm(rng, size, 2, 4, 0.5)
    g = x * 11 + 0.9 * warp + 0.25 * y + float(rng.uniform(0, 1))
    ring = np.mod(g, 1)
    late = _smoothstep(0.55, 0.8, ring) * (1 - _smoothstep(0.9, 1.0, ring))  # dark late-wood band
    fibres = _streaks(rng, size, 4, size // 2, vertical=True)
    pores = _streaks(rng, size, 24, size // 2, vertical=True)
    t = np.clip(0.6 * late + 0.08 * fibres + 0.05 * np.maximum(pores, 0), 0, 1)[..., None]
    light, dark = _color(rng, (0.80, 0.62, 0.42)), _color(rng, (0.55, 0.36, 0.21))
    image = light * (1 - t) + dark * t
    background = np.full((1, 1, 3), 0.12, np.float32) * np.array([1.3, 1.0, 0.8], np.float32)
    return Scene(image.astype(np.float32), background, np.ones((size, size), np.float32))


def _mesh(rng: np.random.Generator, size: int) -> Scene:
    wires, half = 12, 0.16  # wire half width as a fraction of the wire period
    u, v = _rotated(size, float(rng.normal(0, 0.7)))
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
    bg = 0.14 + 0.03 * _fbm(rng, size, 4, 4)
    # the lower wire dips at a crossing, so it is darker there
    dip_v = np.where(vertical_on_top, 1.0, 0.75 + 0.25 * np.clip(np.abs(v - j - 0.5) / 0.5, 0, 1))
    dip_h = np.where(vertical_on_top, 0.75 + 0.25 * np.clip(np.abs(u - i - 0.5) / 0.5, 0, 1), 1.0)
    metal = 0.62 + 0.04 * _fbm(rng, size, 16, 3)
    shade_v = metal * (0.45 + 0.55 * round_v) * dip_v
    shade_h = metal * (0.45 + 0.55 * round_h) * dip_h
    image = bg * (1 - cov_v_vis - cov_h_vis) + shade_v * cov_v_vis + shade_h * cov_h_vis
    return Scene(image[..., None].astype(np.float32), bg[..., None].astype(np.float32),
                 np.ones((size, size), np.float32))


# ----------------------------------------------------------------------------- objects

def _coverage(signed_distance: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased inside-coverage of a shape from its signed distance (negative inside, image units)."""
    return np.clip(0.5 - signed_distance * size, 0, 1).astype(np.float32)


def _washer(rng: np.random.Generator, size: int) -> Scene:
    x, y = _coords(size)
    cx, cy = (0.5 + rng.normal(0, 0.004, 2)).tolist()
    dx, dy = x - cx, y - cy
    r = np.sqrt(dx * dx + dy * dy) + 1e-6
    r_out, r_in = 0.36 * (1 + float(rng.normal(0, 0.004))), 0.155
    obj = _coverage(r - r_out, size) * _coverage(r_in - r, size)
    # concentric machining marks: a random radial profile
    profile = rng.standard_normal(512).astype(np.float32)
    marks = np.interp(r.ravel(), np.linspace(0, 0.5, 512), np.convolve(profile, np.ones(3) / 3, "same"))
    marks = marks.reshape(r.shape).astype(np.float32)
    light = (-dx - dy) / (r * np.sqrt(2))  # light from the top left, on the radial normal
    bevel_out = _smoothstep(r_out - 0.035, r_out - 0.01, r)
    bevel_in = 1 - _smoothstep(r_in + 0.008, r_in + 0.03, r)
    face = 0.62 + 0.04 * marks + 0.05 * _fbm(rng, size, 4, 3)
    shade = face * (1 - bevel_out - bevel_in) + (0.6 + 0.32 * light) * bevel_out + (0.6 - 0.32 * light) * bevel_in
    steel = _color(rng, (0.80, 0.80, 0.84), 0.008)
    bg = (0.10 + 0.02 * _fbm(rng, size, 8, 4))[..., None] * np.array([1.0, 1.0, 1.1], np.float32)
    shadow = 1 - 0.35 * _coverage(np.sqrt((dx - 0.012) ** 2 + (dy - 0.012) ** 2) - r_out - 0.01, size // 8 or 1)
    background = bg * shadow[..., None]
    image = background * (1 - obj[..., None]) + (shade[..., None] * steel) * obj[..., None]
    pit = np.full((1, 1, 3), 0.07, np.float32)
    return Scene(image.astype(np.float32), background.astype(np.float32), obj, pit)


def _stadium(a: np.ndarray, b: np.ndarray, half_length: float, radius: float) -> np.ndarray:
    return np.sqrt(np.maximum(np.abs(a) - (half_length - radius), 0) ** 2 + b ** 2) - radius


def _caplet(rng: np.random.Generator, size: int) -> Scene:
    cx, cy = (0.5 + rng.normal(0, 0.004, 2)).tolist()
    a, b = _rotated(size, float(rng.normal(0, 0.6)), cx, cy)
    half, radius = 0.34, 0.12
    d = _stadium(a, b, half, radius)
    obj = _coverage(d, size)
    depth = np.clip(-d / radius, 0, 1)  # 0 at the rim, 1 on the axis: a cylinder-like profile
    z = np.sqrt(1 - (1 - depth) ** 2)
    spec = np.exp(-((b + 0.045) / 0.018) ** 2) * _smoothstep(0, 0.3, depth)
    left, right = _color(rng, (0.55, 0.13, 0.10)), _color(rng, (0.93, 0.85, 0.62))
    col = np.where((a < 0)[..., None], left, right)
    seam = 1 - 0.35 * np.exp(-(a / 0.004) ** 2)
    # printed code on the light half: three dark dashes, aligned with the part
    ink = np.zeros_like(depth)
    for k in range(3):
        ink = np.maximum(ink, _coverage(_stadium(a - (0.08 + 0.07 * k), b, 0.025, 0.009), size))
    shade = (0.55 + 0.45 * z) * seam
    body = col * shade[..., None] * (1 - 0.75 * ink[..., None]) + 0.5 * spec[..., None]
    bg = (0.80 + 0.02 * _fbm(rng, size, 6, 4))[..., None] * np.array([1.0, 1.0, 0.97], np.float32)
    shadow = 1 - 0.25 * _coverage(_stadium(a - 0.01, b - 0.015, half + 0.01, radius + 0.01), size // 10 or 1)
    background = bg * shadow[..., None]
    image = background * (1 - obj[..., None]) + body * obj[..., None]
    pit = np.array([[[0.25, 0.12, 0.08]]], np.float32)  # the powder inside, seen through the shell
    return Scene(image.astype(np.float32), background.astype(np.float32), obj, pit)


def _bolt(rng: np.random.Generator, size: int) -> Scene:
    cx, cy = (0.5 + rng.normal(0, 0.004, 2)).tolist()
    a, b = _rotated(size, float(rng.normal(0, 0.6)), cx, cy)
    pitch = 0.028
    head = _coverage(np.maximum(np.abs(a + 0.30) - 0.07, np.abs(b) - 0.15), size)
    ridge = 0.5 + 0.5 * np.cos(2 * np.pi * (a / pitch + 0.35 * b / 0.07))
    taper = np.clip((0.36 - a) / 0.05, 0.35, 1)  # a chamfered tip
    half_width = (0.058 + 0.008 * (0.5 + 0.5 * np.cos(2 * np.pi * a / pitch))) * taper
    shaft = _coverage(np.maximum(np.abs(b) - half_width, np.maximum(-0.23 - a, a - 0.36)), size)
    obj = np.maximum(head, shaft)
    z_shaft = np.sqrt(np.clip(1 - (b / np.maximum(half_width, 1e-3)) ** 2, 0, 1))
    shaft_shade = (0.30 + 0.35 * z_shaft) * (0.65 + 0.35 * ridge)
    facet = np.where(np.abs(b) < 0.05, 0.62, np.where(b < 0, 0.5, 0.36))  # hex flats, lit from above
    head_shade = facet * (1 - 0.25 * _smoothstep(0.055, 0.07, np.abs(a + 0.30)))
    metal = np.where(head > shaft, head_shade, shaft_shade) * (1 + 0.05 * _fbm(rng, size, 8, 3))
    bg = 0.78 + 0.02 * _fbm(rng, size, 6, 4)
    image = bg * (1 - obj) + metal * obj
    pit = np.full((1, 1, 1), 0.08, np.float32)
    return Scene(image[..., None].astype(np.float32), bg[..., None].astype(np.float32), obj, pit)


_RENDERERS: dict[str, Callable[[np.random.Generator, int], Scene]] = {
    "weave": _weave, "marble": _marble, "plank": _plank, "mesh": _mesh,
    "washer": _washer, "caplet": _caplet, "bolt": _bolt,
}


# ----------------------------------------------------------------------------- defects

_Drawn = tuple[np.ndarray, np.ndarray]  # (the defect layer, like scene.image; its alpha map (H, W))


def _apply_defect(rng: np.random.Generator, scene: Scene, defect: str, size: int) -> np.ndarray:
    """Composite one visible defect into scene.image (retrying draws that miss or vanish); return its alpha."""
    for _ in range(30):
        low = rng.random() < _LOW_CONTRAST_SHARE
        layer, alpha = _DEFECTS[defect](rng, scene, size, low)
        alpha = (alpha * scene.region).astype(np.float32)
        inside = alpha > 0.5
        if inside.sum() < 4:
            continue  # e.g. a scratch that fell off a small object: draw again
        change = np.abs(layer - scene.image).mean(axis=2)[inside].mean()
        if change >= _MIN_CHANGE:
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
    alpha = canvas.astype(np.float32) / 255
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


_DEFECTS = {"scratch": _scratch, "crack": _crack, "hole": _hole, "stain": _stain, "cut": _cut, "missing": _missing}
