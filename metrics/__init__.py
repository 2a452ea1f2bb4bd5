"""Evaluation metrics (definitions in docs/metrics.md): exact pixel/image ROC-AUC and AU-PRO, and the
authors' protocol (paper_pro, paper_roc, paper_ap) for comparison with the paper's tables."""
from .evaluate import evaluate
from .paper import paper_ap, paper_fpr, paper_pro, paper_roc
from .pro import aupro, pro_curve
from .roc import image_auroc, pixel_auroc

__all__ = ["aupro", "evaluate", "image_auroc", "paper_ap", "paper_fpr", "paper_pro", "paper_roc", "pixel_auroc",
           "pro_curve"]
