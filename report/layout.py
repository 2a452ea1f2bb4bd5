"""Page geometry, style and the drawing pieces every page shares: pages, tables, image panels, outlines."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .regions import Box

# matplotlib is imported where a page is drawn, so that visualizer.py -h and its errors come back at once.

ROWS_PER_PAGE = 4  # test images per image page
CONTENTS_ROWS = 36  # categories per contents page
PAGE_SIZE = (8.27, 11.69)  # A4 portrait, inches
DPI = 150  # only used for the few resampled rasters; image panels are embedded at their own size
PANEL_MAX_PX = 192  # image panels are downsampled to at most this many pixels a side (~120 dpi as drawn)
# Zoomed crops: a test image whose map has a side over ZOOM_FROM_PX gets crops around its defect regions and
# false alarms on pages after its own. Over twice the panel size, the full view shrinks a defect 2-6 px wide
# below 1-3 px; a 256 px map (0.75 times in its panel) stays legible and gets none.
ZOOM_FROM_PX = 2 * PANEL_MAX_PX
ZOOM_CAP = 6  # crops per image: the largest defect regions, then the largest false alarms
ZOOM_MIN_PX = 96  # a crop's smallest side, so that a region is seen with its surroundings
ZOOM_MARGIN = 16  # pixels around a region's bounding box
ZOOM_MAX_PX = 2 * PANEL_MAX_PX  # crops are stored at native resolution up to this many pixels a side
ZOOM_ROWS_PER_PAGE = 4  # crops per zoom page
ZOOM_COLOURS = {"defect": "gold", "false alarm": "cyan"}  # crop boxes by kind (report/regions.py), as named
HEAT_ALPHA = 0.5
HEAT_CMAP = "jet"
GT_COLOUR = "#ff2020"
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


def inches(fig: Figure, left: float, top: float, width: float, height: float) -> Axes:
    """Axes placed in inches from the top-left corner of the page."""
    page_w, page_h = fig.get_size_inches()
    return fig.add_axes((left / page_w, 1 - (top + height) / page_h, width / page_w, height / page_h))


def page(header: str, subheader: str, footer_left: str, page_no: int, pages: int) -> Figure:
    """An empty A4 page with its header, footer and page number."""
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


def fmt(value: Any, digits: int = 4) -> str:
    """A value as a table shows it: — for missing, thousands separators, `digits` decimals."""
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


def table(ax: Axes, title: str, rows: Sequence[tuple[str, str]]) -> None:
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


def table_wide(ax: Axes, title: str, rows: Sequence[Sequence[str]], columns: Sequence[str], bold_last: bool) -> None:
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


def defect_colours(names: Sequence[str]) -> dict[str, Any]:
    """A colour per defect type, grey for good images."""
    from matplotlib import colormaps

    palette = [c for i, c in enumerate(colormaps["tab10"].colors) if i != 7]  # 7 is grey: kept for good
    colours: dict[str, Any] = {GOOD: "0.55"}
    for i, name in enumerate(n for n in names if n != GOOD):
        colours[name] = palette[i % len(palette)]
    return colours


def panel_pixels(rgb: np.ndarray, max_px: int = PANEL_MAX_PX) -> np.ndarray:
    """uint8 RGB at most `max_px` a side, reduced to 256 colours: the PDF stores it indexed."""
    image = Image.fromarray(np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8))
    scale = max_px / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.LANCZOS)
    image = image.quantize(colors=256, method=Image.MEDIANCUT)
    return np.asarray(image.convert("RGB"))


def outline(ax: Axes, mask: np.ndarray, colour: str = GT_COLOUR, lw: float = 0.9) -> None:
    """Ground-truth region boundaries as vector lines, closed also where a region touches the border."""
    if not mask.any():
        return
    padded = np.pad(mask.astype(np.float32), 1)
    h, w = mask.shape
    ax.contour(np.arange(-1, w + 1), np.arange(-1, h + 1), padded, levels=[0.5], colors=[colour],
               linewidths=lw)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


def image_axes(ax: Axes) -> None:
    """No ticks, a thin grey frame."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_linewidth(0.4)
        spine.set_color("0.6")


def show(ax: Axes, rgb: np.ndarray, shape: tuple[int, int], max_px: int = PANEL_MAX_PX) -> None:
    """An (H, W, 3) image in [0, 1] as a panel on pixel coordinates of `shape`, stored at <= `max_px` a side."""
    h, w = shape
    ax.imshow(panel_pixels(rgb, max_px), extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="none")
    image_axes(ax)


def crop_boxes(ax: Axes, boxes: Sequence[Box]) -> None:
    """Thin rectangles, numbered, where the zoomed crops of a panel's image come from."""
    from matplotlib.patches import Rectangle

    for k, box in enumerate(boxes):
        colour = ZOOM_COLOURS[box.kind]
        ax.add_patch(Rectangle((box.x - 0.5, box.y - 0.5), box.w, box.h, fill=False, ec=colour, lw=0.6))
        ax.text(box.x - 0.5, box.y - 0.5, str(k + 1), color=colour, fontsize=5, ha="left", va="bottom",
                clip_on=True)
