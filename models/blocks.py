"""Native resolution in blocks: the Gaussians of a band of feature-map rows at a time, for models whose
per-position state does not fit in memory at once (WRN-50-2, k = 300 at 1024 x 1024: 24 GB).

Every image goes through the backbone once; its embeddings z (P, k) are appended to a file. Each block
then reads its positions' rows of every training image, in the groups the in-memory fit updates with (so
its shift, the first group's mean, and its sums are the in-memory fit's), factors them, appends its
packed sums to the model's sums file and scores its rows of every image to be scored. Memory holds one
block's state and one group's rows whatever the number of images; the files on disk grow with it:
(images) x P x k x 4 bytes of embeddings, removed at the end, and P x k(k+1)/2 x 4 bytes of sums, kept.

Files are read and written with plain reads and writes, not memory maps: pages of a mapped file would
count in this process's resident memory, which the budget bounds.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from models.distance import mahalanobis
from models.gaussian import RunningStats, cholesky_packed


class EmbeddingFile:
    """z of N images, stored (N, P, k) float32: appended a group at a time, read a block of positions at
    a time. `groups` are the appended groups' sizes, for reading them back the same way."""

    def __init__(self, path: str | Path, positions: int, k: int):
        self.path, self.positions, self.k = Path(path), positions, k
        self.groups: list[int] = []
        self._file = open(self.path, "w+b")

    @property
    def n(self) -> int:
        return sum(self.groups)

    def append(self, z: torch.Tensor) -> None:
        """z (P, B, k): B images, written one image (P, k) at a time."""
        for j in range(z.shape[1]):
            image = z[:, j].detach().to("cpu", torch.float32).contiguous()
            self._file.write(image.numpy().data)
        self.groups.append(z.shape[1])

    def rows(self, start: int, stop: int, first: int, count: int) -> torch.Tensor:
        """Positions start..stop of images first..first + count: (stop - start, count, k)."""
        out = np.empty((count, stop - start, self.k), dtype=np.float32)
        self._file.flush()
        fd = self._file.fileno()
        for i in range(count):
            offset = ((first + i) * self.positions + start) * self.k * 4
            read_exact(fd, out[i].data.cast("B"), offset, self.path)
        # laid out as the in-memory fit's z (positions outermost): the same kernels then sum in the same order
        return torch.from_numpy(out).transpose(0, 1).contiguous()

    def groups_of(self, start: int, stop: int, device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
        """Every image's rows start..stop, group by group as appended."""
        first = 0
        for size in self.groups:
            yield self.rows(start, stop, first, size).to(device)
            first += size

    def close(self, remove: bool = True) -> None:
        self._file.close()
        if remove:
            self.path.unlink(missing_ok=True)


class BlockedStats:
    """A model fitted in blocks: n, shift and sum z of every position in memory (P x k each), sum zz^T
    packed in the sums file beside the model file (models/model_file.py, format 3)."""

    def __init__(self, n: int, shift: torch.Tensor, sum_z: torch.Tensor, sums_path: Path):
        self.n, self.shift, self.sum_z, self.sums_path = n, shift, sum_z, Path(sums_path)

    def state(self) -> dict:
        return {"n": torch.tensor(self.n), "shift": self.shift, "sum_z": self.sum_z,
                "sum_zz_file": self.sums_path.name}

    def block(self, start: int, stop: int, device: torch.device | str = "cpu") -> RunningStats:
        """The sums of positions start..stop in memory."""
        stats = RunningStats.__new__(RunningStats)
        positions, k = self.shift.shape
        stats.n = self.n
        stats.shift, stats.sum_z = self.shift[start:stop].to(device), self.sum_z[start:stop].to(device)
        stats.sum_zz = read_sums(self.sums_path, positions, k, start, stop).to(device)
        return stats


def block_bounds(feature_size: tuple[int, int], rows: int) -> list[tuple[int, int]]:
    """The position ranges (start, stop) of bands of `rows` feature-map rows, top to bottom."""
    h, w = feature_size
    return [(top * w, min(top + rows, h) * w) for top in range(0, h, rows)]


def fit_and_score(train: EmbeddingFile, scored: list[EmbeddingFile], feature_size: tuple[int, int], rows: int,
                  eps: float, unbiased: bool, sums_path: Path, device: torch.device | str = "cpu",
                  ) -> tuple[BlockedStats, list[torch.Tensor]]:
    """Fits the Gaussians block by block and scores every file of `scored`: the model's sums and, for
    each scored file, its distances (N, h, w). The packed sums are written to `sums_path` in position
    order, as an in-memory model's sum_zz_packed is laid out."""
    h, w = feature_size
    P, k = h * w, train.k
    shift, sum_z = torch.empty(P, k), torch.empty(P, k)
    distances = [torch.empty(f.n, P) for f in scored]
    with open(sums_path, "wb") as sums:
        for start, stop in block_bounds(feature_size, rows):
            stats = RunningStats(stop - start, k, device)
            for z in train.groups_of(start, stop, device):
                stats.update(z)
            mu, L = cholesky_packed(stats, eps, unbiased)
            sums.write(stats.sum_zz.cpu().contiguous().numpy().data)
            shift[start:stop], sum_z[start:stop] = stats.shift.cpu(), stats.sum_z.cpu()
            score_block(scored, distances, start, stop, mu, L, device)
            del stats, mu, L  # before the next block's are allocated
    return BlockedStats(train.n, shift, sum_z, sums_path), [d.view(-1, h, w) for d in distances]


def score_in_blocks(stats: BlockedStats, scored: list[EmbeddingFile], feature_size: tuple[int, int], rows: int,
                    eps: float, unbiased: bool, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """A fitted model's distances (N, h, w) for every file of `scored`, its sums read block by block."""
    distances = [torch.empty(f.n, feature_size[0] * feature_size[1]) for f in scored]
    for start, stop in block_bounds(feature_size, rows):
        mu, L = cholesky_packed(stats.block(start, stop, device), eps, unbiased)
        score_block(scored, distances, start, stop, mu, L, device)
        del mu, L
    return [d.view(-1, *feature_size) for d in distances]


def score_block(scored: list[EmbeddingFile], distances: list[torch.Tensor], start: int, stop: int, mu: torch.Tensor,
                L: torch.Tensor, device: torch.device | str) -> None:
    """Positions start..stop of each file's images into its distances (N, P)."""
    for file, out in zip(scored, distances, strict=True):
        first = 0
        for z in file.groups_of(start, stop, device):
            out[first:first + z.shape[1], start:stop] = mahalanobis(z, mu, L).t().cpu()
            first += z.shape[1]


def read_sums(path: Path, positions: int, k: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Rows start..stop of a sums file: (stop - start, k(k+1)/2) float32."""
    stop = positions if stop is None else stop
    width = k * (k + 1) // 2
    out = np.empty((stop - start, width), dtype=np.float32)
    with open(path, "rb") as f:
        read_exact(f.fileno(), out.data.cast("B"), start * width * 4, path)
    return torch.from_numpy(out)


def read_exact(fd: int, view: memoryview, offset: int, path: Path) -> None:
    """Fills `view` from `offset`: one read returns at most 2 GiB on Linux."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise OSError(f"{path} is shorter than expected: a damaged file, or one still being written")
        done += got
