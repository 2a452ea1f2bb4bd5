"""Pure-torch model: backbone features, embedding W, per-position Gaussian, score maps.

The names below load on first use, so that `models.config` (the settings and their defaults, which
the torch-free dataset declarations read) is imported without torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOME = {"BACKBONES": "backbone", "default_k": "backbone", "feature_dim": "backbone",
         "calibrate": "calibration", "threshold_at_fpr": "calibration", "Config": "config",
         "mahalanobis": "distance", "APPROXIMATIONS": "embedding", "make_projection": "embedding",
         "RunningStats": "gaussian", "cholesky_packed": "gaussian", "config_from_state": "model_file",
         "read_model_file": "model_file", "smooth": "postprocess", "SemiOrthogonal": "semi_ortho"}
__all__ = ["BACKBONES", "default_k", "feature_dim", "calibrate", "threshold_at_fpr", "Config", "mahalanobis",
           "APPROXIMATIONS", "make_projection", "RunningStats", "cholesky_packed", "config_from_state",
           "read_model_file", "smooth", "SemiOrthogonal"]

if TYPE_CHECKING:
    from models.backbone import BACKBONES, default_k, feature_dim
    from models.calibration import calibrate, threshold_at_fpr
    from models.config import Config
    from models.distance import mahalanobis
    from models.embedding import APPROXIMATIONS, make_projection
    from models.gaussian import RunningStats, cholesky_packed
    from models.model_file import config_from_state, read_model_file
    from models.postprocess import smooth
    from models.semi_ortho import SemiOrthogonal


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"models.{_HOME[name]}"), name)
