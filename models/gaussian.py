"""A Gaussian per feature-map position in k-space: streaming sums and the Cholesky factor of cov + eps I.

Both k x k matrices are symmetric or triangular, so both are kept packed: the lower triangle row by
row, k(k+1)/2 values per position, as model files store the sums. The sums and the factor then fit
together in what one full k x k array per position would take (1.5 GB for WRN-50-2, k = 300): the
model file is written from the sums while the factor scores, with no copy of either. Where a full
matrix is needed, a few positions are unpacked at a time into a small workspace.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self, cast

import torch

from common import SettingError, UserError


class RunningStats:
    """n, sum(z - shift) and sum (z - shift)(z - shift)^T per position, accumulated batch by batch.

    Memory is independent of the number of images. sum_zz is (P, k(k+1)/2): the packed lower
    triangle (pack_lower). The sums are float32; subtracting a fixed per-position shift (the first
    batch's mean) first keeps E[zz^T] - mu mu^T from cancelling digits.
    """

    def __init__(self, positions: int, k: int, device: torch.device | str = "cpu"):
        self.n = 0
        self.shift = torch.zeros(positions, k, device=device)
        self.sum_z = torch.zeros(positions, k, device=device)
        self.sum_zz = torch.zeros(positions, k * (k + 1) // 2, device=device)

    def update(self, z: torch.Tensor, chunk: int | None = None) -> None:
        """z: (P, B, k) embeddings of B images at every position.

        `chunk` positions at a time (16 on CPU): their products stay in cache while their lower
        triangles are added to the packed sums, and no copy of the size of z is made."""
        if self.n == 0:
            self.shift.copy_(z.mean(dim=1))
        positions, _, k = z.shape
        chunk = min(positions, chunk or (16 if z.device.type == "cpu" else 1024))
        lower, _ = lower_indices(k, z.device)
        products = z.new_empty(chunk, k, k)
        packed = z.new_empty(chunk, lower.numel())
        for start in range(0, positions, chunk):
            part = slice(start, start + chunk)
            count = min(chunk, positions - start)
            centred = z[part] - self.shift[part].unsqueeze(1)
            self.sum_z[part] += centred.sum(dim=1)
            torch.bmm(centred.transpose(1, 2), centred, out=products[:count])
            torch.index_select(products[:count].view(count, k * k), 1, lower, out=packed[:count])
            self.sum_zz[part] += packed[:count]
        self.n += z.shape[1]

    def reshift(self, shift: torch.Tensor, chunk: int = 256) -> None:
        """Re-expresses the sums around another shift b: sum (z - b) = sum (z - a) + n (a - b)."""
        for start in range(0, shift.shape[0], chunk):  # float64 temporaries stay small
            part = slice(start, start + chunk)
            d = (self.shift[part] - shift[part]).double()
            s1 = self.sum_z[part].double()
            outer = s1.unsqueeze(2) * d.unsqueeze(1)
            change = outer + outer.transpose(1, 2) + self.n * d.unsqueeze(2) * d.unsqueeze(1)
            self.sum_zz[part] = (self.sum_zz[part].double() + pack_lower(change)).to(self.sum_zz.dtype)
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
        """The sums as stored in a model file (format 2): sum zz^T packed, as held."""
        return {"n": torch.tensor(self.n), "shift": self.shift, "sum_z": self.sum_z, "sum_zz_packed": self.sum_zz}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> Self:
        """From a model file's sums: packed (format 2), in the file a format-3 model names (read whole:
        the model is scored in memory) or full k x k matrices (format 1)."""
        stats = cls.__new__(cls)
        stats.n = int(state["n"])
        stats.shift, stats.sum_z = (state[key].to(device, torch.float32) for key in ("shift", "sum_z"))
        if "sum_zz_file" in state:
            from models.blocks import read_sums  # blocks imports this module

            positions, k = stats.sum_z.shape
            stats.sum_zz = read_sums(Path(str(state["sum_zz_file"])), positions, k).to(device)
        elif "sum_zz_packed" in state:
            stats.sum_zz = state["sum_zz_packed"].to(device, torch.float32)
        else:
            stats.sum_zz = pack_lower(state["sum_zz"].to(device, torch.float32))
        return stats


@functools.lru_cache(maxsize=8)
def _lower_indices_cpu(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = torch.tril_indices(k, k)
    return rows * k + cols, cols * k + rows


def lower_indices(k: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of the lower triangle (row by row) in a k x k matrix, and of its mirror image."""
    return cast(tuple[torch.Tensor, torch.Tensor], tuple(index.to(device) for index in _lower_indices_cpu(k)))


def pack_lower(matrices: torch.Tensor) -> torch.Tensor:
    """(P, k, k) -> (P, k(k+1)/2): the lower triangle row by row (= the upper one column by column of a
    symmetric matrix). The lower one because Cholesky reads it: unpacked sums factor bit-identically."""
    positions, k = matrices.shape[:2]
    flat, _ = lower_indices(k, matrices.device)
    return matrices.reshape(positions, k * k).index_select(1, flat)


def unpack_lower(packed: torch.Tensor, k: int, out: torch.Tensor | None = None,
                 symmetric: bool = True) -> torch.Tensor:
    """(P, k(k+1)/2) -> (P, k, k), into `out` when given: the symmetric matrix (the inverse of
    pack_lower), or with symmetric=False only the lower triangle written (a triangular factor:
    what is above the diagonal is left as it was)."""
    flat, mirror = lower_indices(k, packed.device)
    full = (packed.new_empty(packed.shape[0], k, k) if out is None else out).view(-1, k * k)
    if symmetric:
        full.index_copy_(1, mirror, packed)
    full.index_copy_(1, flat, packed)  # after the mirror: the diagonal, in both, ends up written once more
    return full.view(-1, k, k)


