"""PDF report of a trained experiment, read from what train.py saved (never re-runs the model).

    python visualizer.py --ckpt runs/exp1 --category carpet
    python visualizer.py --ckpt runs/exp1                      # every category, one PDF

Reads `<ckpt>/<dataset>/<category>/scores.npz` and `metrics.json`; see `-h` for the page layout.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # headless; must come before anything imports pyplot

import numpy as np
from PIL import Image

from common import UserError, atomic_write, one_line

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Drawing needs matplotlib's figure and PDF modules, scipy and tqdm, and reading images needs torch (via
# datasets.base): all imported where used, so that -h and the error messages come back at once.

ROWS_PER_PAGE = 4  # test images per image page
CONTENTS_ROWS = 36  # categories per contents page
DEFAULT_MAX_IMAGES = 40
PAGE_SIZE = (8.27, 11.69)  # A4 portrait, inches
DPI = 150  # only used for the few resampled rasters; image panels are embedded at their own size
PANEL_MAX_PX = 192  # image panels are downsampled to at most this many pixels a side (~120 dpi as drawn)
CURVE_POINTS = 1000  # points per drawn curve, whatever the exact curve's length
HEAT_ALPHA = 0.5
HEAT_CMAP = "jet"
GT_COLOUR = "#ff2020"
REQUIRED_ARRAYS = ("maps", "masks", "labels", "image_scores", "defects", "paths")
GOOD = "good"

STYLE = {
    "pdf.fonttype": 42,  # TrueType: vector, selectable text that journals accept (Type 3 is often refused)
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "lines.linewidth": 1.2,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "image.interpolation": "none",
    "savefig.dpi": DPI,
}

HELP = f"""\
Pages
  --category all (default): a contents page (a table of every category with its
  metrics and pages), then each category as below, all in one PDF.
  Per category: 1 summary page (metrics table, pixel and image ROC curves, PRO curve up
  to the FPR limit with the integrated area shaded, histogram of image scores for good
  images and each defect type), then ceil(min(test images, --max-images) / {ROWS_PER_PAGE}) image
  pages of {ROWS_PER_PAGE} test images each (about 0.4 MB a page; panels stored at <= {PANEL_MAX_PX} px).
  Each image row: input; ground truth outlined on the input; anomaly map over the input
  (one colour scale per category, min to max of its test maps, colour bar on the right);
  binary prediction (score > threshold) with the ground-truth outline. Image order:
  defective images from the lowest image score up (missed defects first), then good
  images from the highest score down (false alarms first).

Threshold
  --threshold T if given (applies to every category); else the pixel threshold calibrated
  on normal validation images (metrics.json "thresholds"); else the threshold at the FPR
  limit on the test set's normal pixels.

