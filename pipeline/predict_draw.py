"""predict.py's pictures: the heat map's colours, and the overlay: the image under its heat map with a box
around each region, a colour bar with the thresholds marked, and the image score with its verdict."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from common import atomic_write

BOX = (255, 255, 255)
INK, PAPER = (20, 20, 20), (255, 255, 255)
ALARM = (200, 0, 0)


@dataclass(frozen=True)
class Scale:
    """The heat map's colour scale, low (blue) to high (red), and the thresholds marked on its bar."""
    low: float
    high: float
    pixel: float
    image: float


def colour(score_map: np.ndarray, low: float, high: float) -> np.ndarray:
    import matplotlib

    normalised = np.clip((score_map - low) / max(high - low, 1e-12), 0, 1)
    return (matplotlib.colormaps["jet"](normalised)[..., :3] * 255).astype(np.uint8)


def save_png(array: np.ndarray, path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, OSError):  # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def overlay(original: np.ndarray, heat: np.ndarray, regions: list[dict], scale: Scale, caption: str,
            flagged: bool) -> np.ndarray:
    """(H + caption, W + colour bar, 3) uint8: the blend of image and heat map with the regions boxed, the
    colour bar to its right with the pixel and image thresholds marked, the caption below."""
    h, w = heat.shape[:2]
    text = max(10, min(h, w) // 16)  # the lettering grows with the image, never below 10 px
    line = max(1, min(h, w) // 200)
    letters = font(text)
    margin = text // 2
    same = np.isclose(scale.pixel, scale.image, rtol=1e-6)
    marks = [(scale.pixel, "pixel = image" if same else "pixel")] + ([] if same else [(scale.image, "image")])
    labels = [(scale.high, f"{scale.high:.3g}"), (scale.low, f"{scale.low:.3g}")] + [
        (value, f"{label} {value:.3g}") for value, label in marks if scale.low <= value <= scale.high]
    bar_w, caption_h = text, text * 2
    panel_w = 2 * margin + bar_w + 3 + max(int(letters.getlength(label)) for _, label in labels)
    width = max(w + panel_w, int(letters.getlength(caption)) + 2 * margin)  # a small image's caption still fits
    canvas = Image.new("RGB", (width, h + caption_h), PAPER)
    canvas.paste(Image.fromarray((0.55 * original + 0.45 * heat).astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for region in regions:
        left, top, right, bottom = region["box"]
        draw.rectangle((left - line, top - line, right - 1 + line, bottom - 1 + line), outline=BOX, width=line)
    top, bottom = margin, h - margin  # the bar's ends: high at the top
    values = np.linspace(scale.high, scale.low, max(bottom - top, 2))
    bar = np.repeat(colour(values, scale.low, scale.high)[:, None], bar_w, axis=1)
    canvas.paste(Image.fromarray(bar), (w + margin, top))

    def at(value: float) -> float:
        return top + (scale.high - value) / max(scale.high - scale.low, 1e-12) * (bottom - top)

    for i, (value, label) in enumerate(labels):
        y = at(value)
        if i >= 2:  # a threshold: a tick across the bar
            draw.line((w + margin - 3, y, w + margin + bar_w + 2, y), fill=INK, width=line)
        draw.text((w + margin + bar_w + 3, y), label, fill=INK, font=letters, anchor="lm")
    draw.text((margin, h + caption_h // 2), caption, fill=ALARM if flagged else INK, font=letters, anchor="lm")
    return np.asarray(canvas)