class CovarianceWorkspace:
    """float64 buffers for the covariances of up to `size` positions, reused chunk after chunk (one per
    thread): fresh ones per chunk were measured at 4x the system time."""

    def __init__(self, size: int, k: int, device: torch.device | str = "cpu"):
        self.k = k
        self.cov = torch.zeros(size, k, k, dtype=torch.float64, device=device)
        self.sums = torch.empty(size, k * (k + 1) // 2, dtype=torch.float64, device=device)
        self.mean = torch.empty(size, k, dtype=torch.float64, device=device)

    def covariance(self, stats: RunningStats, start: int, count: int, unbiased: bool = False,
                   symmetric: bool = True) -> torch.Tensor:
        """(count, k, k) float64 covariances of positions start.. from the sums (divided by n, or n - 1
        if unbiased). symmetric=False fills the lower triangle only, for LAPACK routines that read
        nothing else (potrf and syevd with uplo 'L'): half the unpacking."""
        n, k, part = stats.n, self.k, slice(start, start + count)
        m = self.mean[:count].copy_(stats.sum_z[part]).div_(n)
        cov = unpack_lower(self.sums[:count].copy_(stats.sum_zz[part]), k, self.cov[:count], symmetric)
        cov.div_(n).baddbmm_(m.unsqueeze(2), m.unsqueeze(1), alpha=-1)
        return cov.mul_(n / (n - 1)) if unbiased else cov


def cholesky_packed(stats: RunningStats, eps: float, unbiased: bool = False,
                    chunk_elements: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """mu (P, k) and the Cholesky factor L of cov + eps I = L L^T, packed (P, k(k+1)/2) like the sums:
    the precision is (L L^T)^{-1}, and the distance |L^{-1} (z - mu)| (distance.mahalanobis)."""
    k = stats.sum_z.shape[1]
    factor = stats.sum_zz.new_empty(stats.sum_zz.shape)
    lower, _ = lower_indices(k, factor.device)

    def store(part: slice, chol: torch.Tensor) -> None:
        # gathered in float32: torch's index_select was measured 5x slower on float64 rows
        torch.index_select(chol.float().view(chol.shape[0], k * k), 1, lower, out=factor[part])

    _factorize(stats, eps, unbiased, chunk_elements, store)
    return stats.mean(), factor


def inverse_cholesky(stats: RunningStats, eps: float, unbiased: bool = False,
                     chunk_elements: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """mu (P, k) and L^{-1} (P, k, k), full: distance.whitened_distance scores with one batched GEMM,
    the faster way on a GPU (BENCHMARKS.md); the inverse is taken in float64 from the float64 factor."""
    positions, k = stats.sum_z.shape
    inverse = stats.sum_zz.new_empty(positions, k, k)
    eye = torch.eye(k, dtype=torch.float64, device=inverse.device)

    def store(part: slice, chol: torch.Tensor) -> None:
        inverse[part] = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False)

    _factorize(stats, eps, unbiased, chunk_elements, store)
    return stats.mean(), inverse


def _factorize(stats: RunningStats, eps: float, unbiased: bool, chunk_elements: int | None,
               store: Callable[[slice, torch.Tensor], None]) -> None:
    """Chunks of positions through float64 Cholesky of cov + eps I, each factor handed to `store`.

    Never batched LU: with some torch CPU builds it returns garbage pivots for k >= 200. On the CPU
    batched Cholesky is single-threaded, so chunks run in parallel threads, each with float64
    workspaces of its own (fresh ones per chunk were measured at 4x the system time)."""
    n = stats.n
    if n < 1 or (unbiased and n < 2):
        raise UserError(f"need at least {2 if unbiased else 1} training images to fit, got {n}")
    positions, k = stats.sum_z.shape
    device = stats.sum_z.device
    on_cpu = device.type == "cpu"
    if chunk_elements is None:  # small float64 temporaries on CPU; few large launches on a GPU
        chunk_elements = 1 << 20 if on_cpu else 1 << 26
    size = min(positions, max(1, chunk_elements // (k * k)))
    failed = []
    inference = torch.is_inference_mode_enabled()  # thread-local: the pool's threads must share it
    local = threading.local()

    def factorize(start: int) -> None:
        with torch.inference_mode(inference):
            if not hasattr(local, "workspace"):
                local.workspace = CovarianceWorkspace(size, k, device)
                local.factor = torch.empty(size, k, k, dtype=torch.float64, device=device)
                local.info = torch.empty(size, dtype=torch.int32, device=device)
            count = min(size, positions - start)
            # on the CPU LAPACK's potrf reads the lower triangle alone; elsewhere give it the whole matrix
            cov = local.workspace.covariance(stats, start, count, unbiased, symmetric=not on_cpu)
            cov.diagonal(dim1=1, dim2=2).add_(eps)
            factor, info = local.factor[:count], local.info[:count]
            torch.linalg.cholesky_ex(cov, out=(factor, info))
            failed.append(bool(info.any()))
            store(slice(start, start + count), factor)

    threads = torch.get_num_threads() if on_cpu else 1
    intra_op = torch.get_num_threads()
    try:
        if on_cpu:  # one thread per chunk, each op single-threaded: measured 1.25 x faster than nesting pools
            torch.set_num_threads(1)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(factorize, range(0, positions, size)))
    finally:
        torch.set_num_threads(intra_op)
    if any(failed):
        raise SettingError(f"covariance is not positive definite with $eps = {eps}; use a larger $eps")
