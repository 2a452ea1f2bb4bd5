"""A Gaussian per feature-map position in k-space: streaming sums, precision, Mahalanobis distance."""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from common import UserError


class RunningStats:
    """n, sum(z - shift) and sum (z - shift)(z - shift)^T per position, accumulated batch by batch.

    Memory is independent of the number of images. The sums are float32; subtracting a fixed
    per-position shift (the first batch's mean) first keeps E[zz^T] - mu mu^T from cancelling digits.
    """

    def __init__(self, positions: int, k: int, device: torch.device | str = "cpu"):
        self.n = 0
        self.shift = torch.zeros(positions, k, device=device)
        self.sum_z = torch.zeros(positions, k, device=device)
        self.sum_zz = torch.zeros(positions, k, k, device=device)

    def update(self, z: torch.Tensor, chunk: int = 64) -> None:
        """z: (P, B, k) embeddings of B images at every position.

        `chunk` positions at a time: the centred copy stays small and in cache, where one of the size
        of z would be a fresh allocation (page faults) and a trip through memory."""
        if self.n == 0:
            self.shift.copy_(z.mean(dim=1))
        for start in range(0, z.shape[0], chunk):
            part = slice(start, start + chunk)
            centred = z[part] - self.shift[part].unsqueeze(1)
            self.sum_z[part] += centred.sum(dim=1)
            self.sum_zz[part].baddbmm_(centred.transpose(1, 2), centred)
        self.n += z.shape[1]

    def reshift(self, shift: torch.Tensor, chunk: int = 256) -> None:
        """Re-expresses the sums around another shift b: sum (z - b) = sum (z - a) + n (a - b)."""
        for start in range(0, shift.shape[0], chunk):  # float64 temporaries stay small
            part = slice(start, start + chunk)
            d = (self.shift[part] - shift[part]).double()
            s1 = self.sum_z[part].double()
            outer = s1.unsqueeze(2) * d.unsqueeze(1)
            s2 = self.sum_zz[part].double() + outer + outer.transpose(1, 2) + self.n * d.unsqueeze(2) * d.unsqueeze(1)
            self.sum_zz[part] = s2.to(self.sum_zz.dtype)
            self.sum_z[part] = (s1 + self.n * d).to(self.sum_z.dtype)
        self.shift = shift.clone()

    def merge(self, other: RunningStats) -> None:
        """Adds another fit's sums: exact for disjoint image sets. `other` is re-expressed in place."""
        if other.n == 0:
            return
        if self.n == 0:
            self.n, self.shift = other.n, other.shift.clone()
            self.sum_z, self.sum_zz = other.sum_z.clone(), other.sum_zz.clone()
            return
        other.reshift(self.shift)
        self.sum_z += other.sum_z
        self.sum_zz += other.sum_zz
        self.n += other.n

    def mean(self) -> torch.Tensor:
        return self.shift + self.sum_z / self.n

    def state(self) -> dict[str, torch.Tensor]:
        """The sums as stored in a model file (format 2): sum zz^T packed, k(k+1)/2 values per position."""
        return {"n": torch.tensor(self.n), "shift": self.shift, "sum_z": self.sum_z,
                "sum_zz_packed": pack_lower(self.sum_zz)}

    def spill(self, path: str | Path) -> SpilledStats:
        """Writes the packed sum zz^T to a raw file, a chunk at a time (no second copy in memory), so the
        sums' memory can become the Cholesky factor and the model file still be written once, later.
        fit_gaussian(spill=SpilledStats.create(...)) does the same chunk by chunk as it factorizes."""
        spilled = SpilledStats.create(self, path)
        for start in range(0, self.sum_zz.shape[0], 256):
            spilled.write(slice(start, start + 256), self.sum_zz)
        return spilled.close()

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> RunningStats:
        """From a model file's sums: packed (format 2) or full k x k matrices (format 1)."""
        stats = cls.__new__(cls)
        stats.n = int(state["n"])
        stats.shift, stats.sum_z = (state[key].to(device, torch.float32) for key in ("shift", "sum_z"))
        if "sum_zz_packed" in state:
            stats.sum_zz = unpack_lower(state["sum_zz_packed"].to(device, torch.float32), stats.shift.shape[1])
        else:
            stats.sum_zz = state["sum_zz"].to(device, torch.float32)
        return stats