Output
  default: <ckpt>/<dataset>/<category>/report.pdf for one category and
  <ckpt>/<dataset>/report.pdf for all; an existing report is replaced atomically.
  Errors (missing folders or files, corrupt files) print one line and exit with 2."""


# ----------------------------------------------------------------------------- loading


@dataclass
class Category:
    dataset: str
    name: str
    folder: Path
    info: dict[str, Any]  # metrics.json
    maps: np.ndarray  # float16 (N, H, W), as saved: converted to float32 where computed with
    masks: np.ndarray  # bool (N, H, W)
    labels: np.ndarray  # int (N,)
    image_scores: np.ndarray  # float (N,)
    defects: np.ndarray  # str (N,)
    paths: np.ndarray  # str (N,)
    threshold: float = 0.0
    threshold_source: str = ""
    vmin: float = 0.0
    vmax: float = 1.0
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.info["image_size"]
        return int(h), int(w)

    @property
    def crop(self) -> tuple[int, int] | None:
        crop = self.info.get("crop")
        return None if crop is None else (int(crop[0]), int(crop[1]))

    @property
    def fpr_limit(self) -> float:
        return float(self.info["fpr_limit"])

    @property
    def image_threshold(self) -> float | None:
        value = (self.info.get("thresholds") or {}).get("image")
        return None if value is None else float(value)


def load_category(folder: Path, dataset: str, name: str) -> Category:
    """Read and check one category folder; every problem is a UserError naming the file."""
    npz_path, json_path = folder / "scores.npz", folder / "metrics.json"
    for path in (npz_path, json_path):
        if not path.is_file():
            raise UserError(f"{path} is missing: {folder} is not a finished train.py category "
                            "(train it again, or pick another with --category)")
    try:
        info = json.loads(json_path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {json_path}: {one_line(e)}") from None
    if not isinstance(info, dict):
        raise UserError(f"{json_path} is not a JSON object")
    for key in ("image_size", "fpr_limit"):
        if key not in info:
            raise UserError(f"{json_path} has no {key!r}: not written by train.py?")
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            missing = [k for k in REQUIRED_ARRAYS if k not in npz.files]
            if missing:
                raise UserError(f"{npz_path} lacks {', '.join(missing)}: not written by train.py?")
            arrays = {k: npz[k] for k in REQUIRED_ARRAYS}
    except UserError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise UserError(f"{npz_path} is corrupt ({one_line(e)}); re-run train.py for {name}") from None

    maps, masks = arrays["maps"], arrays["masks"]
    if maps.ndim != 3 or masks.shape != maps.shape:
        raise UserError(f"{npz_path}: maps {maps.shape} and masks {masks.shape} must both be (N, H, W)")
    n = maps.shape[0]
    if n == 0:
        raise UserError(f"{npz_path} holds no test images")
    for key in ("labels", "image_scores", "defects", "paths"):
        if arrays[key].shape != (n,):
            raise UserError(f"{npz_path}: {key} has shape {arrays[key].shape}, expected ({n},)")
    try:
        image_size = tuple(int(v) for v in info["image_size"])
        crop = info.get("crop")
        crop = None if crop is None else tuple(int(v) for v in crop)
        float(info["fpr_limit"])
        if len(image_size) != 2 or (crop is not None and len(crop) != 2):
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"{json_path}: image_size, crop or fpr_limit is malformed") from None
    if (crop or image_size) != maps.shape[1:]:
        raise UserError(f"{folder}: maps are {maps.shape[1]}x{maps.shape[2]} but metrics.json says "
                        f"image_size {list(image_size)}, crop {crop and list(crop)}; "
                        "scores.npz and metrics.json come from different runs")
    return Category(
        dataset=dataset, name=name, folder=folder, info=info,
        maps=maps.astype(np.float16, copy=False), masks=masks > 0, labels=arrays["labels"].astype(int),
        image_scores=arrays["image_scores"].astype(np.float64),
        defects=arrays["defects"].astype(str), paths=arrays["paths"].astype(str),
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _looks_like_category(folder: Path) -> bool:
    return any((folder / f).exists() for f in ("scores.npz", "metrics.json", "model.pt"))


def resolve(ckpt: Path, dataset: str | None, category: str) -> tuple[str, list[tuple[str, Path]]]:
    """(dataset, [(category, folder), ...]) selected by the command line."""
    if not ckpt.is_dir():
        raise UserError(f"--ckpt folder {ckpt} does not exist")
    if _looks_like_category(ckpt):
        raise UserError(f"--ckpt {ckpt} is a category folder; pass the experiment folder "
                        f"(--ckpt {ckpt.parent.parent} --dataset {ckpt.parent.name} --category {ckpt.name})")
    if any(_looks_like_category(c) for c in _subfolders(ckpt)):
        raise UserError(f"--ckpt {ckpt} is a dataset folder; pass the experiment folder "
                        f"(--ckpt {ckpt.parent} --dataset {ckpt.name})")
    if dataset is None:
        candidates = _subfolders(ckpt)
        with_results = [d for d in candidates if any(_looks_like_category(c) for c in _subfolders(d))]
        candidates = with_results or candidates
        if not candidates:
            raise UserError(f"--ckpt {ckpt} holds no <dataset>/<category>/ folders: nothing trained there yet")
        if len(candidates) > 1:
            raise UserError(f"--ckpt {ckpt} holds several datasets ({', '.join(d.name for d in candidates)}); "
                            "choose one with --dataset")
        dataset = candidates[0].name
    dataset_dir = ckpt / dataset
    if not dataset_dir.is_dir():
        found = ", ".join(d.name for d in _subfolders(ckpt)) or "none"
        raise UserError(f"no dataset folder {dataset_dir} (found: {found})")
    if category == "all":
        folders = [c for c in _subfolders(dataset_dir) if _looks_like_category(c)]
        if not folders:
            raise UserError(f"no category folders with results in {dataset_dir}")
        return dataset, [(c.name, c) for c in folders]
    folder = dataset_dir / category
    if not folder.is_dir():
        found = ", ".join(c.name for c in _subfolders(dataset_dir)) or "none"
        raise UserError(f"no category folder {folder} (found: {found})")
    return dataset, [(category, folder)]


# ----------------------------------------------------------------------------- numbers


def image_order(labels: np.ndarray, scores: np.ndarray, limit: int | None = None) -> np.ndarray:
    """Defective images by ascending image score, then good images by descending score.

    With a `limit`, at most half of it goes to defective images when there are good ones to fill
    the rest, so the worst false alarms are shown as well as the worst misses.
    """
    index = np.arange(len(labels))
    bad, good = index[labels == 1], index[labels != 1]
    bad = bad[np.argsort(scores[bad], kind="stable")]
    good = good[np.argsort(-scores[good], kind="stable")]
    if limit is not None:
        n_bad = min(len(bad), max(limit - len(good), (limit + 1) // 2))
        bad, good = bad[:n_bad], good[:limit - n_bad]
    return np.concatenate([bad, good]).astype(int)


def choose_threshold(cat: Category, override: float | None) -> tuple[float, str]:
    """(pixel threshold, where it comes from); a pixel is anomalous when its score is > threshold."""
    if override is not None:
        return float(override), "given with --threshold"
    thresholds = cat.info.get("thresholds") or {}
    if thresholds.get("pixel") is not None:
        source = "calibrated on normal validation images"
        if thresholds.get("val_fpr") is not None:
            source += f" at FPR {float(thresholds['val_fpr']):g}"
        return float(thresholds["pixel"]), source
    normal = cat.maps[~cat.masks].astype(np.float32)
    normal = normal[np.isfinite(normal)]
    if normal.size == 0:
        return _finite_range(cat.maps)[1], "maximum score (no defect-free test pixels)"
    return (float(np.quantile(normal, 1.0 - cat.fpr_limit)),
            f"at FPR {cat.fpr_limit:g} on the test set's normal pixels (no calibrated threshold saved)")


def _finite_range(maps: np.ndarray) -> tuple[float, float]:
    finite = maps[np.isfinite(maps)]  # float16 is fine: min and max are exact
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _bin_index(values: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    index = np.floor((np.nan_to_num(values, nan=lo) - lo) / (hi - lo) * bins)
    return np.clip(index, 0, bins - 1).astype(np.int64)


def binned_curves(maps: np.ndarray, masks: np.ndarray, bins: int = CURVE_POINTS) -> dict[str, np.ndarray]:
    """Pixel ROC and MVTec PRO curves from a `bins`-bin histogram of scores, for drawing only.

    Returns fpr, tpr, pro, each starting at (0, 0) and ordered by decreasing threshold. Regions are
    the 8-connected components of each mask; PRO is the mean over regions of the covered fraction.
    """
    from scipy import ndimage

    lo, hi = _finite_range(maps)
    neg = np.zeros(bins, dtype=np.int64)
    pos = np.zeros(bins, dtype=np.int64)
    region_counts = []  # one (regions, bins) array per image
    structure = np.ones((3, 3), dtype=bool)
    for score, mask in zip(maps, masks):
        b = _bin_index(score.astype(np.float32), lo, hi, bins)
        neg += np.bincount(b[~mask], minlength=bins)
        pos += np.bincount(b[mask], minlength=bins)
        if mask.any():
            labels, count = ndimage.label(mask, structure=structure)
            counts = np.bincount(labels[mask] * bins + b[mask], minlength=(count + 1) * bins)
            region_counts.append(counts.reshape(count + 1, bins)[1:])
    down = slice(None, None, -1)  # cumulate from the highest bin: predicted = score above threshold
    fp = np.concatenate([[0], np.cumsum(neg[down])])
    tp = np.concatenate([[0], np.cumsum(pos[down])])
    fpr = fp / max(fp[-1], 1)
    tpr = tp / max(tp[-1], 1)
    if region_counts:
        regions = np.concatenate(region_counts)
        covered = np.cumsum(regions[:, down], axis=1) / regions.sum(axis=1, keepdims=True)
        pro = np.concatenate([[0.0], covered.mean(axis=0)])
    else:
        pro = np.zeros_like(fpr)
    return {"fpr": fpr, "tpr": tpr, "pro": pro}


def pro_curve_for_drawing(cat: Category, binned: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, str]:
    """(fpr, pro, note) up to the FPR limit: the metrics package's exact curve, else the binned one."""
    fpr, pro, note = binned["fpr"], binned["pro"], f"{CURVE_POINTS}-bin histogram"
    try:
        from metrics import pro_curve  # exact MVTec PRO curve
    except ImportError:
        pass
    else:
        try:
            exact = pro_curve(cat.maps.astype(np.float32), cat.masks.astype(np.uint8), cat.fpr_limit)
        except Exception as e:  # a drawing must not sink the report: say so on the page instead
            note += f" (metrics.pro_curve failed: {one_line(e)[:60]})"
        else:
            if len(exact[0]) > 1:
                fpr, pro = np.asarray(exact[0], float), np.asarray(exact[1], float)
                note = "exact (metrics.pro_curve)"
    return (*resample_curve(fpr, pro, cat.fpr_limit), note)


