"""Zoom pages: crops of large test images at native resolution, one around each defect region and each
false alarm, after the image page that shows the whole image (where numbered boxes mark the crops)."""
from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from common import printable

from .image_pages import COL_TITLE, GAP, LEFT, PANEL_W, ROW_GAP, ROW_TITLE, colour_bar, heat_overlay, input_image
from .layout import (
    HEAT_ALPHA,
    PAGE_SIZE,
    ZOOM_CAP,
    ZOOM_FROM_PX,
    ZOOM_MARGIN,
    ZOOM_MAX_PX,
    ZOOM_MIN_PX,
    ZOOM_ROWS_PER_PAGE,
    fmt,
    image_axes,
    inches,
    outline,
    page,
    show,
)
from .load import Category
from .pages import footer, title
from .regions import Box, zoom_boxes


@dataclass(frozen=True)
class ZoomRow:
    """One crop of a zoom page: test image `index` (ranked `rank` in the report), its crop `number` of `count`."""
    rank: int
    index: int
    number: int
    count: int
    box: Box


def plan_zooms(cat: Category) -> dict[int, list[Box]]:
    """The crops of each shown test image with any (report/regions.py); none where the maps have no side
    over ZOOM_FROM_PX. Needs the threshold, so after render.prepare has set it."""
    if max(cat.maps.shape[1:]) <= ZOOM_FROM_PX:
        return {}
    zooms = {}
    for i in cat.order:
        prediction = cat.maps[i].astype(np.float32) > cat.threshold  # as the prediction panel draws it
        boxes = zoom_boxes(cat.masks[i], prediction, ZOOM_MARGIN, ZOOM_MIN_PX, ZOOM_CAP)
        if boxes:
            zooms[int(i)] = boxes
    return zooms


def zoom_chunks(cat: Category, rows: Sequence[int] | np.ndarray, first_rank: int) -> list[list[ZoomRow]]:
    """The zoom pages after the image page of `rows` (ranked from `first_rank`), ZOOM_ROWS_PER_PAGE crops each."""
    crops = [ZoomRow(first_rank + r, int(i), k + 1, len(boxes), box)
             for r, i in enumerate(rows) for boxes in [cat.zooms.get(int(i), [])] for k, box in enumerate(boxes)]
    return [crops[k:k + ZOOM_ROWS_PER_PAGE] for k in range(0, len(crops), ZOOM_ROWS_PER_PAGE)]


def zoom_page(cat: Category, ckpt: Path, crops: Sequence[ZoomRow], page_no: int, pages: int) -> Figure:
    """One page of crops: input, ground truth, anomaly map and prediction, each at the crop's own pixels."""
    first, last = crops[0].rank, crops[-1].rank
    ranks = f"test image {first}" if first == last else f"test images {first}–{last}"
    fig = page(f"{title(cat)}: zoomed crops of {ranks}",
               f"at native resolution: a crop per defect region and per false alarm, at most {ZOOM_CAP} an image, "
               "numbered as boxed before",
               footer(cat, ckpt), page_no, pages)
    panel = PANEL_W  # square panels: crops are at most 2:1 and keep their aspect inside
    row_h = ROW_TITLE + COL_TITLE + panel + ROW_GAP
    top = 1.0
    headings = ["input", "ground truth", "anomaly map", f"prediction (score > {fmt(cat.threshold, 3)})"]
    loaded: tuple[int, np.ndarray, str | None] | None = None  # one image's crops come in a row: read it once
    for r, crop in enumerate(crops):
        y = top + r * row_h
        i, box = crop.index, crop.box
        path = Path(str(cat.paths[i]))
        if loaded is None or loaded[0] != i:
            loaded = (i, *input_image(str(path), cat, ckpt))
        _, image, problem = loaded
        window = (slice(box.y, box.y + box.h), slice(box.x, box.x + box.w))
        mask, heat = cat.masks[i][window], cat.maps[i][window].astype(np.float32)
        scale = min(1.0, ZOOM_MAX_PX / max(box.w, box.h))
        shown = "shown 1:1" if scale == 1 else f"reduced to {scale:.0%} (over {ZOOM_MAX_PX} px)"
        name = printable(f"{path.parent.name}/{path.name}")
        fig.text(LEFT / PAGE_SIZE[0], 1 - (y + 0.14) / PAGE_SIZE[1],
                 f"{crop.rank}.  {name}  ·  {crop.number} of {crop.count}: {box.kind}, {box.area:,} px  ·  "
                 f"x {box.x}, y {box.y}, w {box.w}, h {box.h} (map pixels)  ·  {shown}",
                 fontsize=8, fontweight="bold", va="baseline")
        axes = [inches(fig, LEFT + c * (panel + GAP), y + ROW_TITLE + COL_TITLE, panel, panel) for c in range(4)]
        for ax, heading in zip(axes, headings):
            ax.set_title(heading, fontsize=7, color="0.25", pad=2.5)
        pixels = image[window]
        shape = (box.h, box.w)
        show(axes[0], pixels, shape, ZOOM_MAX_PX)
        show(axes[1], pixels, shape, ZOOM_MAX_PX)
        if problem:
            axes[0].text(0.5, 0.5, problem, ha="center", va="center", fontsize=6.5, color="0.15",
                         transform=axes[0].transAxes)
        outline(axes[1], mask)
        show(axes[2], heat_overlay(cat, heat, pixels, problem), shape, ZOOM_MAX_PX)
        axes[3].imshow((heat > cat.threshold).astype(np.uint8), cmap="gray", vmin=0, vmax=1, interpolation="none",
                       extent=(-0.5, box.w - 0.5, box.h - 0.5, -0.5))
        image_axes(axes[3])
        outline(axes[3], mask, lw=0.7)
    colour_bar(fig, cat, top + ROW_TITLE + COL_TITLE, (ZOOM_ROWS_PER_PAGE - 1) * row_h + panel)
    caption = (f"Red outline: ground truth. Defect: an 8-connected ground-truth region; false alarm: a region of "
               f"the prediction (score > {fmt(cat.threshold)}) touching no ground truth. Each crop: the region's "
               f"bounding box and {ZOOM_MARGIN} px around it, at least {ZOOM_MIN_PX} px a side, inside the image; "
               f"stored unresampled up to {ZOOM_MAX_PX} px a side. Anomaly map drawn with opacity {HEAT_ALPHA:g} "
               "on the category's colour scale.")
    fig.text(LEFT / PAGE_SIZE[0], 1 - (top + ZOOM_ROWS_PER_PAGE * row_h + 0.05) / PAGE_SIZE[1],
             textwrap.fill(caption, 150), fontsize=6.5, color="0.3", va="top", linespacing=1.4)
    return fig
