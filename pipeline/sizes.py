"""train.py's size flags as (H, W) pairs: --image-size, --crop, and the shared tiles' --tile, --tile-stride
(their flags added here; whether a tile suits the backbone and the input is models/tiles.py's check)."""
from __future__ import annotations

import argparse

from common import UserError


def add_tile_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--tile", type=int, nargs="+", default=None, metavar="S",
                       help="one Gaussian per position of an S x S (or H W) tile, fitted on every tile of every "
                            "image: textures, unaligned parts, the memory of one S x S model; see README")
    group.add_argument("--tile-stride", type=int, nargs="+", default=None, metavar="T",
                       help="the tiles' stride, at most --tile; overlapping maps are averaged (default: the tile)")


def check_sizes(args: argparse.Namespace) -> None:
    """Each size flag as None or an (H, W) pair, in place; --image-size native sets args.native_size."""
    args.native_size = args.image_size == ["native"]
    args.image_size = None if args.native_size else size_pair(integers(args.image_size, "--image-size"),
                                                              "--image-size")
    args.crop = size_pair(args.crop, "--crop")
    args.tile = size_pair(args.tile, "--tile")
    args.tile_stride = size_pair(args.tile_stride, "--tile-stride", least=1)
    if args.tile_stride and not args.tile:
        raise UserError("--tile-stride needs --tile; pass --tile S or drop --tile-stride")


def integers(values: list[str] | None, flag: str) -> list[int] | None:
    try:
        return None if values is None else [int(v) for v in values]
    except ValueError:
        raise UserError(f"{flag} {' '.join(values or [])}: pass one size S, two sizes H W, or native") from None


def size_pair(values: list[int] | None, flag: str, least: int = 16) -> tuple[int, int] | None:
    """One size S (S x S) or two (H W), each at least `least`."""
    if not values:
        return None
    if len(values) > 2 or min(values) < least:
        raise UserError(f"{flag} takes one size S or two sizes H W, each at least {least}")
    return (values[0], values[-1])
