"""Pages of test images, ROWS_PER_PAGE a page: input, ground truth, anomaly map, binary prediction."""
from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from common import UserError, printable

from .layout import (
    HEAT_ALPHA,
    HEAT_CMAP,
    PAGE_SIZE,
    ROWS_PER_PAGE,
    ZOOM_CAP,
    ZOOM_COLOURS,
    crop_boxes,
    fmt,
    image_axes,
    inches,
    outline,
    page,
    show,
)
from .load import Category
from .pages import footer, title

# Four panels a row across the page, the colour bar on the right; the zoom pages share it.
LEFT, GAP, BAR_SPACE = 0.55, 0.1, 0.8
PANEL_W = (PAGE_SIZE[0] - LEFT - 0.35 - BAR_SPACE - 3 * GAP) / 4
ROW_TITLE, COL_TITLE, ROW_GAP = 0.2, 0.17, 0.28


def _grey_panel(shape: tuple[int, int]) -> np.ndarray:
    return np.full((*shape, 3), 0.6, dtype=np.float32)


def image_file(path: str, ckpt: Path) -> Path | None:
    """The test image a scores.npz names, or None. Older files hold paths relative to where training
    ran: those are tried from here, then from the experiment folder and each folder above it."""
    name = Path(path)
    if name.is_absolute():
        return name if name.is_file() else None
    ckpt = ckpt.absolute()
    for base in (Path.cwd(), ckpt, *ckpt.parents):
        if (base / name).is_file():
            return base / name
    return None


def missing_images(cats: Sequence[Category], ckpt: Path) -> tuple[int, int, str]:
    """(images not found, images shown, the first missing path) over what the image pages will show."""
    shown = [str(cat.paths[i]) for cat in cats for i in cat.order]
    missing = [path for path in shown if image_file(path, ckpt) is None]
    return len(missing), len(shown), printable(missing[0]) if missing else ""


def input_image(path: str, cat: Category, ckpt: Path) -> tuple[np.ndarray, str | None]:
    """(H, W, 3) float image in [0, 1] as the model saw it, or a grey panel and why."""
    from datasets.base import center_crop_box, read_image  # imports torch: only when an image is drawn

    shape = cat.maps.shape[1:]
    found = image_file(path, ckpt)
    if found is None:
        return _grey_panel(shape), "image not found"
    try:
        image = read_image(found)
    except UserError:
        return _grey_panel(shape), "image unreadable"
    h, w = cat.image_size
    image = image.resize((w, h), Image.BILINEAR)
    top, left, ch, cw = center_crop_box((h, w), cat.crop)
    pixels = np.asarray(image)[top:top + ch, left:left + cw]
    if pixels.shape[:2] != shape:  # cannot happen with matching files; keep the panels aligned anyway
        pixels = np.asarray(Image.fromarray(pixels).resize((shape[1], shape[0]), Image.BILINEAR))
    return pixels.astype(np.float32) / 255.0, None


def heat_overlay(cat: Category, heat: np.ndarray, image: np.ndarray, problem: str | None) -> np.ndarray:
    """The anomaly map on the category's colour scale over the input (alone where the input is missing)."""
    coloured = colormaps[HEAT_CMAP](Normalize(cat.vmin, cat.vmax)(np.nan_to_num(heat, nan=cat.vmin)))
    coloured = coloured[..., :3].astype(np.float32)
    return coloured if problem else (1 - HEAT_ALPHA) * image + HEAT_ALPHA * coloured


