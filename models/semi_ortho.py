"""The thin core: fit on a loader, score a batch, save, load. No I/O beyond the model file."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from common import UserError, atomic_write
from models.backbone import FeatureExtractor, build_extractor, feature_dim, is_reference
from models.config import Config
from models.embedding import IDENTITY, make_projection
from models.gaussian import RunningStats, SpilledStats, distance_group, fit_gaussian, mahalanobis, whitened_distance
from models.lowrank import EIGEN_APPROXIMATIONS, fit_eigen
from models.model_file import config_from_state, model_state, read_model_file, referenced_backbone
from models.pooled import PooledStats, fit_pooled
from models.postprocess import feature_size, gaussian_blur, upsample


class SemiOrthogonal(torch.nn.Module):
    """Multi-scale features -> z = W^T x -> one Gaussian per position -> Mahalanobis score maps."""

    def __init__(self, config: Config, weights: str = "imagenet", extractor: FeatureExtractor | None = None):
        """`extractor`: an already built backbone to share between models (building WRN-50-2 takes seconds)."""
        super().__init__()
        self.config = config
        self.extractor = extractor or build_extractor(config.backbone, weights, config.seed, config.layers,
                                                      config.pre_relu)
        W = make_projection(feature_dim(config.backbone, config.layers), config.k, config.approx, config.seed)
        self.register_buffer("W", W)
        self.feature_size = feature_size(config.input_size)
        self.stats: RunningStats | SpilledStats | None = None
        self.register_buffer("mu", None)
        # cov + eps I = L L^T, distances |L^{-1} (z - mu)|: one of L (CPU: triangular solve) or L^{-1}
        # (GPU: GEMM) is held, whichever scores faster there (BENCHMARKS.md)
        self.register_buffer("L", None)
        self.register_buffer("L_inv", None)
        self.precision = None  # --approx global / lowrank / lowranki / null: an object with distance(z)
        self.thresholds: dict[str, float] = {}
        self.meta: dict = {}  # what was fitted, e.g. {"dataset": ..., "category": ...}: merges check it

    @property
    def device(self) -> torch.device:
        return self.W.device

    @property
    def positions(self) -> int:
        return self.feature_size[0] * self.feature_size[1]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> z (P, B, k)."""
        return self.project(self.features(images))

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's three stage outputs, float32 whatever precision the backbone ran in."""
        reduced = self.config.backbone_dtype == "bfloat16"
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=reduced):
            features = self.extractor(images)
        return [f.float() for f in features] if reduced else features

    def project(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The three stage outputs -> z = W^T x (P, B, k) at stride 4.

        Each stage is projected by its rows of W at its own resolution and then upsampled: nearest
        upsampling commutes with a per-position linear map, so this equals projecting the F-channel
        concatenation, without ever building it.
        """
        if self.config.approx in IDENTITY:  # W = I: the concatenation itself, without F x F multiply-adds
            z = torch.cat([f if f.shape[-2:] == self.feature_size else
                           F.interpolate(f, size=self.feature_size, mode="nearest") for f in features], dim=1)
            return z.reshape(z.shape[0], z.shape[1], -1).permute(2, 0, 1)
        z = None
        start = 0
        for feature in features:
            rows = self.W[start:start + feature.shape[1]]
            start += feature.shape[1]
            part = torch.einsum("bchw,ck->bkhw", feature, rows)
            if part.shape[-2:] != self.feature_size:
                part = F.interpolate(part, size=self.feature_size, mode="nearest")
            z = part if z is None else z + part
        b, k = z.shape[:2]
        return z.reshape(b, k, -1).permute(2, 0, 1)

    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor]) -> None:
        """Accumulates the running sums over batches of (B, 3, H, W) images; call finalize() after."""
        self.fit_embeddings(self.embed(images.to(self.device, non_blocking=True)) for images in batches)

    @torch.no_grad()
    def fit_embeddings(self, embeddings: Iterable[torch.Tensor], accumulate: int = 32) -> None:
        """Accumulates batches of z (P, B, k).

        Embeddings of `accumulate` images are gathered before each update: the update reads and
        writes all of sum zz^T (1.5 GB for WRN-50-2, k = 300), so small updates are memory-bound.
        """
        if self.stats is None:
            self.stats = stats_class(self.config.approx)(self.positions, self.W.shape[1], self.device)
        buffer, filled = None, 0
        for z in embeddings:
            if buffer is None:
                buffer = z.new_empty(z.shape[0], max(accumulate, z.shape[1]), z.shape[2])
            if filled + z.shape[1] > buffer.shape[1]:
                self.stats.update(buffer[:, :filled])
                filled = 0
            buffer[:, filled:filled + z.shape[1]] = z
            filled += z.shape[1]
        if filled:
            self.stats.update(buffer[:, :filled])

    def finalize(self, keep_stats: bool = False) -> None:
        """mu and L^{-1} from the sums. Without keep_stats the sums' memory becomes L^{-1}."""
        if self.stats is None or self.stats.n == 0:
            raise UserError("no training images were fitted")
        c = self.config
        if c.approx == "global":
            self.precision = fit_pooled(self.stats, c.eps, c.unbiased)
        elif c.approx in EIGEN_APPROXIMATIONS:
            self.precision = fit_eigen(self.stats, c.eps, c.unbiased, c.approx, c.k, self.feature_size,
                                       in_place=not keep_stats)
        else:
            inverse = self.device.type != "cpu"
            self.mu, factor = fit_gaussian(self.stats, c.eps, c.unbiased, in_place=not keep_stats, inverse=inverse)
            self.L, self.L_inv = (None, factor) if inverse else (factor, None)
        if not keep_stats:
            self.stats = None

    @torch.no_grad()
    def distances(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> Mahalanobis distances at feature resolution (B, h, w)."""
        return self.distances_of(self.embed(images.to(self.device, non_blocking=True)))

    def distances_of(self, z: torch.Tensor) -> torch.Tensor:
        if self.precision is not None:
            return self.precision.distance(z).t().reshape(-1, *self.feature_size)
        if self.L_inv is not None:
            distances = whitened_distance(z, self.mu, self.L_inv)
        elif self.L is not None:
            distances = mahalanobis(z, self.mu, self.L)
        else:
            raise RuntimeError("finalize() the model before scoring")
        return distances.t().reshape(-1, *self.feature_size)

    def smooth(self, distances: torch.Tensor) -> torch.Tensor:
        """(B, h, w) distances -> (B, H, W) score maps: bilinear upsampling, Gaussian sigma = 4."""
        return gaussian_blur(upsample(distances, self.config.input_size), self.config.sigma)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> score maps (B, H, W) smoothed at input size, and image scores (B,) = map max."""
        maps = self.smooth(self.distances(images))
        return maps, maps.flatten(1).amax(dim=1)

    @torch.no_grad()
    def predict_batches(self, batches: Iterable[torch.Tensor], group: int | None = None
                        ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """predict() of each batch, in order. The distances of up to `group` images are computed
        together (default: gaussian.distance_group)."""
        group = group or distance_group(self.positions, self.W.shape[1])
        buffer, sizes = None, []
        for images in batches:
            z = self.embed(images.to(self.device, non_blocking=True))
            if buffer is None:
                buffer = z.new_empty(z.shape[0], max(group, z.shape[1]), z.shape[2])
            if sum(sizes) + z.shape[1] > buffer.shape[1]:
                yield from self._predict_group(buffer[:, :sum(sizes)], sizes)
                sizes = []
            buffer[:, sum(sizes):sum(sizes) + z.shape[1]] = z
            sizes.append(z.shape[1])
        if sizes:
            yield from self._predict_group(buffer[:, :sum(sizes)], sizes)

    def _predict_group(self, z: torch.Tensor, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        distances = self.distances_of(z)  # before anything is yielded: z's buffer is free for the next group
        maps = [self.smooth(part) for part in distances.split(sizes)]  # a batch at a time: blur memory stays small
        return [(part, part.flatten(1).amax(dim=1)) for part in maps]

    def spill_and_finalize(self, path: str | Path) -> None:
        """finalize() in the sums' memory, their packed copy kept in a raw file at `path` for save()."""
        spilled = self.stats.spill(path)
        self.finalize()
        self.stats = spilled

    def release_factor(self) -> None:
        """Frees mu and L or L^{-1} (the model can no longer score), e.g. before save() reads spilled sums back."""
        self.mu = self.L = self.L_inv = None

    def save(self, path: str | Path, embed_backbone: bool = False) -> None:
        """Atomically writes config, W, the running sums (packed), the backbone and thresholds (no pickled code).

        A backbone with torchvision's ImageNet weights is stored by address and digest (99 MB less for
        WRN-50-2), unless embed_backbone: then, as random or file weights always are, by its tensors.
        Spilled sums (spill_and_finalize) are read back for the write and their file removed after it."""
        if self.stats is None:
            raise RuntimeError("save() needs the running sums: call it before finalize(), with keep_stats=True "
                               "or after spill_and_finalize()")
        state = model_state(self, embed_backbone)
        atomic_write(path, lambda tmp: torch.save(state, tmp))
        if isinstance(self.stats, SpilledStats):
            self.stats.discard()
            self.stats = None

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu", finalize: bool = True) -> SemiOrthogonal:
        state = read_model_file(path)
        model = cls(config_from_state(state), weights="random", extractor=referenced_backbone(path, state))
        if not is_reference(state["backbone"]):
            model.extractor.load_state_dict(state["backbone"])
        model.W.copy_(state["W"])
        model.thresholds = dict(state.get("thresholds") or {})
        model.meta = dict(state.get("meta") or {})  # files written before meta existed have none
        model.to(device)
        model.stats = stats_class(model.config.approx).from_state(state["stats"], device)
        if finalize:
            model.finalize(keep_stats=True)
        return model


def stats_class(approx: str) -> type[RunningStats]:
    """global keeps F x F sums pooled over positions; every other approx one k x k sum per position."""
    return PooledStats if approx == "global" else RunningStats
