"""The Mahalanobis distance of embeddings z from each position's Gaussian, given its Cholesky factor."""
from __future__ import annotations

import math

import torch

from models.gaussian import unpack_lower


def mahalanobis(z: torch.Tensor, mu: torch.Tensor, L_packed: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """sqrt((z - mu)^T (L L^T)^{-1} (z - mu)) for z (P, B, k) -> (P, B), with L packed (P, k(k+1)/2)
    (gaussian.cholesky_packed): a triangular solve per position, batched over the B images.

    `chunk` positions at a time are unpacked into one zeroed workspace (its upper triangle stays 0):
    the temporaries stay small and in cache."""
    positions, _, k = z.shape
    chunk = min(chunk, positions)
    factor = z.new_zeros(chunk, k, k)
    out = z.new_empty(z.shape[:2])
    for start in range(0, positions, chunk):
        part = slice(start, start + chunk)
        count = min(chunk, positions - start)
        L = unpack_lower(L_packed[part], k, factor[:count], symmetric=False)
        centred = (z[part] - mu[part].unsqueeze(1)).transpose(1, 2)
        whitened = torch.linalg.solve_triangular(L, centred, upper=False)
        out[part] = whitened.square_().sum(dim=1).sqrt_()
    return out


def whitened_distance(z: torch.Tensor, mu: torch.Tensor, L_inv: torch.Tensor) -> torch.Tensor:
    """|L^{-1} (z - mu)| for z (P, B, k) -> (P, B), with L^{-1} full (gaussian.inverse_cholesky): the
    Mahalanobis distance as one batched GEMM.

    z - mu first: whitening z and mu apart and subtracting would cancel digits for a large mean."""
    whitened = torch.bmm(z - mu.unsqueeze(1), L_inv.transpose(1, 2))
    return whitened.square_().sum(dim=2).sqrt_()


def inverse_of_packed(L_packed: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """L^{-1} (P, k, k) from packed L, in float64 a chunk of positions at a time (for graphs that score
    by GEMM)."""
    positions, size = L_packed.shape
    k = (math.isqrt(8 * size + 1) - 1) // 2  # size = k(k+1)/2
    eye = torch.eye(k, dtype=torch.float64, device=L_packed.device)
    out = L_packed.new_empty(positions, k, k)
    for start in range(0, positions, chunk):
        L = unpack_lower(L_packed[start:start + chunk].double(), k)
        out[start:start + chunk] = torch.linalg.solve_triangular(L, eye.expand_as(L), upper=False)
    return out
