"""The fitted model as one traceable torch graph for export: images -> score maps and image scores; a tiled
model's: tiles -> each tile's upsampled distance map (the runtime averages the overlaps and blurs).

The graph carries the inverse Cholesky factor L^{-1} that the model scores with (ONNX has no
triangular solve anyway): the distance |L^{-1} (z - mu)| is a batched matrix product.
"""
from __future__ import annotations

from typing import cast

import torch

from common import SettingError
from models.distance import inverse_of_packed
from models.postprocess import axis_matrix, upsampling_matrix
from models.semi_ortho import SemiOrthogonal


class DistanceGraph(torch.nn.Module):
    """Backbone taps, z = W^T x, Mahalanobis distance with mu and L^{-1}, at feature resolution. The
    backbone runs in float32 whatever backbone_dtype the model was fitted with."""

    # the buffers, which nn.Module's __getattr__ would type as Tensor | Module
    W: torch.Tensor
    mu: torch.Tensor
    L_inv: torch.Tensor

    def __init__(self, model: SemiOrthogonal):
        super().__init__()
        if getattr(model, "precision", None) is not None:  # --approx variants that score without mu and L
            raise SettingError(f"$approx {model.config.approx} models cannot be exported; ortho, sample, gaussian "
                            "and full can")
        if model.L_packed is None and model.L_inv is None:
            raise RuntimeError("finalize() the model before exporting it")
        self.extractor = model.extractor
        self.size = model.config.model_size  # a tiled model's: the tile
        self.feature_size = model.feature_size
        self.sigma = model.config.sigma
        self.project = model.project
        self.register_buffer("W", model.W)
        assert model.mu is not None  # finalize() sets it with L_packed or L_inv
        self.register_buffer("mu", model.mu.float())
        # an exported graph scores by GEMM: L^{-1}, even where the model itself solves with L
        L_inv = inverse_of_packed(cast(torch.Tensor, model.L_packed)) if model.L_inv is None else model.L_inv
        self.register_buffer("L_inv", L_inv.float())

    def distances(self, images: torch.Tensor) -> torch.Tensor:
        z = self.project(self.extractor(images))  # (P, N, k)
        whitened = torch.matmul(z - self.mu.unsqueeze(1), self.L_inv.transpose(1, 2))  # (P, N, k)
        return whitened.square().sum(dim=2).sqrt().t().reshape(-1, *self.feature_size)


class ScoringGraph(DistanceGraph):
    """Input: (N, 3, H, W) images normalised as in training, H x W the model's input size. Output: score
    maps (N, H, W) and image scores (N,) = map maximum, as SemiOrthogonal.predict."""

    rows: torch.Tensor
    cols: torch.Tensor

    def __init__(self, model: SemiOrthogonal):
        super().__init__(model)
        # models/postprocess.py's smooth, its matrices built here: built while the exporter traces, they would
        # be fake tensors, and its cache would hand them to every later SemiOrthogonal.predict of the process
        self.register_buffer("rows", axis_matrix(self.feature_size[0], self.size[0], self.sigma).float())
        self.register_buffer("cols", axis_matrix(self.feature_size[1], self.size[1], self.sigma).float())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.rows @ self.distances(images) @ self.cols.t()
        return maps, maps.flatten(1).amax(dim=1)


class TileGraph(DistanceGraph):
    """A tiled model's. Input: (N, 3, S_h, S_w) tiles of normalised images (models/tiles.py's `tile`).
    Output: each tile's distances upsampled to the tile (N, S_h, S_w), bilinear and unblurred:
    models/tiles.py's `stitch` without its first step makes them SemiOrthogonal.predict's maps."""

    rows: torch.Tensor
    cols: torch.Tensor

    def __init__(self, model: SemiOrthogonal):
        super().__init__(model)
        # models/postprocess.py's upsample, its matrices built here (ScoringGraph says why)
        self.register_buffer("rows", upsampling_matrix(self.feature_size[0], self.size[0]).float())
        self.register_buffer("cols", upsampling_matrix(self.feature_size[1], self.size[1]).float())

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.rows @ self.distances(tiles) @ self.cols.t()