class SpilledStats:
    """Running sums whose sum zz^T waits in a raw file (see RunningStats.spill) until the model is saved."""

    def __init__(self, n: int, shift: torch.Tensor, sum_z: torch.Tensor, path: Path, packed_size: int):
        self.n, self.shift, self.sum_z, self.path, self.packed_size = n, shift, sum_z, path, packed_size
        self.fd: int | None = None

    @classmethod
    def create(cls, stats: RunningStats, path: str | Path) -> SpilledStats:
        """An empty spill file for `stats`' packed sum zz^T; write() fills it, close() finishes it."""
        k = stats.sum_zz.shape[1]
        spilled = cls(stats.n, stats.shift.cpu().clone(), stats.sum_z.cpu().clone(), Path(path), k * (k + 1) // 2)
        spilled.fd = os.open(spilled.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        return spilled

    def write(self, part: slice, sum_zz: torch.Tensor) -> None:
        """Writes the positions `part` of the full sums `sum_zz` at their place (threads may call it)."""
        packed = pack_lower(sum_zz[part]).cpu().numpy()
        os.pwrite(self.fd, packed.data, (part.start or 0) * self.packed_size * packed.itemsize)

    def close(self) -> SpilledStats:
        os.close(self.fd)
        self.fd = None
        return self

    def state(self) -> dict[str, torch.Tensor]:
        """The sums as a model file stores them; sum zz^T maps the file (MAP_PRIVATE): read from the page
        cache as it is written out, never copied into fresh memory."""
        size = os.path.getsize(self.path) // 4
        packed = torch.from_file(str(self.path), shared=False, size=size, dtype=torch.float32)
        return {"n": torch.tensor(self.n), "shift": self.shift, "sum_z": self.sum_z,
                "sum_zz_packed": packed.view(-1, self.packed_size)}

    def discard(self) -> None:
        if self.fd is not None:
            self.close()
        self.path.unlink(missing_ok=True)


def _lower_indices(k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of the lower triangle (row by row) in a k x k matrix, and of its mirror image."""
    rows, cols = torch.tril_indices(k, k, device=device)
    return rows * k + cols, cols * k + rows


def pack_lower(sum_zz: torch.Tensor) -> torch.Tensor:
    """(P, k, k) symmetric -> (P, k(k+1)/2): the lower triangle row by row (= the upper one column by
    column). The lower one because Cholesky reads it: a loaded model factors bit-identical values."""
    positions, k = sum_zz.shape[:2]
    flat, _ = _lower_indices(k, sum_zz.device)
    return sum_zz.reshape(positions, k * k).index_select(1, flat)


def unpack_lower(packed: torch.Tensor, k: int) -> torch.Tensor:
    """(P, k(k+1)/2) -> (P, k, k) symmetric; the inverse of pack_lower."""
    flat, mirror = _lower_indices(k, packed.device)
    full = packed.new_empty(packed.shape[0], k * k)
    full.index_copy_(1, mirror, packed)
    full.index_copy_(1, flat, packed)  # after the mirror: the diagonal, in both, ends up written once more
    return full.view(-1, k, k)


def covariance(stats: RunningStats, part: slice, unbiased: bool = False, out: torch.Tensor | None = None,
               mean: torch.Tensor | None = None) -> torch.Tensor:
    """float64 covariances of the positions in `part` from the sums (divided by n, or n - 1 if unbiased),
    into `out` (float64, its positions' shape) with `mean` its mean's workspace when given."""
    n = stats.n
    m = stats.sum_z[part].to(torch.float64, copy=True) if mean is None else mean.copy_(stats.sum_z[part])
    m.div_(n)
    cov = stats.sum_zz[part].to(torch.float64, copy=True) if out is None else out.copy_(stats.sum_zz[part])
    cov.div_(n).baddbmm_(m.unsqueeze(2), m.unsqueeze(1), alpha=-1)
    return cov.mul_(n / (n - 1)) if unbiased else cov


def fit_gaussian(stats: RunningStats, eps: float, unbiased: bool = False, in_place: bool = False,
                 chunk_elements: int | None = None, inverse: bool = False,
                 spill: SpilledStats | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """mu (P, k) and the Cholesky factor L (P, k, k), lower triangular, of cov + eps I = L L^T:
    the precision is (L L^T)^{-1}, and the distance is |L^{-1} (z - mu)| (mahalanobis). With
    `inverse`, L^{-1} (also lower triangular) instead of L, for whitened_distance, a batched GEMM:
    the faster scoring on a GPU; on the CPU the triangular solve with L is, without the cost of
    inverting L (BENCHMARKS.md).

    Chunks of positions go through float64 Cholesky (never batched LU: with some torch CPU builds it
    returns garbage pivots for k >= 200), on CPU in parallel threads since batched Cholesky is
    single-threaded there, each thread in float64 workspaces of its own (fresh ones per chunk were
    measured 4x the system time). in_place reuses sum_zz's memory for L, so the stats are spent
    afterwards; `spill` receives each chunk's sums just before its factor replaces them (closed here).
    """
    n = stats.n
    if n < 1 or (unbiased and n < 2):
        raise UserError(f"need at least {2 if unbiased else 1} training images to fit, got {n}")
    positions, k = stats.sum_z.shape
    chol = stats.sum_zz if in_place else torch.empty_like(stats.sum_zz)
    device = stats.sum_z.device
    eye = torch.eye(k, dtype=torch.float64, device=device)
    on_cpu = device.type == "cpu"
    if chunk_elements is None:  # small float64 temporaries on CPU; few large launches on a GPU
        chunk_elements = 1 << 20 if on_cpu else 1 << 26
    size = min(positions, max(1, chunk_elements // (k * k)))
    failed = []
    inference = torch.is_inference_mode_enabled()  # thread-local: the pool's threads must share it
    workspaces = threading.local()

    def factorize(start: int) -> None:
        with torch.inference_mode(inference):
            if not hasattr(workspaces, "cov"):
                workspaces.cov = torch.empty(size, k, k, dtype=torch.float64, device=device)
                workspaces.factor = torch.empty_like(workspaces.cov)
                workspaces.mean = torch.empty(size, k, dtype=torch.float64, device=device)
                workspaces.info = torch.empty(size, dtype=torch.int32, device=device)
            part = slice(start, start + size)
            count = min(size, positions - start)
            cov = covariance(stats, part, unbiased, workspaces.cov[:count], workspaces.mean[:count])
            cov.diagonal(dim1=1, dim2=2).add_(eps)
            factor, info = workspaces.factor[:count], workspaces.info[:count]
            torch.linalg.cholesky_ex(cov, out=(factor, info))
            failed.append(bool(info.any()))
            if inverse:  # in float64, from the float64 factor: float32 only once, at the end
                factor = torch.linalg.solve_triangular(factor, eye.expand_as(factor), upper=False)
            if spill is not None:
                spill.write(part, stats.sum_zz)
            chol[part] = factor

    threads = torch.get_num_threads() if on_cpu else 1
    intra_op = torch.get_num_threads()
    try:
        if on_cpu:  # one thread per chunk, each op single-threaded: measured 1.25 x faster than nesting pools
            torch.set_num_threads(1)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(factorize, range(0, positions, size)))
    finally:
        torch.set_num_threads(intra_op)
        if spill is not None:
            spill.close()
    if any(failed):
        raise UserError(f"covariance is not positive definite with eps = {eps}; use a larger eps")
    return stats.mean(), chol


def fit_group(positions: int, k: int) -> int:
    """How many images to add to the sums at once: as many as 160 MB of embeddings hold, 32 to 128.
    Each update reads and writes all of sum zz^T, so fewer, larger updates move less memory."""
    return max(32, min(128, (160 << 20) // (4 * positions * k)))


def distance_group(positions: int, k: int) -> int:
    """How many images to score together: 16, or as many as 80 MB of embeddings hold, at least 8.
    One pass over the factor serves the whole group; fewer images leave the solve latency-bound
    (BENCHMARKS.md), more cost memory for little more speed."""
    return max(8, min(16, (80 << 20) // (4 * positions * k)))


def inverse_factor(chol: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """L^{-1} (P, k, k) from L, in float64 a chunk of positions at a time (for graphs that score by GEMM)."""
    eye = torch.eye(chol.shape[-1], dtype=torch.float64, device=chol.device)
    out = torch.empty_like(chol)
    for start in range(0, chol.shape[0], chunk):
        part = chol[start:start + chunk].double()
        out[start:start + chunk] = torch.linalg.solve_triangular(part, eye.expand_as(part), upper=False)
    return out


def whitened_distance(z: torch.Tensor, mu: torch.Tensor, L_inv: torch.Tensor) -> torch.Tensor:
    """|L^{-1} (z - mu)| for z (P, B, k) -> (P, B): the Mahalanobis distance as one batched GEMM.

    z - mu first: whitening z and mu apart and subtracting would cancel digits for a large mean."""
    whitened = torch.bmm(z - mu.unsqueeze(1), L_inv.transpose(1, 2))
    return whitened.square_().sum(dim=2).sqrt_()


def mahalanobis(z: torch.Tensor, mu: torch.Tensor, chol: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """sqrt((z - mu)^T (L L^T)^{-1} (z - mu)) for z (P, B, k) -> (P, B), batched over positions.

    `chunk` positions at a time: the temporaries stay small (cheap to allocate, in cache)."""
    out = z.new_empty(z.shape[:2])
    for start in range(0, z.shape[0], chunk):
        part = slice(start, start + chunk)
        centred = (z[part] - mu[part].unsqueeze(1)).transpose(1, 2)
        whitened = torch.linalg.solve_triangular(chol[part], centred, upper=False)
        out[part] = whitened.square_().sum(dim=1).sqrt_()
    return out
