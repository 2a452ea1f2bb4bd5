"""Boxes of an image: the centre crop after resizing, the centre square of the paper's MVTec AD pipeline."""
from __future__ import annotations


def center_crop_box(size: tuple[int, int], crop: tuple[int, int] | None) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the centre crop of an (H, W) image; the whole image without crop."""
    h, w = size
    if crop is None:
        return 0, 0, h, w
    ch, cw = crop
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def centre_square(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the centre square of an (H, W) image, its side the shorter one."""
    h, w = size
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side, side
