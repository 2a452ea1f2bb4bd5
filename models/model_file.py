"""The model file (model.pt): what SemiOrthogonal.save writes and load reads, checked before use.

Format 2: config, W, the running sums (n, shift, sum z, sum zz^T packed: k(k+1)/2 values per
position), thresholds, meta, and the backbone: its tensors, or for torchvision's ImageNet weights
their name, address and digest (backbone.weights_reference). Format 1 (full k x k sums) still loads.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from common import UserError
from models.backbone import FeatureExtractor, build_extractor, imagenet_weights, is_reference, weights_reference
from models.config import Config

if TYPE_CHECKING:
    from models.semi_ortho import SemiOrthogonal

FORMAT = "semiortho-model"
VERSION = 2  # 2: sum zz^T stored packed (k(k+1)/2 per position); 1: full k x k, still read
READABLE_VERSIONS = (1, 2)
REQUIRED_KEYS = ("config", "W", "stats", "backbone")  # "thresholds" and "meta" may be absent
STATS_KEYS = {1: ("n", "shift", "sum_z", "sum_zz"), 2: ("n", "shift", "sum_z", "sum_zz_packed")}


def model_state(model: SemiOrthogonal, embed_backbone: bool = False) -> dict:
    """The dictionary save() writes (tensors and plain values only: loads with weights_only=True)."""
    return {
        "format": FORMAT, "version": VERSION,
        "config": {key: list(v) if isinstance(v, tuple) else v for key, v in asdict(model.config).items()},
        "W": model.W.cpu(),
        "stats": {key: value.cpu() for key, value in model.stats.state().items()},
        "thresholds": dict(model.thresholds),
        "meta": dict(model.meta),
        "backbone": (None if embed_backbone else weights_reference(model.extractor))
        or {key: value.cpu() for key, value in model.extractor.state_dict().items()},
    }


def read_model_file(path: str | Path) -> dict:
    """The saved dictionary, or a one-line UserError for a file that is missing, truncated or not ours."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no model file {path}; pass the model.pt that train.py wrote")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} is not a readable model file ({type(e).__name__}); "
                        "it may be truncated: refit") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a semi-orthogonal model written by train.py")
    if state.get("version") not in READABLE_VERSIONS:
        raise UserError(f"{path} has model format version {state.get('version')}, this code reads "
                        f"{', '.join(map(str, READABLE_VERSIONS))}; refit with this code")
    for key in REQUIRED_KEYS:
        if key not in state:
            raise UserError(f"{path} has no '{key}' entry; the file is damaged: refit or restore it")
    keys = STATS_KEYS[state["version"]]
    missing = [key for key in keys if not isinstance(state["stats"], dict) or key not in state["stats"]]
    if missing:
        raise UserError(f"{path} has no 'stats' entry '{missing[0]}'; the file is damaged: refit or restore it")
    return state


def referenced_backbone(path: str | Path, state: dict) -> FeatureExtractor | None:
    """The backbone a model file names by reference (ImageNet weights), checked against the digest it
    was fitted with; None for a file that holds its backbone's tensors."""
    config, reference = config_from_state(state), state["backbone"]
    if not is_reference(reference):
        return None
    _, cache = imagenet_weights(config.backbone)
    try:
        extractor = build_extractor(config.backbone, "imagenet", config.seed, config.layers, config.pre_relu)
    except UserError:
        raise UserError(f"{path} names torchvision's ImageNet weights ({reference['weights']}) instead of holding "
                        f"them, and they are not usable at {cache}: download {reference['url']} to that path "
                        "(train.py --embed-backbone writes files that hold them)") from None
    if extractor.imagenet_digest != reference["sha256"]:
        raise UserError(f"{path} was fitted with other weights than {cache} holds (their sha256 differs); "
                        f"restore that file from {reference['url']}, or refit")
    return extractor


def config_from_state(state: dict) -> Config:
    config = state["config"]
    return Config(**{**config, "image_size": tuple(config["image_size"]),
                     "crop": tuple(config["crop"]) if config["crop"] else None,
                     "layers": tuple(config.get("layers", (1, 2, 3)))})