def resample_curve(x: np.ndarray, y: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """A monotone curve on CURVE_POINTS points of [0, limit], so the drawing stays small."""
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    grid = np.linspace(0.0, limit, CURVE_POINTS)
    return grid, np.interp(grid, x, y)


def image_roc(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    positive = labels == 1
    if positive.all() or not positive.any():
        return None
    order = np.argsort(-scores, kind="stable")
    ranked, y = scores[order], positive[order]
    last = np.r_[np.diff(ranked) != 0, True]  # one point per distinct score
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    return np.r_[0, fp / fp[-1]], np.r_[0, tp / tp[-1]]


# ----------------------------------------------------------------------------- images


def _grey_panel(shape: tuple[int, int]) -> np.ndarray:
    return np.full((*shape, 3), 0.6, dtype=np.float32)


def input_image(path: str, cat: Category) -> tuple[np.ndarray, str | None]:
    """(H, W, 3) float image in [0, 1] as the model saw it, or a grey panel and why."""
    from datasets.base import center_crop_box, read_image  # imports torch: only when drawing
    shape = cat.maps.shape[1:]
    if not Path(path).is_file():
        return _grey_panel(shape), "image not found"
    try:
        image = read_image(Path(path))
    except UserError:
        return _grey_panel(shape), "image unreadable"
    h, w = cat.image_size
    image = image.resize((w, h), Image.BILINEAR)
    top, left, ch, cw = center_crop_box((h, w), cat.crop)
    pixels = np.asarray(image)[top:top + ch, left:left + cw]
    if pixels.shape[:2] != shape:  # cannot happen with matching files; keep the panels aligned anyway
        pixels = np.asarray(Image.fromarray(pixels).resize((shape[1], shape[0]), Image.BILINEAR))
    return pixels.astype(np.float32) / 255.0, None


def panel_pixels(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB at most PANEL_MAX_PX a side, reduced to 256 colours: the PDF stores it indexed."""
    image = Image.fromarray(np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8))
    scale = PANEL_MAX_PX / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.LANCZOS)
    image = image.quantize(colors=256, method=Image.MEDIANCUT)
    return np.asarray(image.convert("RGB"))


# ----------------------------------------------------------------------------- drawing helpers


def _inches(fig: Figure, left: float, top: float, width: float, height: float):
    """Axes placed in inches from the top-left corner of the page."""
    page_w, page_h = fig.get_size_inches()
    return fig.add_axes((left / page_w, 1 - (top + height) / page_h, width / page_w, height / page_h))


def _page(header: str, subheader: str, footer_left: str, page_no: int, pages: int) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=PAGE_SIZE)
    page_w, page_h = PAGE_SIZE
    fig.text(0.55 / page_w, 1 - 0.45 / page_h, header, fontsize=12, fontweight="bold", va="baseline")
    if subheader:
        fig.text(0.55 / page_w, 1 - 0.68 / page_h, subheader, fontsize=8, color="0.3", va="baseline")
    fig.text(0.55 / page_w, 0.3 / page_h, footer_left, fontsize=6.5, color="0.45")
    fig.text(1 - 0.5 / page_w, 0.3 / page_h, f"page {page_no} of {pages}", fontsize=6.5, color="0.45",
             ha="right")
    return fig


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return " × ".join(str(v) for v in value)
    return str(value)


def _table(ax, title: str, rows: Sequence[tuple[str, str]]) -> None:
    """A booktabs-style two-column table filling `ax`: bold title, rules above and below, values right."""
    ax.set_axis_off()
    line = 1.0 / (len(rows) + 2.2)
    ax.text(0, 1, title, fontweight="bold", fontsize=9, va="top", transform=ax.transAxes)
    y = 1 - 1.35 * line
    ax.plot([0, 1], [y, y], color="black", lw=0.8, transform=ax.transAxes, clip_on=False)
    for label, value in rows:
        y -= line
        ax.text(0, y + line * 0.45, label, va="center", transform=ax.transAxes)
        ax.text(1, y + line * 0.45, value, ha="right", va="center", transform=ax.transAxes)
    ax.plot([0, 1], [y, y], color="black", lw=0.8, transform=ax.transAxes, clip_on=False)


def _defect_colours(names: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = [c for i, c in enumerate(colormaps["tab10"].colors) if i != 7]  # 7 is grey: kept for good
    colours = {GOOD: "0.55"}
    for i, name in enumerate(n for n in names if n != GOOD):
        colours[name] = palette[i % len(palette)]
    return colours


def _outline(ax, mask: np.ndarray, colour: str = GT_COLOUR, lw: float = 0.9) -> None:
    """Ground-truth region boundaries as vector lines, closed also where a region touches the border."""
    if not mask.any():
        return
    padded = np.pad(mask.astype(np.float32), 1)
    h, w = mask.shape
    ax.contour(np.arange(-1, w + 1), np.arange(-1, h + 1), padded, levels=[0.5], colors=[colour],
               linewidths=lw)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


def _image_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_linewidth(0.4)
        spine.set_color("0.6")


def _show(ax, rgb: np.ndarray, shape: tuple[int, int]) -> None:
    h, w = shape
    ax.imshow(panel_pixels(rgb), extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="none")
    _image_axes(ax)


# ----------------------------------------------------------------------------- pages


def _title(cat: Category) -> str:
    return f"{cat.dataset} / {cat.name}"


def _run_line(info: dict[str, Any]) -> str:
    """model · approx · k · eps · sizes · seed, as far as metrics.json has them."""
    parts = [str(info[key]) for key in ("model", "approx") if info.get(key) is not None]
    if info.get("k") is not None:
        parts.append(f"k = {info['k']}")
    if info.get("eps") is not None:
        parts.append(f"eps = {float(info['eps']):g}")
    size = "input " + _fmt(info.get("image_size"))
    if info.get("crop"):
        size += f", crop {_fmt(info['crop'])}"
    parts.append(size)
    if info.get("seed") is not None:
        parts.append(f"seed {info['seed']}")
    return "  ·  ".join(parts)


def _footer(cat: Category, ckpt: Path) -> str:
    try:
        where = cat.folder.relative_to(ckpt)
    except ValueError:
        where = cat.folder
    return f"{ckpt} / {where} / scores.npz, metrics.json"


def contents_pages(cats: list[Category], ckpt: Path, first_pages: list[int], pages: int) -> list[Figure]:
    figures = []
    chunks = [cats[i:i + CONTENTS_ROWS] for i in range(0, len(cats), CONTENTS_ROWS)]
    for c, chunk in enumerate(chunks):
        fig = _page(f"Anomaly segmentation report: {cats[0].dataset}",
                    f"{len(cats)} {'category' if len(cats) == 1 else 'categories'} · experiment {ckpt} · "
                    f"model {cats[0].info.get('model', '—')}",
                    "AU-PRO: MVTec definition, integrated up to each category's FPR limit and divided by it",
                    c + 1, pages)
        columns = ["test (good/def.)", "image AUROC", "pixel AUROC", "AU-PRO", "page"]
        rows = []
        for cat in chunk:
            m = cat.info.get("metrics", {})
            i = cats.index(cat)
            rows.append((cat.name, f"{cat.n} ({(cat.labels != 1).sum()}/{(cat.labels == 1).sum()})",
                         _fmt(m.get("image_auroc"), 3), _fmt(m.get("pixel_auroc"), 3), _fmt(m.get("aupro"), 3),
                         str(first_pages[i])))
        if c == len(chunks) - 1 and len(cats) > 1:
            def mean(key: str) -> str:
                values = [cat.info.get("metrics", {}).get(key) for cat in cats]
                values = [float(v) for v in values if v is not None]
                return _fmt(float(np.mean(values)), 3) if values else "—"
            rows.append(("mean", "", mean("image_auroc"), mean("pixel_auroc"), mean("aupro"), ""))
        height = 0.22 * (len(rows) + 3.4)
        ax = _inches(fig, 0.55, 1.0, 6.2, height)
        _table_wide(ax, "Contents", rows, ["category", *columns], bold_last=len(rows) > len(chunk))
        figures.append(fig)
    return figures


def _table_wide(ax, title: str, rows: Sequence[Sequence[str]], columns: Sequence[str], bold_last: bool) -> None:
    """Multi-column table: first column left-aligned, the rest right-aligned at fixed positions."""
    ax.set_axis_off()
    line = 1.0 / (len(rows) + 3.4)  # title, header and a margin
    right = [0.42, 0.56, 0.70, 0.84, 1.0][-(len(columns) - 1):]
    ax.text(0, 1, title, fontweight="bold", fontsize=9, va="top", transform=ax.transAxes)
    y = 1 - 1.35 * line
    ax.plot([0, 1], [y, y], color="black", lw=0.8, transform=ax.transAxes, clip_on=False)
    y -= line
    ax.text(0, y + line * 0.45, columns[0], va="center", color="0.35", transform=ax.transAxes)
    for x, name in zip(right, columns[1:]):
        ax.text(x, y + line * 0.45, name, ha="right", va="center", color="0.35", transform=ax.transAxes)
    ax.plot([0, 1], [y, y], color="black", lw=0.4, transform=ax.transAxes, clip_on=False)
    for r, row in enumerate(rows):
        last = bold_last and r == len(rows) - 1
        if last:
            ax.plot([0, 1], [y, y], color="black", lw=0.4, transform=ax.transAxes, clip_on=False)
        y -= line
        weight = "bold" if last else "normal"
        ax.text(0, y + line * 0.45, row[0], va="center", fontweight=weight, transform=ax.transAxes)
        for x, value in zip(right, row[1:]):
            ax.text(x, y + line * 0.45, value, ha="right", va="center", fontweight=weight,
                    transform=ax.transAxes)
    ax.plot([0, 1], [y, y], color="black", lw=0.8, transform=ax.transAxes, clip_on=False)


def _timings(seconds: dict[str, Any], most: int = 5) -> list[tuple[str, float]]:
    """metrics.json's "seconds", the metric_* entries summed as one, at most `most` rows and the total."""
    times: dict[str, float] = {}
    for key, value in seconds.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            name = "metrics" if key.startswith("metric") else key.replace("_", " ")
            times[name] = times.get(name, 0.0) + float(value)
    total = times.pop("total", None)
    rows = list(times.items())
    if len(rows) > most:
        rows = rows[:most - 1] + [("other", sum(v for _, v in rows[most - 1:]))]
    return rows + ([("total", total)] if total is not None else [])


def _score_histograms(fig: Figure, cat: Category, top: float) -> None:
    """Image-score histograms, one row per type on shared bins (good on top, and as a grey outline
    behind every defect type), each image's score as a tick below its row."""
    names = sorted(set(cat.defects.tolist()), key=lambda d: (d != GOOD, d))
    colours = _defect_colours(names)
    height = float(np.clip(0.36 * len(names) + 0.3, 1.2, PAGE_SIZE[1] - top - 1.1))
    ax = _inches(fig, 1.45, top, 6.05, height)
    finite = cat.image_scores[np.isfinite(cat.image_scores)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1, int(np.clip(2 * math.sqrt(cat.n), 10, 40)) + 1)
    counts = {name: np.histogram(cat.image_scores[cat.defects == name], bins=bins)[0] for name in names}
    scale = 0.78 / max(1, max(c.max() for c in counts.values()))  # the tallest bar of all: 0.78 of a row
    rows = len(names)
    for r, name in enumerate(names):
        base = rows - 1 - r
        if name != GOOD and GOOD in counts:
            ax.stairs(base + 0.12 + counts[GOOD] * scale, bins, baseline=base + 0.12, color="0.45", lw=0.6,
                      ls=(0, (2, 1.5)))
        ax.stairs(base + 0.12 + counts[name] * scale, bins, baseline=base + 0.12, fill=True,
                  color=colours[name], alpha=0.75 if name != GOOD else 0.6, lw=0)
        values = cat.image_scores[cat.defects == name]
        ax.plot(values, np.full(len(values), base + 0.05), "|", ms=4, mew=0.7, color=colours[name])
        ax.axhline(base, color="0.8", lw=0.4)
    if cat.image_threshold is not None:
        ax.axvline(cat.image_threshold, color="black", lw=0.8, ls="--")
        ax.text(cat.image_threshold, 1.0, " image threshold", transform=ax.get_xaxis_transform(), fontsize=6.5,
                va="bottom")
    ax.set_yticks([rows - 1 - r + 0.4 for r in range(rows)],
                  [f"{name} ({(cat.defects == name).sum()})" for name in names])
    ax.tick_params(axis="y", length=0)
    ax.spines["left"].set_visible(False)
    ax.set(xlim=(bins[0], bins[-1]), ylim=(-0.05, rows), xlabel="image score (max of the anomaly map)")
    ax.set_title("Image scores per type (n); dashed grey: good images, for comparison", pad=12)


def summary_page(cat: Category, ckpt: Path, page_no: int, pages: int) -> Figure:
    info, m = cat.info, cat.info.get("metrics", {})
    limit = cat.fpr_limit
    n_good, n_bad = int((cat.labels != 1).sum()), int((cat.labels == 1).sum())
    fig = _page(f"{_title(cat)}: summary", _run_line(info), _footer(cat, ckpt), page_no, pages)

    results = [
        ("Image AUROC", _fmt(m.get("image_auroc"))),
        ("Pixel AUROC", _fmt(m.get("pixel_auroc"))),
        (f"AU-PRO (MVTec, FPR ≤ {limit:g})", _fmt(m.get("aupro"))),
        (f"PRO, paper's protocol (FPR ≤ {limit:g})", _fmt(m.get("paper_pro"))),
        ("Pixel ROC, paper's protocol", _fmt(m.get("paper_roc"))),
        ("Pixel threshold (score >)", _fmt(cat.threshold)),
    ]
    if cat.image_threshold is not None:
        results.append(("Image threshold (score >)", _fmt(cat.image_threshold)))
    seconds = info.get("seconds") or {}
    run = [
        ("Train / validation images", f"{_fmt(info.get('n_train'))} / {_fmt(info.get('n_val'))}"),
        ("Test images (good / defective)", f"{cat.n} ({n_good} / {n_bad})"),
        ("Thresholds in curves", _fmt(info.get("num_thresholds"))),
    ]
    run += [(f"Time: {name}", f"{value:.1f} s") for name, value in _timings(seconds)]
    height = 0.2 * (max(len(results), len(run)) + 2.2)
    _table(_inches(fig, 0.55, 1.0, 3.35, 0.2 * (len(results) + 2.2)), "Results", results)
    _table(_inches(fig, 4.35, 1.0, 3.35, 0.2 * (len(run) + 2.2)), "Run", run)
    fig.text(0.55 / PAGE_SIZE[0], 1 - (1.0 + height + 0.17) / PAGE_SIZE[1],
             f"Pixel threshold {cat.threshold_source}.", fontsize=7, color="0.3")

    top = 1.0 + height + 0.75
    binned = binned_curves(cat.maps, cat.masks)
    has_defects = bool(cat.masks.any())

    ax = _inches(fig, 0.95, top, 2.9, 2.9)
    ax.plot([0, 1], [0, 1], color="0.75", lw=0.6, ls="--")
    if has_defects:
        fpr, tpr = resample_curve(binned["fpr"], binned["tpr"], 1.0)
        ax.plot(fpr, tpr, color="C0", label=f"pixel (AUROC {_fmt(m.get('pixel_auroc'), 3)})")
    roc = image_roc(cat.labels, cat.image_scores)
    if roc is not None:
        ax.step(*roc, where="post", color="C1", label=f"image (AUROC {_fmt(m.get('image_auroc'), 3)})")
    if has_defects or roc is not None:
        ax.legend(loc="lower right", frameon=False)
    else:
        ax.text(0.5, 0.5, "no defective test images", ha="center", va="center", color="0.4",
                transform=ax.transAxes)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate",
           title="ROC")
    ax.set_aspect("equal")

    ax = _inches(fig, 4.6, top, 2.9, 2.9)
    if has_defects:
        fpr, pro, note = pro_curve_for_drawing(cat, binned)
        ax.fill_between(fpr, pro, color="C2", alpha=0.25, lw=0,
                        label=f"AU-PRO {_fmt(m.get('aupro'), 3)}\n(shaded area / {limit:g})")
        ax.plot(fpr, pro, color="C2")
        ax.legend(loc="lower right", frameon=False)
    else:
        note = ""
        ax.text(0.5, 0.5, "no defective test pixels", ha="center", va="center", color="0.4",
                transform=ax.transAxes)
    ax.set(xlim=(0, limit), ylim=(0, 1.01), xlabel="false positive rate (pixels)",
           ylabel="per-region overlap (PRO)", title=f"PRO up to FPR {limit:g}")
    ax.set_box_aspect(1)

    caption = (f"Legend values from metrics.json. Drawn: pixel ROC from a {CURVE_POINTS}-bin histogram"
               + (f", PRO {note}." if note else "."))
    fig.text(0.95 / PAGE_SIZE[0], 1 - (top + 2.9 + 0.55) / PAGE_SIZE[1], caption, fontsize=6.5, color="0.3",
             va="baseline")

    _score_histograms(fig, cat, top + 2.9 + 1.15)
    return fig


def image_page(cat: Category, ckpt: Path, rows: Sequence[int], first_rank: int, shown: int,
               page_no: int, pages: int) -> Figure:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    h, w = cat.maps.shape[1:]
    fig = _page(f"{_title(cat)}: test images {first_rank}–{first_rank + len(rows) - 1} of {shown}",
                f"{shown} of {cat.n} test images · defective from the lowest image score up, then good from the "
                "highest down: failures first",
                _footer(cat, ckpt), page_no, pages)
    gap, bar_space, left = 0.1, 0.8, 0.55
    panel_w = (PAGE_SIZE[0] - left - 0.35 - bar_space - 3 * gap) / 4
    panel_h = float(np.clip(panel_w * h / w, 0.8, 1.85))
    row_title, col_title, row_gap = 0.2, 0.17, 0.28
    row_h = row_title + col_title + panel_h + row_gap
    norm = Normalize(cat.vmin, cat.vmax)
    cmap = colormaps[HEAT_CMAP]
    image_thr = cat.image_threshold
    top = 1.0
    headings = ["input", "ground truth", "anomaly map", f"prediction (score > {_fmt(cat.threshold, 3)})"]
    for r, i in enumerate(rows):
        y = top + r * row_h
        label, score, defect = int(cat.labels[i]), float(cat.image_scores[i]), str(cat.defects[i])
        path = Path(str(cat.paths[i]))
        verdict = ""
        if image_thr is not None:
            if label == 1 and score <= image_thr:
                verdict = "  ·  missed at the image threshold"
            elif label != 1 and score > image_thr:
                verdict = "  ·  false alarm at the image threshold"
        fig.text(left / PAGE_SIZE[0], 1 - (y + 0.14) / PAGE_SIZE[1],
                 f"{first_rank + r}.  {path.parent.name}/{path.name}  ·  {defect}  ·  image score {score:.3f}"
                 f"{verdict}", fontsize=8, fontweight="bold", va="baseline",
                 color="#b00000" if verdict else "black")
        image, problem = input_image(str(path), cat)
        mask, heat = cat.masks[i], cat.maps[i].astype(np.float32)  # float32: compare with the threshold exactly
        coloured = cmap(norm(np.nan_to_num(heat, nan=cat.vmin)))[..., :3].astype(np.float32)
        overlay = coloured if problem else (1 - HEAT_ALPHA) * image + HEAT_ALPHA * coloured
        prediction = heat > cat.threshold
        axes = [_inches(fig, left + c * (panel_w + gap), y + row_title + col_title, panel_w, panel_h)
                for c in range(4)]
        for ax, heading in zip(axes, headings):
            ax.set_title(heading, fontsize=7, color="0.25", pad=2.5)
        _show(axes[0], image, (h, w))
        _show(axes[1], image, (h, w))
        if problem:
            for ax in axes[:2]:
                ax.text(0.5, 0.5, f"{problem}:\n{path.name}", ha="center", va="center", fontsize=6.5,
                        color="0.15", transform=ax.transAxes)
        _outline(axes[1], mask)
        if not mask.any():
            axes[1].text(0.03, 0.04, "no defect", transform=axes[1].transAxes, fontsize=6, color="white",
                         bbox=dict(boxstyle="square,pad=0.2", fc="black", alpha=0.5, lw=0))
        _show(axes[2], overlay, (h, w))
        axes[3].imshow(prediction.astype(np.uint8), cmap="gray", vmin=0, vmax=1, interpolation="none",
                       extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        _image_axes(axes[3])
        _outline(axes[3], mask, lw=0.7)
        share = float(prediction.mean())
        axes[3].text(0.97, 0.04, f"{100 * share:.1f}% of pixels", transform=axes[3].transAxes, fontsize=6,
                     ha="right", color="black", bbox=dict(boxstyle="square,pad=0.2", fc="white", alpha=0.75,
                                                          lw=0))
    # one colour bar for the page: the scale is shared by every anomaly map of the category
    bar_x = left + 4 * panel_w + 3 * gap + 0.22
    bar_top = top + row_title + col_title
    bar_h = (ROWS_PER_PAGE - 1) * row_h + panel_h
    cax = _inches(fig, bar_x, bar_top, 0.12, bar_h)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    bar.outline.set_linewidth(0.4)
    bar.set_label(f"anomaly score (one scale for all {cat.name} test images; ▶ threshold)", fontsize=7)
    if cat.vmin <= cat.threshold <= cat.vmax:  # mark the threshold: a line across the bar, an arrow beside it
        along = cax.get_yaxis_transform()
        cax.plot([0, 1], [cat.threshold] * 2, color="white", lw=2.2, transform=along, solid_capstyle="butt")
        cax.plot([0, 1], [cat.threshold] * 2, color="black", lw=1.0, transform=along, solid_capstyle="butt")
        cax.plot([-0.45], [cat.threshold], marker=">", ms=5, color="black", transform=along, clip_on=False)
    legend_y = 1 - (top + ROWS_PER_PAGE * row_h + 0.05) / PAGE_SIZE[1]
    caption = (f"Red outline: ground truth. Anomaly map drawn with opacity {HEAT_ALPHA:g} over the input; "
               f"▶ on the colour bar: the threshold. Prediction: pixels with score > {_fmt(cat.threshold)} "
               f"({cat.threshold_source}).")
    fig.text(left / PAGE_SIZE[0], legend_y, textwrap.fill(caption, 150), fontsize=6.5, color="0.3", va="top",
             linespacing=1.4)
    return fig


# ----------------------------------------------------------------------------- report


def image_pages(n_shown: int) -> int:
    return math.ceil(n_shown / ROWS_PER_PAGE)


def prepare(cat: Category, threshold: float | None, max_images: int) -> None:
    cat.threshold, cat.threshold_source = choose_threshold(cat, threshold)
    cat.vmin, cat.vmax = _finite_range(cat.maps)
    cat.order = image_order(cat.labels, cat.image_scores, max_images)


def render(cats: list[Category], ckpt: Path, out: Path, with_contents: bool, progress: bool = True) -> int:
    """Write the report to `out` atomically; returns the page count PdfPages reports."""
    from matplotlib.backends.backend_pdf import PdfPages
    from tqdm import tqdm

    per_cat = [1 + image_pages(len(cat.order)) for cat in cats]
    n_contents = math.ceil(len(cats) / CONTENTS_ROWS) if with_contents else 0
    pages = n_contents + sum(per_cat)
    first_pages = list(np.cumsum([n_contents + 1] + per_cat[:-1]))
    counted = 0

    def write(tmp: str) -> None:
        nonlocal counted
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a report is as readable as any file
        title = f"{cats[0].dataset} {cats[0].name if len(cats) == 1 else 'all categories'}: anomaly report"
        metadata = {"Title": title, "Creator": "visualizer.py (semi-orthogonal embedding)", "CreationDate": None}
        with matplotlib.rc_context(STYLE), PdfPages(tmp, metadata=metadata) as pdf, \
                tqdm(total=pages, unit="page", desc="report", disable=not progress) as bar:
            def emit(fig: Figure) -> None:
                pdf.savefig(fig)
                bar.update()

            if with_contents:
                for fig in contents_pages(cats, ckpt, [int(p) for p in first_pages], pages):
                    emit(fig)
            for cat, first in zip(cats, first_pages):
                page_no = int(first)
                emit(summary_page(cat, ckpt, page_no, pages))
                for p in range(image_pages(len(cat.order))):
                    rows = cat.order[p * ROWS_PER_PAGE:(p + 1) * ROWS_PER_PAGE]
                    page_no += 1
                    emit(image_page(cat, ckpt, rows, p * ROWS_PER_PAGE + 1, len(cat.order), page_no, pages))
            counted = pdf.get_pagecount()

    try:
        atomic_write(out, write)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    if counted != pages:
        raise RuntimeError(f"wrote {counted} pages, expected {pages}")
    return counted


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="visualizer.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="PDF report of a trained experiment from its saved scores.npz and metrics.json "
                    "(the model is not run).", epilog=HELP)
    parser.add_argument("--ckpt", required=True, type=Path,
                        help="experiment folder, the one holding <dataset>/<category>/")
    parser.add_argument("--dataset", help="dataset folder inside --ckpt (default: the only one there)")
    parser.add_argument("--category", default="all", help="category to render, or 'all' (default)")
    parser.add_argument("--out", type=Path, help="PDF to write (default: report.pdf, see below)")
    parser.add_argument("--max-images", type=_non_negative, default=DEFAULT_MAX_IMAGES, metavar="N",
                        help=f"test images shown per category (default {DEFAULT_MAX_IMAGES}; 0: summary only)")
    parser.add_argument("--threshold", type=_finite, metavar="T",
                        help="pixel threshold for the binary predictions (default: see below)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError("must be finite")
    return value


def run(args: argparse.Namespace) -> Path:
    dataset, selected = resolve(args.ckpt, args.dataset, args.category)
    cats = [load_category(folder, dataset, name) for name, folder in selected]  # all checked before writing
    for cat in cats:
        prepare(cat, args.threshold, args.max_images)
    whole = args.category == "all"
    out = args.out or (args.ckpt / dataset / "report.pdf" if whole else selected[0][1] / "report.pdf")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as {out / 'report.pdf'}")
    pages = render(cats, args.ckpt, out, with_contents=whole, progress=not args.no_progress)
    print(f"wrote {out} ({pages} pages)")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except UserError as e:
        print(f"visualizer.py: error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
