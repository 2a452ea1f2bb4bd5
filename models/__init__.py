"""Pure-torch model: backbone features, embedding W, per-position Gaussian, score maps."""
from models.backbone import BACKBONES, default_k, feature_dim
from models.calibration import calibrate, threshold_at_fpr
from models.config import Config
from models.distance import mahalanobis
from models.embedding import APPROXIMATIONS, make_projection
from models.gaussian import RunningStats, cholesky_packed
from models.model_file import config_from_state, read_model_file
from models.postprocess import smooth
from models.semi_ortho import SemiOrthogonal

__all__ = ["BACKBONES", "APPROXIMATIONS", "Config", "RunningStats", "SemiOrthogonal", "default_k",
           "feature_dim", "cholesky_packed", "smooth", "mahalanobis", "make_projection",
           "read_model_file", "calibrate", "threshold_at_fpr", "config_from_state"]