def image_page(cat: Category, ckpt: Path, rows: Sequence[int], first_rank: int, shown: int,
               page_no: int, pages: int) -> Figure:
    """One page of the test images `rows` (indices into the category), ranked from `first_rank` of `shown`."""
    h, w = cat.maps.shape[1:]
    fig = page(f"{title(cat)}: test images {first_rank}–{first_rank + len(rows) - 1} of {shown}",
               f"{shown} of {cat.n} test images · defective from the lowest image score up, then good from the "
               "highest down: failures first",
               footer(cat, ckpt), page_no, pages)
    left, gap, panel_w = LEFT, GAP, PANEL_W
    panel_h = float(np.clip(panel_w * h / w, 0.8, 1.85))
    row_title, col_title = ROW_TITLE, COL_TITLE
    row_h = row_title + col_title + panel_h + ROW_GAP
    image_thr = cat.image_threshold
    top = 1.0
    headings = ["input", "ground truth", "anomaly map", f"prediction (score > {fmt(cat.threshold, 3)})"]
    for r, i in enumerate(rows):
        y = top + r * row_h
        label, score, defect = int(cat.labels[i]), float(cat.image_scores[i]), printable(str(cat.defects[i]))
        path = Path(str(cat.paths[i]))
        name = printable(f"{path.parent.name}/{path.name}")  # matplotlib cannot draw undecodable bytes
        verdict = ""
        if image_thr is not None:
            if label == 1 and score <= image_thr:
                verdict = "  ·  missed at the image threshold"
            elif label != 1 and score > image_thr:
                verdict = "  ·  false alarm at the image threshold"
        fig.text(left / PAGE_SIZE[0], 1 - (y + 0.14) / PAGE_SIZE[1],
                 f"{first_rank + r}.  {name}  ·  {defect}  ·  image score {score:.3f}"
                 f"{verdict}", fontsize=8, fontweight="bold", va="baseline",
                 color="#b00000" if verdict else "black")
        image, problem = input_image(str(path), cat, ckpt)
        mask, heat = cat.masks[i], cat.maps[i].astype(np.float32)  # float32: compare with the threshold exactly
        overlay = heat_overlay(cat, heat, image, problem)
        prediction = heat > cat.threshold
        axes = [inches(fig, left + c * (panel_w + gap), y + row_title + col_title, panel_w, panel_h)
                for c in range(4)]
        for ax, heading in zip(axes, headings):
            ax.set_title(heading, fontsize=7, color="0.25", pad=2.5)
        show(axes[0], image, (h, w))
        show(axes[1], image, (h, w))
        if problem:
            for ax in axes[:2]:
                ax.text(0.5, 0.5, f"{problem}:\n{printable(path.name)}", ha="center", va="center", fontsize=6.5,
                        color="0.15", transform=ax.transAxes)
        outline(axes[1], mask)
        if not mask.any():
            axes[1].text(0.03, 0.04, "no defect", transform=axes[1].transAxes, fontsize=6, color="white",
                         bbox=dict(boxstyle="square,pad=0.2", fc="black", alpha=0.5, lw=0))
        show(axes[2], overlay, (h, w))
        axes[3].imshow(prediction.astype(np.uint8), cmap="gray", vmin=0, vmax=1, interpolation="none",
                       extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        image_axes(axes[3])
        outline(axes[3], mask, lw=0.7)
        share = float(prediction.mean())
        axes[3].text(0.97, 0.04, f"{100 * share:.1f}% of pixels", transform=axes[3].transAxes, fontsize=6,
                     ha="right", color="black", bbox=dict(boxstyle="square,pad=0.2", fc="white", alpha=0.75,
                                                          lw=0))
        for ax in (axes[0], axes[3]):
            crop_boxes(ax, cat.zooms.get(int(i), []))
    colour_bar(fig, cat, top + row_title + col_title, (ROWS_PER_PAGE - 1) * row_h + panel_h)
    legend_y = 1 - (top + ROWS_PER_PAGE * row_h + 0.05) / PAGE_SIZE[1]
    caption = (f"Red outline: ground truth. Anomaly map drawn with opacity {HEAT_ALPHA:g} over the input; "
               f"▶ on the colour bar: the threshold. Prediction: pixels with score > {fmt(cat.threshold)} "
               f"({cat.threshold_source}).")
    if any(cat.zooms.get(int(i)) for i in rows):
        caption += (f" Numbered boxes: the crops shown at full resolution on the next pages, one per defect "
                    f"region ({ZOOM_COLOURS['defect']}) and per false alarm, a predicted region "
                    f"touching no defect ({ZOOM_COLOURS['false alarm']}); at most {ZOOM_CAP} an "
                    "image, the largest defects first.")
    fig.text(left / PAGE_SIZE[0], legend_y, textwrap.fill(caption, 150), fontsize=6.5, color="0.3", va="top",
             linespacing=1.4)
    return fig


def colour_bar(fig: Figure, cat: Category, top: float, height: float) -> None:
    """One colour bar for the page, right of the panels: the scale is shared by every anomaly map of the
    category, the threshold marked on it."""
    norm = Normalize(cat.vmin, cat.vmax)
    cmap = colormaps[HEAT_CMAP]
    cax = inches(fig, LEFT + 4 * PANEL_W + 3 * GAP + 0.22, top, 0.12, height)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    bar.outline.set_linewidth(0.4)
    bar.set_label(f"anomaly score (one scale for all {cat.name} test images; ▶ threshold)", fontsize=7)
    if cat.vmin <= cat.threshold <= cat.vmax:  # mark the threshold: a line across the bar, an arrow beside it
        along = cax.get_yaxis_transform()
        cax.plot([0, 1], [cat.threshold] * 2, color="white", lw=2.2, transform=along, solid_capstyle="butt")
        cax.plot([0, 1], [cat.threshold] * 2, color="black", lw=1.0, transform=along, solid_capstyle="butt")
        cax.plot([-0.45], [cat.threshold], marker=">", ms=5, color="black", transform=along, clip_on=False)
