"""The thin core: fit on a loader, score a batch, save, load. No I/O beyond the model file."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import cast

import torch

from common import UserError
from models.backbone import FeatureExtractor, build_extractor, feature_dim, feature_size, is_reference
from models.blocks import BlockedStats
from models.config import Config
from models.distance import inverse_of_packed, mahalanobis, whitened_distance
from models.embedding import IDENTITY, add_nearest, make_projection
from models.gaussian import RunningStats, cholesky_packed, inverse_cholesky
from models.groups import Fitter, Gathered, Group, Scorer
from models.lowrank import EIGEN_APPROXIMATIONS, EigenPrecision, fit_eigen
from models.model_file import (
    check_backbone_tensors,
    config_from_state,
    model_state,
    read_model_file,
    referenced_backbone,
    save_state,
)
from models.pooled import PooledPrecision, PooledStats, fit_pooled
from models.postprocess import smooth
from models.tiles import stitch, tile


class SemiOrthogonal(torch.nn.Module):
    """Multi-scale features -> z = W^T x -> one Gaussian per position -> Mahalanobis score maps."""

    # the buffers, which nn.Module's __getattr__ would type as Tensor | Module
    W: torch.Tensor
    mu: torch.Tensor | None
    L_packed: torch.Tensor | None
    L_inv: torch.Tensor | None
    precision: PooledPrecision | EigenPrecision | None

    def __init__(self, config: Config, weights: str = "imagenet", extractor: FeatureExtractor | None = None):
        """`extractor`: an already built backbone to share between models (building WRN-50-2 takes seconds)."""
        super().__init__()
        self.config = config
        self.extractor = extractor or build_extractor(config.backbone, weights, config.seed, config.layers,
                                                      config.pre_relu)
        W = make_projection(feature_dim(config.backbone, config.layers), config.k, config.approx, config.seed)
        self.register_buffer("W", W)
        self.feature_size = feature_size(config.model_size, config.backbone)  # a tile's, if tiled
        self.stats: RunningStats | BlockedStats | None = None  # BlockedStats: fitted in blocks, saved only
        self.register_buffer("mu", None)
        # cov + eps I = L L^T, distances |L^{-1} (z - mu)|: one of L packed (CPU: triangular solve, beside
        # the packed sums in their size) or L^{-1} (GPU: GEMM) is held, whichever scores faster there
        self.register_buffer("L_packed", None)
        self.register_buffer("L_inv", None)
        self.precision = None  # --approx global / lowrank / lowranki / null: an object with distance(z)
        self.thresholds: dict[str, float] = {}
        self.calibration: dict = {}  # what set the thresholds: rule, alpha, the n calibration scores (p-values)
        self.meta: dict = {}  # what was fitted, e.g. {"dataset": ..., "category": ...}: merges check it
        # one int64 digest per fitted image file (path, size, mtime; pipeline/plan.py), sorted: --resume
        # and merges refuse images already in the sums. Fewer than stats.n: some were fitted unrecorded.
        self.fitted = torch.empty(0, dtype=torch.int64)
        self.provenance: dict = {}  # what produced the fit (pipeline/provenance.py); files older have none
        self._buffer: torch.Tensor | None = None  # gather()'s embeddings, reused by the fit and scoring

    @property
    def device(self) -> torch.device:
        return self.W.device

    @property
    def positions(self) -> int:
        return self.feature_size[0] * self.feature_size[1]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> z (P, B, k), images of the model's size (a tiled model's: tiles)."""
        return self.project(self.features(images))

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's three stage outputs, float32 whatever precision the backbone ran in."""
        reduced = self.config.backbone_dtype == "bfloat16"
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=reduced):
            features = self.extractor(images)
        return [f.float() for f in features] if reduced else features

    def project(self, features: list[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
        """The stage outputs -> z = W^T x (P, B, k) at stride 4, written into `out` (P, B, k) if given.

        Each stage is projected by its rows of W at its own resolution and added to the stride-4
        positions it covers: nearest upsampling commutes with a per-position linear map, so this equals
        projecting the F-channel concatenation, without ever building it. With `out` (the fit's and
        scoring's reused buffers), the full-resolution stage is one GEMM per image written straight
        into it, and nothing of the size of z is allocated.
        """
        h, w = self.feature_size
        batch = features[0].shape[0]
        identity = self.config.approx in IDENTITY  # W = I: the concatenation itself, without F x F multiply-adds
        direct = out is not None and not identity
        if out is None:
            out = features[0].new_empty(h * w, batch, self.W.shape[1])
        grid = out.view(h, w, batch, -1)  # z's positions as the map's rows and columns
        start = 0
        for i, feature in enumerate(features):
            channels = slice(start, start + feature.shape[1])
            start = channels.stop
            if direct and i == 0 and feature.shape[-2:] == (h, w):
                for j in range(batch):
                    torch.mm(feature[j].permute(1, 2, 0).reshape(h * w, -1), self.W[channels], out=out[:, j])
                continue
            part = feature.permute(2, 3, 0, 1)  # (h_i, w_i, B, C_i): a view of channels-last features
            if identity:
                add_nearest(grid[..., channels], part, assign=True)
            else:
                add_nearest(grid, torch.matmul(part, self.W[channels]), assign=i == 0)
        return out

    def gather(self, feature_batches: Iterable[list[torch.Tensor]], capacity: int | None = None
               ) -> Iterator[Gathered]:
        """Projects batches of stage outputs into a (P, capacity, k) buffer (default group_size) and
        yields its filled part z (P, n, k) with the batch sizes in it whenever the next batch would
        not fit, and at the end (models/groups.py)."""
        group = Group(self, capacity)
        for features in feature_batches:
            yield from group.add(features)
        yield from group.flush()

    def features_of(self, batches: Iterable[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
        """The stage outputs of each batch; a tiled model's of the batch's tiles, at most as many at a time
        as the batch has images (the activations of one batch, whatever the number of tiles)."""
        c = self.config
        for images in batches:
            images = images.to(self.device, non_blocking=True)
            if c.tile is None:
                yield self.features(images)
                continue
            assert c.stride is not None  # tiled
            for chunk in tile(images, c.tile, c.stride).split(images.shape[0]):
                yield self.features(chunk)

    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor]) -> None:
        """Accumulates the running sums over batches of (B, 3, H, W) images (a tiled model: over their
        tiles, as if each were an image); call finalize() after."""
        self.fit_features(self.features_of(batches))

    @torch.no_grad()
    def fit_features(self, feature_batches: Iterable[list[torch.Tensor]]) -> None:
        """Accumulates the sums over batches of stage outputs, a gathered group of images per update."""
        fitter = Fitter(self)
        for features in feature_batches:
            fitter.add(features)
        fitter.flush()

    def begin_fit(self) -> RunningStats:
        """The sums a fit adds to: new ones, or those it already has (--resume)."""
        if self.stats is None:
            self.stats = stats_class(self.config.approx)(self.positions, self.W.shape[1], self.device)
        return self.running_stats()

    def running_stats(self) -> RunningStats:
        """The sums in memory; a model fitted in blocks has them in its sums file (load() reads them)."""
        if isinstance(self.stats, BlockedStats) or self.stats is None:
            raise RuntimeError("the sums are not in memory: load the model file")
        return self.stats

    def finalize(self, inverse: bool | None = None) -> None:
        """mu and the factor (or the --approx alternative's precision) from the sums, which stay: save()
        writes them; drop them (model.stats = None) once saved or not needed. The factor is L, packed,
        for the triangular solve (CPU), or with `inverse` (default on a GPU) L^{-1} for one GEMM."""
        if self.stats is None or self.stats.n == 0:
            raise UserError("no training images were fitted")
        stats, c = self.running_stats(), self.config
        if c.approx == "global":
            self.precision = fit_pooled(cast(PooledStats, stats), c.eps, c.unbiased)  # stats_class's
        elif c.approx in EIGEN_APPROXIMATIONS:
            self.precision = fit_eigen(stats, c.eps, c.unbiased, c.approx, c.k, self.feature_size)
        elif inverse or (inverse is None and self.device.type != "cpu"):
            self.mu, self.L_inv = inverse_cholesky(stats, c.eps, c.unbiased)
        else:
            self.mu, self.L_packed = cholesky_packed(stats, c.eps, c.unbiased)

    def score_by_inverse(self) -> None:
        """Scores from now on with L^{-1} dense, by one GEMM (as the exported graph does), not with the packed
        L by a triangular solve per position: for one image at a time 3.5x faster (BENCHMARKS.md,
        "Runtimes"), for L^{-1} computed once and twice the factor's memory. The sums go first, so the peak
        stays below sums + L + L^{-1}: a model scored this way cannot be saved. No-op without a packed L."""
        if self.L_packed is None:
            return
        self.stats = None
        self.L_inv, self.L_packed = inverse_of_packed(self.L_packed), None

    @torch.no_grad()
    def distances(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> Mahalanobis distances at feature resolution (B, h, w); a tiled model's for each
        image's tiles in turn (B * n, h, w)."""
        if self.config.tile is None:
            return self.distances_of(self.embed(images.to(self.device, non_blocking=True)))
        return torch.cat([self.distances_of(z) for z, _ in self.gather(self.features_of([images]))])

    def distances_of(self, z: torch.Tensor) -> torch.Tensor:
        if self.precision is not None:
            return self.precision.distance(z).t().reshape(-1, *self.feature_size)
        mu = cast(torch.Tensor, self.mu)  # finalize() sets it with L_inv or L_packed
        if self.L_inv is not None:
            distances = whitened_distance(z, mu, self.L_inv)
        elif self.L_packed is not None:
            distances = mahalanobis(z, mu, self.L_packed)
        else:
            raise RuntimeError("finalize() the model before scoring")
        return distances.t().reshape(-1, *self.feature_size)

    def smooth(self, distances: torch.Tensor) -> torch.Tensor:
        """(B, h, w) distances -> (B, H, W) score maps: bilinear upsampling, Gaussian sigma = 4. A tiled
        model: (B * n, h, w) -> (B, H, W), each tile upsampled, overlaps averaged, then the map blurred."""
        if self.config.tile is not None:
            return stitch(distances, self.config)
        return smooth(distances, self.config.input_size, self.config.sigma)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> score maps (B, H, W) smoothed at input size, and image scores (B,) = map max."""
        maps = self.smooth(self.distances(images))
        return maps, maps.flatten(1).amax(dim=1)

    @torch.no_grad()
    def predict_batches(self, batches: Iterable[torch.Tensor], group: int | None = None
                        ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """predict() of each batch, in order. The distances of up to `group` images are computed
        together (default: group_size); a tiled model's tiles of one batch at a time (models/groups.py)."""
        scorer = Scorer(self, group)
        for images in batches:
            for features in self.features_of([images]):
                yield from scorer.add(features)
            yield from scorer.end_batch()
        yield from scorer.flush()

    def predict_group(self, z: torch.Tensor, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The maps and image scores of a gathered group z (P, n, k), batch by batch of `sizes`."""
        distances = self.distances_of(z)  # before anything is yielded: z's buffer is free for the next group
        maps = [self.smooth(part) for part in distances.split(sizes)]  # a batch at a time: blur memory stays small
        return [(part, part.flatten(1).amax(dim=1)) for part in maps]

    def save(self, path: str | Path, embed_backbone: bool = False) -> None:
        """Atomically writes config, W, the running sums (packed), the backbone and thresholds (no pickled code).

        A backbone with torchvision's ImageNet weights is stored by address and digest (99 MB less for
        WRN-50-2), unless embed_backbone: then, as random or file weights always are, by its tensors.
        Reads the model only: another thread may go on scoring with it meanwhile."""
        if self.stats is None:
            raise RuntimeError("save() needs the running sums, and they were dropped")
        save_state(model_state(self, embed_backbone), path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu", finalize: bool = True,
             sums_in_memory: bool = True) -> SemiOrthogonal:
        """The model a file holds, finalized unless asked not to. A model fitted in blocks (format 3) without
        `sums_in_memory` keeps its sums in their file (BlockedStats, for models/blocks.score_in_blocks)."""
        state = read_model_file(path)
        model = cls(config_from_state(state, path), weights="random", extractor=referenced_backbone(path, state))
        if not is_reference(state["backbone"]):
            check_backbone_tensors(path, model.extractor.state_dict(), state["backbone"])
            model.extractor.load_state_dict(state["backbone"])
        model.W.copy_(state["W"])
        model.thresholds = dict(state.get("thresholds") or {})
        model.calibration = dict(state.get("calibration") or {})  # files written before it have none
        model.provenance = dict(state.get("provenance") or {})
        model.meta = dict(state.get("meta") or {})  # files written before meta existed have none
        if state.get("fitted") is not None:  # files written before the digests existed have none
            model.fitted = state["fitted"].clone()
        model.to(device)
        stats = state["stats"]
        if "sum_zz_file" in stats and not sums_in_memory:
            model.stats = BlockedStats(int(stats["n"]), stats["shift"], stats["sum_z"], Path(stats["sum_zz_file"]))
            return model
        model.stats = stats_class(model.config.approx).from_state(stats, device)
        if finalize:
            model.finalize()
        return model


def stats_class(approx: str) -> type[RunningStats]:
    """global keeps F x F sums pooled over positions; every other approx one k x k sum per position."""
    return PooledStats if approx == "global" else RunningStats
