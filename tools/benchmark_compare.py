"""The comparisons of tools/benchmark.py that pit two ways of doing one thing against each other:

    python tools/benchmark.py --compare model-file --model wide_resnet50_2 --k 300  # format 1 vs 2
    python tools/benchmark.py --compare scoring --scoring-k 100 300                         # solve vs GEMM
    python tools/benchmark.py --compare cache --model resnet18 --k 100               # no / cold / warm cache
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import _root  # noqa: F401

POSITIONS = 4096  # 256 x 256 input: a 64 x 64 feature map


def model_file(root: Path, args: argparse.Namespace) -> list[dict]:
    """Bytes and write time of the model file, full sums (format 1) against packed sums (format 2)."""
    import torch

    from models import Config, RunningStats, SemiOrthogonal

    k = args.k
    model = SemiOrthogonal(Config(backbone=args.model, k=k, image_size=(args.image_size,) * 2), weights="random")
    stats = RunningStats(model.positions, k)
    z = torch.randn(model.positions, 8, k)
    stats.update(z)  # the values do not matter for size or speed, only the shapes
    model.stats = stats
    rows = []
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        for version, write in (("1", lambda path: write_version_1(model, path)), ("2", model.save),
                               ("2, ImageNet backbone named", partial(named_backbone, model))):
            path = Path(tmp) / "model.pt"
            start = time.perf_counter()
            write(path)
            written = time.perf_counter() - start
            with open(path, "rb+") as f:
                os.fsync(f.fileno())  # what reaching the disk adds, for a file written just before
            synced = time.perf_counter() - start
            rows.append({"format": version, "model": args.model, "k": k, "bytes": path.stat().st_size,
                         "GB": round(path.stat().st_size / 1e9, 3), "write_s": written, "write_fsync_s": synced})
            path.unlink()
    sums = model.positions * k * (k + 1) // 2 * 4
    backbone = sum(t.numel() * t.element_size() for t in model.extractor.state_dict().values())
    rows.append({"format": "2 (computed: P k(k+1)/2 x 4 B + backbone)", "model": args.model, "k": k,
                 "bytes": sums + backbone, "GB": round((sums + backbone) / 1e9, 3)})
    return rows


def named_backbone(model, path: Path) -> None:
    """The file --weights imagenet writes: the backbone named by address and digest, not stored (the
    weights here are random, which only the digest's value could tell)."""
    model.extractor.imagenet_digest = "0" * 64
    try:
        model.save(path)
    finally:
        model.extractor.imagenet_digest = None


def write_version_1(model, path: Path) -> None:
    """The model file as format 1 wrote it (full k x k sums), for comparison."""
    import torch

    from models.gaussian import unpack_lower

    stats = model.stats
    full = unpack_lower(stats.sum_zz, stats.sum_z.shape[1])
    torch.save({"format": "semiortho-model", "version": 1, "W": model.W,
                "config": model.config.stored(),
                "stats": {"n": torch.tensor(stats.n), "shift": stats.shift, "sum_z": stats.sum_z,
                          "sum_zz": full},
                "thresholds": {}, "meta": {}, "backbone": model.extractor.state_dict()}, path)


def scoring(args: argparse.Namespace, repeats: int = 2) -> list[dict]:
    """Distances at every position: triangular solve with packed L against GEMM with L^{-1}, for a batch
    of 8 and for the group train.py scores together, and what each costs to prepare from the same sums
    (Cholesky alone, or Cholesky and the inverse)."""
    import torch

    from models.distance import mahalanobis, whitened_distance
    from models.gaussian import RunningStats, cholesky_packed, inverse_cholesky
    from models.groups import group_size

    rows = []
    for k in args.scoring_k:
        torch.manual_seed(0)
        stats = RunningStats(POSITIONS, k)
        for _ in range(4):  # 2k images: a well-conditioned covariance
            stats.update(torch.randn(POSITIONS, max(1, k // 2), k))
        start = time.perf_counter()
        mu, L = cholesky_packed(stats, 0.01)
        prepare_L = time.perf_counter() - start
        start = time.perf_counter()
        _, L_inv = inverse_cholesky(stats, 0.01)
        prepare_L_inv = time.perf_counter() - start
        group = group_size(POSITIONS, k)  # what train.py scores together
        for batch in sorted({8, group}):
            z = torch.randn(POSITIONS, batch, k)
            solve, reference = best_of(repeats, mahalanobis, z, mu, L)
            gemm, result = best_of(repeats, whitened_distance, z, mu, L_inv)
            rows.append({"k": k, "positions": POSITIONS, "batch": batch, "prepare_L_s": prepare_L,
                         "prepare_L_inv_s": prepare_L_inv, "solve_s": solve, "gemm_s": gemm,
                         "solve_ms_per_image": 1e3 * solve / batch, "gemm_ms_per_image": 1e3 * gemm / batch,
                         "max_rel_diff": ((result - reference).abs().max() / reference.abs().max()).item()})
        del stats, L, L_inv
    return rows


def best_of(repeats: int, fn, *args):
    """(fastest time, result) of `repeats` calls after one warm-up: the machine is shared."""
    result, times = fn(*args), []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


def cache_runs(root: Path, category: str, args: argparse.Namespace, train_command, run_child) -> list[dict]:
    """The images alone (decode, resize, to tensors; best of 3), then train.py end to end: without
    --cache, with an empty cache (cold), with the filled one (warm)."""
    from datasets.base import ImageDataset
    from datasets.cache import ImageCache
    from datasets.mvtec import load

    splits = load(root, category)
    samples, size = splits.train + splits.test, (args.image_size, args.image_size)
    rows = []
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        for name, cache in (("images only, no cache", None), ("images only, warm cache", Path(tmp) / "images")):
            dataset = ImageDataset(samples, size, cache=cache and ImageCache.open(cache))
            seconds, _ = best_of(3, lambda: [dataset[i] for i in range(len(dataset))])  # noqa: B023
            rows.append({"run": name, "images": len(samples), "seconds": seconds})
        cache = Path(tmp) / "cache"
        for name, extra in (("no cache", {}), ("cold cache", {"--cache": str(cache)}),
                            ("warm cache", {"--cache": str(cache)})):
            run = run_child(train_command(root, category, args, Path(tmp) / name.replace(" ", "_"), **extra))
            rows.append({"run": f"train.py, {name}", "seconds": run["seconds"], "peak_rss_mb": run["peak_rss_mb"]})
        rows[-1]["cache_MB"] = sum(p.stat().st_size for p in cache.rglob("*.npz")) / 1e6
    return rows


if __name__ == "__main__":
    sys.exit("run through tools/benchmark.py --compare")
