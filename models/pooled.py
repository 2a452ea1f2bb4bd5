"""`--approx global`: one covariance shared by every position (no W), each position keeping its mean.

The pooled covariance is the mean over positions of the per-position covariances of the full
F-channel features, plus eps I. Only sum over positions of sum (x - a_p)(x - a_p)^T (F x F) and the
per-position sums of x are kept, so it is cheap for every backbone (WRN-50-2: 1792 x 1792).
"""
from __future__ import annotations

import torch

from common import SettingError, UserError
from models.gaussian import RunningStats, pack_lower, unpack_lower


class PooledStats(RunningStats):
    """RunningStats with sum_zz summed over positions: (F, F) instead of (P, F, F)."""

    def __init__(self, positions: int, k: int, device: torch.device | str = "cpu"):
        super().__init__(0, k, device)
        self.shift = torch.zeros(positions, k, device=device)
        self.sum_z = torch.zeros(positions, k, device=device)
        self.sum_zz = torch.zeros(k, k, device=device)

    def update(self, z: torch.Tensor, chunk: int | None = None) -> None:  # chunk: RunningStats' signature
        """z: (P, B, F)."""
        if self.n == 0:
            self.shift.copy_(z.mean(dim=1))
        centred = z - self.shift.unsqueeze(1)
        self.sum_z += centred.sum(dim=1)
        flat = centred.reshape(-1, z.shape[2])
        self.sum_zz.addmm_(flat.t(), flat)
        self.n += z.shape[1]

    def state(self) -> dict[str, torch.Tensor]:
        """As RunningStats' format 2, the one (F, F) sum packed as a single row."""
        return {"n": torch.tensor(self.n), "shift": self.shift, "sum_z": self.sum_z,
                "sum_zz_packed": pack_lower(self.sum_zz.unsqueeze(0))}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> PooledStats:
        stats = super().from_state(state, device)
        stats.sum_zz = unpack_lower(stats.sum_zz, stats.sum_z.shape[1])[0]  # stored as one packed (F, F) row
        return stats

    def reshift(self, shift: torch.Tensor, chunk: int = 256) -> None:  # chunk: RunningStats' signature
        """sum_p sum (z - b_p)(..)^T = sum_zz + S1^T D + D^T S1 + n D^T D, with D = a - b, S1 = sum (z - a)."""
        d = (self.shift - shift).double()
        s1 = self.sum_z.double()
        cross = s1.t() @ d
        self.sum_zz = (self.sum_zz.double() + cross + cross.t() + self.n * d.t() @ d).to(self.sum_zz.dtype)
        self.sum_z = (s1 + self.n * d).to(self.sum_z.dtype)
        self.shift = shift.clone()


class PooledPrecision:
    """mu (P, F) and the Cholesky factor L (F, F) of the pooled covariance + eps I."""

    def __init__(self, mu: torch.Tensor, chol: torch.Tensor):
        self.mu, self.chol = mu, chol

    def distance(self, z: torch.Tensor) -> torch.Tensor:
        """z (P, B, F) -> (P, B): one triangular solve for every position and image at once."""
        P, B, F = z.shape
        diff = (z - self.mu.unsqueeze(1)).reshape(-1, F).t()
        whitened = torch.linalg.solve_triangular(self.chol, diff, upper=False)
        return whitened.square_().sum(dim=0).sqrt_().reshape(P, B)


def fit_pooled(stats: PooledStats, eps: float, unbiased: bool = False) -> PooledPrecision:
    n = stats.n
    if n < 1 or (unbiased and n < 2):
        raise UserError(f"need at least {2 if unbiased else 1} training images to fit, got {n}")
    positions, F = stats.sum_z.shape
    m = stats.sum_z.double() / n  # per-position means of z - shift
    cov = (stats.sum_zz.double() / n - m.t() @ m) / positions
    if unbiased:
        cov *= n / (n - 1)
    cov += eps * torch.eye(F, dtype=torch.float64, device=cov.device)
    chol, info = torch.linalg.cholesky_ex(cov)
    if info.item() != 0:
        raise SettingError(f"pooled covariance is not positive definite with $eps = {eps}; use a larger $eps")
    return PooledPrecision(stats.mean(), chol.to(stats.sum_z.dtype))
