"""The embedding W (F x k): z = W^T x projects every feature vector before any statistics."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from common import UserError
from models.config import Approx, Config

APPROXIMATIONS = tuple(Approx)
IDENTITY = ("full", "global", "lowrank", "lowranki", "null")  # W = I: statistics of all F channels


def make_projection(F: int, k: int, approx: str = Config.approx, seed: int = Config.seed) -> torch.Tensor:
    """A seeded F x k float32 matrix.

    ortho: uniform on the Stiefel manifold (W^T W = I_k), the paper's semi-orthogonal embedding;
    sample: k distinct columns of the identity (PaDiM's random channel selection);
    gaussian: i.i.d. N(0, 1), not orthogonalised (ablation); full: the identity, k = F (exact);
    global, lowrank, lowranki, null: the identity too, their precision differs (models/pooled.py,
    models/lowrank.py); k is the number of eigenpairs for the last three, F for global.
    """
    if approx not in APPROXIMATIONS:
        raise UserError(f"approx {approx!r}: choose one of {', '.join(APPROXIMATIONS)}")
    if approx in ("full", "global"):
        k = F
    if not 1 <= k <= F:
        raise UserError(f"k = {k} must be between 1 and F = {F} (the backbone's feature channels)")
    generator = torch.Generator().manual_seed(seed)
    if approx in IDENTITY:
        return torch.eye(F)
    if approx == "sample":
        columns = torch.randperm(F, generator=generator)[:k].sort().values
        return torch.eye(F)[:, columns].contiguous()
    gaussian = torch.randn(F, k, generator=generator, dtype=torch.float64)
    if approx == "gaussian":
        return gaussian.float()
    q, r = torch.linalg.qr(gaussian)
    # Sign-correcting Q by R's diagonal makes the draw uniform (Haar), as torch.nn.init.orthogonal_.
    return (q * torch.sign(torch.diagonal(r)).unsqueeze(0)).float().contiguous()


def add_nearest(grid: torch.Tensor, part: torch.Tensor, assign: bool = False) -> None:
    """grid (h, w, ...) += part (h_i, w_i, ...) upsampled to (h, w) by nearest neighbour (= with assign).
    An integer factor repeats each value over a block, as F.interpolate's nearest rule does."""
    (h, w), (rows, cols) = grid.shape[:2], part.shape[:2]
    if h % rows or w % cols:  # not an integer factor: F.interpolate's own index rule
        part = F.interpolate(part.permute(2, 3, 0, 1), size=(h, w), mode="nearest").permute(2, 3, 0, 1)
        rows, cols = h, w
    blocks = grid.view(rows, h // rows, cols, w // cols, *grid.shape[2:])
    part = part[:, None, :, None]
    if assign:
        blocks.copy_(part)
    else:
        blocks.add_(part)
