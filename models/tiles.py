"""Shared tiles: one S x S model fitted on every tile of every image, its maps put back together.

Tiles start at 0, T, 2T, ... along each axis, and a last one lies flush with the far edge where (H - S)
is not a multiple of T, so that every pixel is covered. Where tiles overlap, their maps are averaged.
A tiled model holds the state of one S x S model and sees many more samples per Gaussian: for textures
and parts that are not aligned from image to image.
"""
from __future__ import annotations

import torch

from common import SettingError
from models.backbone import strides, tap_shapes
from models.config import Config
from models.postprocess import blur, upsample


def starts(length: int, size: int, stride: int) -> list[int]:
    """The first row (or column) of each tile along an axis of `length`."""
    first = list(range(0, length - size + 1, stride))
    return first if first[-1] == length - size else [*first, length - size]


def corners(image_size: tuple[int, int], size: tuple[int, int], stride: tuple[int, int]) -> list[tuple[int, int]]:
    """(top, left) of each tile, row by row: the order of `tile`'s tiles within an image."""
    return [(top, left) for top in starts(image_size[0], size[0], stride[0])
            for left in starts(image_size[1], size[1], stride[1])]


def count(image_size: tuple[int, int], size: tuple[int, int], stride: tuple[int, int]) -> int:
    """Tiles per image."""
    return len(corners(image_size, size, stride))


def tile(images: torch.Tensor, size: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B * n, C, S_h, S_w): each image's n tiles in `corners` order, image after image."""
    H, W = images.shape[-2:]
    parts = [images[..., top:top + size[0], left:left + size[1]] for top, left in corners((H, W), size, stride)]
    return torch.stack(parts, dim=1).flatten(0, 1)


def untile(tiles: torch.Tensor, image_size: tuple[int, int], size: tuple[int, int], stride: tuple[int, int]
           ) -> torch.Tensor:
    """(B * n, ..., S_h, S_w) -> (B, ..., H, W): `tile`'s inverse, overlapping tiles averaged."""
    places = corners(image_size, size, stride)
    grouped = tiles.unflatten(0, (-1, len(places)))  # (B, n, ..., S_h, S_w)
    total = tiles.new_zeros(grouped.shape[0], *grouped.shape[2:-2], *image_size)
    covered = tiles.new_zeros(image_size)
    for i, (top, left) in enumerate(places):
        total[..., top:top + size[0], left:left + size[1]] += grouped[:, i]
        covered[top:top + size[0], left:left + size[1]] += 1
    return total / covered


def stitch(distances: torch.Tensor, config: Config) -> torch.Tensor:
    """Per-tile distances (B * n, h, w) -> score maps (B, H, W): each tile's distances upsampled to the
    tile (bilinear), then `assemble`d."""
    assert config.tile is not None  # a tiled model's
    return assemble(upsample(distances, config.tile), config)


def assemble(tile_maps: torch.Tensor, config: Config) -> torch.Tensor:
    """Each tile's upsampled map (B * n, S_h, S_w) -> score maps (B, H, W): the tiles averaged where they
    overlap, then the whole map blurred (what a runtime does with an exported tiled graph's output)."""
    assert config.tile is not None and config.stride is not None  # a tiled model's
    return blur(untile(tile_maps, config.input_size, config.tile, config.stride), config.sigma)


def check_tiling(config: Config) -> None:
    """A tile that fits the input, a stride that leaves no gap, and a tile the backbone maps to a whole grid
    at each of its strides (so that the tiles' features are those of the image's own pixels)."""
    if config.tile is None:
        if config.tile_stride is not None:
            raise SettingError("$tile_stride needs $tile")
        return
    (S_h, S_w), (H, W) = config.tile, config.input_size
    if S_h > H or S_w > W:
        raise SettingError(f"$tile {S_h} x {S_w} is larger than the {H} x {W} input; pass a smaller $tile")
    stride = config.stride
    assert stride is not None  # tiled
    if not (0 < stride[0] <= S_h and 0 < stride[1] <= S_w):
        raise SettingError(f"$tile_stride {stride[0]} x {stride[1]} must be positive and at most the $tile "
                           f"{S_h} x {S_w} (a larger stride would leave pixels out)")
    multiple = max(strides(config.backbone))
    whole = all(shape[1:] == (S_h // s, S_w // s) for shape, s in zip(tap_shapes(config.backbone, (S_h, S_w)),
                                                                      strides(config.backbone)))
    if S_h % multiple or S_w % multiple or not whole:
        raise SettingError(f"$tile {S_h} x {S_w}: {config.backbone} needs tiles a multiple of {multiple}, "
                           f"e.g. $tile {max(multiple, S_h // multiple * multiple)}")

