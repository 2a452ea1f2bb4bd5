"""Evaluation metrics (definitions in docs/metrics.md): exact pixel/image ROC-AUC and AU-PRO, and the
authors' protocol (paper_pro, paper_roc, paper_ap, paper_det) for comparison with the paper's tables.
`registry` lists every metric a run computes; `evaluate` computes them, and with a `bootstrap.Bootstrap`
their intervals (`bootstrap`, `resampled`)."""
from .evaluate import evaluate
from .paper import paper_ap, paper_det, paper_fpr, paper_pro, paper_roc
from .pro import aupro, pro_curve
from .registry import REGISTRY, Metric
from .roc import image_auroc, pixel_auroc

__all__ = ["REGISTRY", "Metric", "aupro", "evaluate", "image_auroc", "paper_ap", "paper_det", "paper_fpr", "paper_pro",
           "paper_roc", "pixel_auroc", "pro_curve"]
