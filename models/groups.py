"""Groups of images' embeddings: consecutive batches projected into one reused (P, capacity, k) buffer.

Each update of the sums reads and writes all of them, and each scoring pass unpacks all of the factor, so
both work on groups of images rather than batches. A `Group` is fed batch by batch (`add`) and hands
back the filled part of the buffer whenever the next batch would not fit, and at the end (`flush`): a
model fed from its own loader (`SemiOrthogonal.gather`) and several models fed the same features (a grid
of variants, pipeline/shared_pass.py) group their images the same way.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from models.semi_ortho import SemiOrthogonal

Gathered = tuple[torch.Tensor, list[int]]  # z (P, n, k) in the buffer, and the batch sizes it holds


def group_size(positions: int, k: int) -> int:
    """How many images' embeddings one pass holds: 32, or as many as 160 MB hold, at least 8. Each
    update reads and writes all of the sums (0.75 GB for WRN-50-2, k = 300), and each scoring pass
    unpacks all of the factor: larger groups need fewer passes, at the price of the buffer's memory."""
    return max(8, min(32, (160 << 20) // (4 * positions * k)))


class Group:
    """Projects batches of stage outputs into `model`'s buffer (kept on the model: one buffer serves the
    fit, the validation and the test images; on small machines touching fresh memory is what a buffer
    costs most). What `add` and `flush` yield is written again once the consumer asks for more."""

    def __init__(self, model: SemiOrthogonal, capacity: int | None = None):
        self.model = model
        self.capacity = capacity or group_size(model.positions, model.W.shape[1])
        self.sizes: list[int] = []
        self.filled = 0

    def add(self, features: list[torch.Tensor]) -> Iterator[Gathered]:
        """Yields the group gathered so far if this batch would not fit beside it, then projects the batch."""
        size = features[0].shape[0]
        if self.filled and self.filled + size > self.capacity:
            yield from self.flush()
        model = self.model
        needed = (model.positions, max(self.capacity, size), model.W.shape[1])
        buffer = model._buffer
        if buffer is None or buffer.shape[1] < needed[1] or buffer.dtype != model.W.dtype \
                or buffer.device != model.device:
            model._buffer = None  # before the next one is allocated
            model._buffer = buffer = model.W.new_empty(needed)
        model.project(features, out=buffer[:, self.filled:self.filled + size])
        self.sizes.append(size)
        self.filled += size

    def flush(self) -> Iterator[Gathered]:
        """Yields what is gathered, if anything, and starts a new group."""
        if self.filled:
            assert self.model._buffer is not None  # filled: earlier batches are in it
            gathered, self.sizes, filled = self.sizes, [], self.filled
            self.filled = 0
            yield self.model._buffer[:, :filled], gathered


Predicted = tuple[torch.Tensor, torch.Tensor]  # a batch's score maps (B, H, W) and image scores (B,)


class Fitter:
    """`SemiOrthogonal.fit_features` fed batch by batch: the model's sums updated a gathered group at a time."""

    def __init__(self, model: SemiOrthogonal):
        self.stats = model.begin_fit()
        self.group = Group(model)

    def add(self, features: list[torch.Tensor]) -> None:
        for z, _ in self.group.add(features):
            self.stats.update(z)

    def flush(self) -> None:
        for z, _ in self.group.flush():
            self.stats.update(z)


class Scorer:
    """`SemiOrthogonal.predict_batches` fed batch by batch, a batch's stage outputs in one or more chunks (a
    tiled model's tiles, at most a batch's count at a time): each batch's maps and scores, in order, as soon
    as they are computed. The distances of up to `capacity` images are computed together; a tiled model's
    of one batch's tiles (the groups would count tiles, not images)."""

    def __init__(self, model: SemiOrthogonal, capacity: int | None = None):
        self.model = model
        self.tiled = model.config.tile is not None
        self.group = Group(model, None if self.tiled else capacity)
        self.parts: list[torch.Tensor] = []  # a tiled batch's distances so far

    def add(self, features: list[torch.Tensor]) -> list[Predicted]:
        """One chunk of a batch; what is ready."""
        if self.tiled:
            self.parts += [self.model.distances_of(z) for z, _ in self.group.add(features)]
            return []
        return [done for z, sizes in self.group.add(features) for done in self.model.predict_group(z, sizes)]

    def end_batch(self) -> list[Predicted]:
        """A batch's chunks are all in: a tiled model's maps of it (put back together), nothing otherwise."""
        if not self.tiled:
            return []
        self.parts += [self.model.distances_of(z) for z, _ in self.group.flush()]
        maps = self.model.smooth(torch.cat(self.parts))
        self.parts = []
        return [(maps, maps.flatten(1).amax(dim=1))]

    def flush(self) -> list[Predicted]:
        """The last group's maps."""
        return [done for z, sizes in self.group.flush() for done in self.model.predict_group(z, sizes)]
