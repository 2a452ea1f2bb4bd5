"""From a (S/4)^2 distance map to the evaluated S x S score map: bilinear upsampling, Gaussian smoothing."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) -> (B, H, W), bilinear, align_corners=False."""
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def _symmetric_indices(length: int, radius: int, device: torch.device) -> torch.Tensor:
    # scipy.ndimage's 'reflect' mode: (d c b a | a b c d | d c b a), periodic with 2 * length
    index = torch.arange(-radius, length + radius, device=device) % (2 * length)
    return torch.where(index >= length, 2 * length - 1 - index, index)


def gaussian_blur(maps: torch.Tensor, sigma: float = 4.0, truncate: float = 4.0) -> torch.Tensor:
    """(B, H, W) smoothed as scipy.ndimage.gaussian_filter(sigma, truncate, mode='reflect') per map."""
    radius = int(truncate * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(maps.device, maps.dtype)
    height, width = maps.shape[-2:]
    x = maps.unsqueeze(1)
    x = x.index_select(3, _symmetric_indices(width, radius, maps.device))
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = x.index_select(2, _symmetric_indices(height, radius, maps.device))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


def feature_size(size: tuple[int, int]) -> tuple[int, int]:
    """Stride-4 map size of every supported backbone: two stride-2 layers that each round up."""
    return tuple(math.ceil(math.ceil(s / 2) / 2) for s in size)
