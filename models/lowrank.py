"""Precision from k eigenpairs of the full per-position covariance (`--approx lowrank|lowranki|null`),
the alternatives the paper compares the semi-orthogonal embedding with.

Per position, C + eps I = U S U^T over all F channels (W = I, as `full`); the precision is
U_k S_k^-1 U_k^T with k of the eigenpairs: `lowrank` the k largest, `null` the k smallest, `lowranki`
the k ending at index k' = max(min(h, w), k) in descending order (indices k' - k .. k' - 1), as the
authors' code chose them. With k = F every variant is the exact Mahalanobis distance of `full`.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from common import SettingError, UserError
from models.gaussian import CovarianceWorkspace, RunningStats

EIGEN_APPROXIMATIONS = ("lowrank", "lowranki", "null")
FULL_COVARIANCE = ("full", *EIGEN_APPROXIMATIONS)  # per-position F x F sums
MAX_BYTES = 32 << 30  # beyond this F x F statistics per position are refused (WRN-50-2: 53 GB at 256 px)


def check_feasible(approx: str, F: int, k: int, feature_size: tuple[int, int]) -> None:
    """Refuses, before any image is decoded, what cannot be fitted: sums and precision too large (each
    packed F(F+1)/2 per position for full; the sums and k eigenvectors of F for the others), k' beyond F."""
    if approx not in FULL_COVARIANCE:
        return
    positions = feature_size[0] * feature_size[1]
    sums = positions * F * (F + 1) // 2 * 4
    size = sums + (sums if approx == "full" else positions * F * k * 4)
    if size > MAX_BYTES:
        raise SettingError(f"$approx {approx} needs the full {F} x {F} covariance at each of {positions} positions: "
                        f"{size / 1e9:.1f} GB of float32 sums and precision; use $approx ortho or global, fewer "
                        "$layers, or a smaller $image_size")
    if approx == "lowranki" and eigen_indices(approx, F, k, feature_size)[-1] >= F:
        raise SettingError(f"$approx lowranki takes eigenpairs up to k' = max(min(h, w), k) = "
                        f"{max(min(feature_size), k)} > F = {F}; use a smaller $image_size or lowrank")


def eigen_indices(approx: str, F: int, k: int, feature_size: tuple[int, int]) -> list[int]:
    """The chosen eigenpairs, as indices into eigenvalues sorted in descending order."""
    if approx == "lowrank":
        return list(range(k))
    if approx == "null":
        return list(range(F - k, F))
    end = max(min(feature_size), k)  # lowranki, as the authors' code
    return list(range(end - k, end))


class EigenPrecision:
    """mu (P, F), U_k (P, F, k) and S_k^-1/2 (P, k): d(z) = |S_k^-1/2 U_k^T (z - mu)|."""

    def __init__(self, mu: torch.Tensor, U: torch.Tensor, inv_sqrt: torch.Tensor):
        self.mu, self.U, self.inv_sqrt = mu, U, inv_sqrt

    def distance(self, z: torch.Tensor) -> torch.Tensor:
        """z (P, B, F) -> (P, B)."""
        projected = torch.bmm(z - self.mu.unsqueeze(1), self.U)
        return projected.mul_(self.inv_sqrt.unsqueeze(1)).square_().sum(dim=2).sqrt_()


def fit_eigen(stats: RunningStats, eps: float, unbiased: bool, approx: str, k: int,
              feature_size: tuple[int, int], chunk_elements: int | None = None) -> EigenPrecision:
    """Chunks of positions through a float64 symmetric eigensolver, in threads on the CPU like the
    Cholesky path."""
    n = stats.n
    if n < 1 or (unbiased and n < 2):
        raise UserError(f"need at least {2 if unbiased else 1} training images to fit, got {n}")
    positions, F = stats.sum_z.shape
    check_feasible(approx, F, k, feature_size)
    # eigh sorts ascending: descending index j is ascending index F - 1 - j
    chosen = torch.tensor([F - 1 - j for j in eigen_indices(approx, F, k, feature_size)],
                          device=stats.sum_z.device)
    U = stats.sum_zz.new_empty(positions, F, k)
    inv_sqrt = stats.sum_z.new_empty(positions, k)
    eye = torch.eye(F, dtype=torch.float64, device=stats.sum_z.device)
    if chunk_elements is None:
        chunk_elements = 1 << 20 if stats.sum_z.device.type == "cpu" else 1 << 26
    size = min(positions, max(1, chunk_elements // (F * F)))
    failed = []
    inference = torch.is_inference_mode_enabled()
    local = threading.local()

    def decompose(start: int) -> None:
        with torch.inference_mode(inference):
            if not hasattr(local, "workspace"):
                local.workspace = CovarianceWorkspace(size, F, stats.sum_z.device)
            part = slice(start, start + size)
            cov = local.workspace.covariance(stats, start, min(size, positions - start), unbiased)
            values, vectors = torch.linalg.eigh(cov.add_(eye, alpha=eps))
            values, vectors = values[:, chosen], vectors[:, :, chosen]
            failed.append(bool((values <= 0).any()))
            U[part] = vectors.to(U.dtype)
            inv_sqrt[part] = values.clamp_min(torch.finfo(torch.float64).tiny).rsqrt().to(inv_sqrt.dtype)

    threads = torch.get_num_threads() if U.device.type == "cpu" else 1
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(decompose, range(0, positions, size)))
    if any(failed):
        raise SettingError(f"covariance is not positive definite with $eps = {eps}; use a larger $eps")
    return EigenPrecision(stats.mean(), U, inv_sqrt)
