"""In-process measurements for tools/benchmark.py: the model's phases one at a time on decoded images,
with peak memory sampled as they run; the machine they ran on, and the tables they are printed as."""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import _root  # noqa: F401


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


class Phase:
    """Times a block and records the peak RSS (and GPU memory) seen while it ran."""

    def __init__(self, report: list, name: str, items: int, device):
        self.report, self.name, self.items, self.device = report, name, items, device

    def __enter__(self):
        import torch

        self.peak, self.running = rss_mb(), True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.start = time.perf_counter()
        return self

    def _watch(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - self.start
        self.running = False
        self.thread.join()
        row = {"phase": self.name, "seconds": seconds, "items": self.items,
               "per_second": self.items / seconds if seconds > 0 else float("inf"), "peak_rss_mb": self.peak}
        if self.device.type == "cuda":
            row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        self.report.append(row)


def phases(root: Path, category: str, args: argparse.Namespace) -> list[dict]:
    """The pipeline one phase at a time, with the model's own functions."""
    import numpy as np
    import torch

    import results
    from datasets.base import ImageDataset, SegmentedLoader
    from datasets.mvtec import load
    from metrics.inputs import MetricInputs
    from metrics.registry import computed_for
    from models import Config, SemiOrthogonal
    from pipeline.plan import split_validation

    device = torch.device(args.device)
    report: list[dict] = []
    splits = load(root, category)
    fit, val = split_validation(splits.train)
    test = val + splits.test
    batch = args.batch_size or (32 if device.type == "cuda" else 8)
    model = SemiOrthogonal(Config(backbone=args.model, k=args.k, approx=args.approx, image_size=(args.image_size,) * 2,
                                  backbone_dtype=args.backbone_dtype), weights="random").to(device)
    with Phase(report, "decode", len(fit) + len(test), device):
        size = model.config.image_size
        data = SegmentedLoader([ImageDataset(fit, size), ImageDataset(test, size)], batch, args.workers)
        fit_batches = [b.image for b in data.next_segment()]
        test_batches = [(b.image, b.mask) for b in data.next_segment()]
    with torch.inference_mode():
        with Phase(report, "backbone forward", len(fit) + len(test), device):
            for images in fit_batches + [t[0] for t in test_batches]:
                model.features(images.to(device))
        fit_features = [model.features(images.to(device)) for images in fit_batches]
        with Phase(report, "projection + statistics", len(fit), device):
            model.fit_features(fit_features)
        del fit_features
        out = Path(tempfile.mkdtemp(dir=root))
        with Phase(report, "write model (packed sums)", 1, device):
            model.save(out / "model.pt")
        with Phase(report, "precision (Cholesky; L^-1 on a GPU)", model.positions, device):
            model.finalize()
        model.stats = None  # written: train.py drops the sums too
        test_features = [model.features(images.to(device)) for images, _ in test_batches]
        with Phase(report, "scoring (projection + distance)", len(test), device):
            distances = [model.distances_of(z) for z, _ in model.gather(test_features)]  # as train.py groups
        del test_features
        with Phase(report, "upsampling + smoothing", len(test), device):
            maps = [model.smooth(d) for d in distances]
            maps = torch.cat(maps).float().cpu().numpy()
    masks = torch.cat([m for _, m in test_batches]).numpy()
    labels = np.array([s.label for s in test], dtype=np.int8)
    scores = maps.reshape(len(maps), -1).max(axis=1)
    for metric in computed_for(None):  # each alone, its shared work included (train.py shares it)
        inputs = MetricInputs(maps, masks, scores, labels, args.fpr, 1000)
        with Phase(report, f"metric {metric.name}", len(maps), device):
            metric.compute(inputs)
    with Phase(report, "write scores + metrics", len(maps), device):
        results.write_scores(out / results.SCORES_FILE, results.Scores(maps, masks, labels, scores))
        results.write_metrics(out / results.METRICS_FILE, {"phases": report})
    shutil.rmtree(out)
    return report


def table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.3f}"
    return str(value)


def machine() -> dict:
    import platform

    import torch

    info = {"cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
