"""Fit a semi-orthogonal embedding model per category, score its test split and report PRO / ROC.

    python train.py --dataset synthetic --category weave --weights random
    python train.py --dataroot /data/MVTec_AD --category carpet --metric auproc --fpr 0.3
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from common import UserError, atomic_write, run_cli, save_npz, write_json
from datasets import MODULES, NEEDS_ROOT, loader
from datasets.base import ImageDataset, Sample, SegmentedLoader, Splits
from models import (
    APPROXIMATIONS,
    BACKBONES,
    Config,
    SemiOrthogonal,
    calibrate,
    config_from_state,
    default_k,
    feature_dim,
    read_model_file,
    write_thresholds,
)
from models.distributed import all_reduce_stats, init_from_environment, shard
from models.semi_ortho import build_extractor

CSV_COLUMNS = ["dataset", "category", "model", "approx", "k", "eps", "image_size", "crop", "seed", "n_train",
               "n_val", "n_test", "aupro", "pixel_auroc", "image_auroc", "paper_pro", "paper_roc", "seconds", "output"]
METRICS = ["aupro", "pixel_auroc", "image_auroc", "paper_pro", "paper_roc"]


def size_pair(values: list[int] | None, flag: str) -> tuple[int, int] | None:
    if not values:
        return None
    if len(values) > 2 or min(values) < 16:
        raise UserError(f"{flag} takes one size S or two sizes H W, each at least 16")
    return (values[0], values[-1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--dataroot", default=None,
                      help="dataset folder (default: the DATA environment variable; synthetic: a cache folder)")
    data.add_argument("--dataset", default="mvtecad", choices=list(MODULES))
    data.add_argument("--category", default="all", help="a category, a comma-separated list, or all (default)")
    data.add_argument("--fold", type=int, default=None, help="KolektorSDD fold 0..2 (default: all three)")
    data.add_argument("--split-file", default=None, help="KolektorSDD split.pyb (default: <dataroot>-training-splits/split.pyb)")
    data.add_argument("--scale", choices=["half", "full"], default="half", help="KolektorSDD input scale")
    data.add_argument("--startidx", type=int, default=0, help="mSTC: test frames with index %% 5 == startidx")
    data.add_argument("--train-frames", type=int, default=5000, help="mSTC: training frames sampled")
    data.add_argument("--image-size", type=int, nargs="+", default=None, metavar="S",
                      help="resize to S x S, or H W (default: the dataset's protocol, 256 for MVTec AD)")
    data.add_argument("--crop", type=int, nargs="+", default=None, metavar="S",
                      help="centre crop after resizing, e.g. 224 for PaDiM's geometry (default: none)")
    model = p.add_argument_group("model")
    model.add_argument("--model", "--arch", dest="model", default=None, choices=list(BACKBONES),
                       help="backbone (default wide_resnet50_2, or the --resume file's)")
    model.add_argument("--weights", default="imagenet", help="imagenet (default), random, or a state-dict file")
    model.add_argument("--approx", default="ortho", choices=APPROXIMATIONS,
                       help="ortho: semi-orthogonal W (paper); sample: PaDiM channel selection; gaussian; full: exact")
    model.add_argument("--k", type=int, default=None, help="embedding size (default 300 for WRN-50-2, else 100)")
    model.add_argument("--eps", type=float, default=None, help="covariance regulariser (default 0.01; mSTC 0.3)")
    model.add_argument("--unbiased", action="store_true", help="divide the covariance by n - 1 instead of n")
    model.add_argument("--seed", type=int, default=1111)
    model.add_argument("--backbone-dtype", choices=["float32", "bfloat16"], default="float32",
                       help="precision of the backbone alone (bfloat16: ~2x faster on CPUs with AVX512-BF16/AMX "
                            "and on GPUs; see BENCHMARKS.md for its effect on the metrics)")
    model.add_argument("--resume", default=None, metavar="MODEL_PT",
                       help="add this run's training images to the sums stored in a model.pt (same backbone, W, size)")
    model.add_argument("--val-fpr", type=float, default=0.01,
                       help="false-positive rate on the normal validation images that sets the stored thresholds")
    run = p.add_argument_group("run")
    run.add_argument("--batch-size", type=int, default=None, help="images per batch (default 8 on CPU, 32 on GPU)")
    run.add_argument("--workers", type=int, default=None,
                     help="image-decoding processes (default: 0 with 2 cores or fewer, where they slow the "
                          "model down; else 2 on CPU, up to 12 with a GPU)")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    run.add_argument("--fpr", type=float, default=0.3, help="FPR limit of the PRO integral (default 0.3)")
    run.add_argument("--metric", choices=["auproc", "auroc"], default="auproc", help="the headline printed")
    run.add_argument("--nsamples", type=int, default=1000, help="thresholds of the paper's PRO/ROC protocol")
    run.add_argument("--experiment", default=None, help="output folder (default: runs/<date-time>)")
    run.add_argument("--report", default=None, help="results CSV to append to (default: <experiment>/results.csv)")
    run.add_argument("--overwrite", action="store_true", help="replace results of an earlier run in --experiment")
    args = p.parse_args(argv)
    args.image_size = size_pair(args.image_size, "--image-size")
    args.crop = size_pair(args.crop, "--crop")
    if args.dataroot is None and args.dataset in NEEDS_ROOT:
        args.dataroot = os.environ.get("DATA")  # the synthetic cache never lands in a real dataset folder
    if (args.batch_size is not None and args.batch_size < 1) or (args.workers is not None and args.workers < 0):
        raise UserError("--batch-size must be at least 1 and --workers at least 0")
    if not 0 < args.fpr <= 1:
        raise UserError(f"--fpr {args.fpr} must be in (0, 1]")
    if not 0 <= args.val_fpr < 1:
        raise UserError(f"--val-fpr {args.val_fpr} must be in [0, 1)")
    if args.resume is None:
        args.model = args.model or "wide_resnet50_2"
        if args.k is not None and args.approx != "full" and not 1 <= args.k <= feature_dim(args.model):
            raise UserError(f"--k {args.k} must be between 1 and F = {feature_dim(args.model)} for {args.model}")
        args.k = feature_dim(args.model) if args.approx == "full" else (args.k or default_k(args.model))
    if args.experiment is None:
        args.experiment = str(Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"))
    args.report = args.report or str(Path(args.experiment) / "results.csv")
    return args


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available; use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def default_workers(device: torch.device) -> int:
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return min(12, cores)
    return 0 if cores <= 2 else 2


def split_validation(train: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """Every 10th training image is held out as (normal) validation, as the paper does."""
    return ([s for i, s in enumerate(train) if i % 10 != 9], [s for i, s in enumerate(train) if i % 10 == 9])


@torch.no_grad()
def score(model: SemiOrthogonal, batches: Iterable[dict]) -> dict[str, np.ndarray] | None:
    """Score maps (float32, on the host), image scores, masks and labels of every batch; None if none."""
    maps, image_scores, masks, labels = [], [], [], []
    for batch in batches:
        batch_maps, batch_scores = model.predict(batch["image"])
        maps.append(batch_maps.float().cpu().numpy())
        image_scores.append(batch_scores.float().cpu().numpy())
        masks.append(batch["mask"].numpy())
        labels.append(batch["label"].numpy())
    if not maps:
        return None
    return {"maps": np.concatenate(maps), "image_scores": np.concatenate(image_scores),
            "masks": np.concatenate(masks).astype(np.uint8), "labels": np.concatenate(labels).astype(np.int8)}


def append_row(report: Path, row: dict) -> None:
    """Appends one row to the results CSV (header once), rewriting the file atomically."""
    old = report.read_text() if report.exists() else ""
    if old and old.splitlines()[0].split(",") != CSV_COLUMNS:
        raise UserError(f"{report} has other columns than this version writes; pass another --report")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    if not old:
        writer.writeheader()
    writer.writerow({key: row.get(key, "") for key in CSV_COLUMNS})

    def write(tmp: str) -> None:
        Path(tmp).write_text(old + buffer.getvalue())
    atomic_write(report, write)


def headline(category: str, metrics: dict, metric: str) -> str:
    if metric == "auproc":
        return f"{category}: SEG AUPROC {metrics['aupro']:.4f} (paper protocol {metrics['paper_pro']:.4f})"
    return (f"{category}: SEG AUROC {metrics['pixel_auroc']:.4f} (paper protocol {metrics['paper_roc']:.4f})"
            f"  DET AUROC {metrics['image_auroc']:.4f}")


@dataclass
class Plan:
    """One category, listed and configured before any image is decoded."""
    category: str
    out_dir: Path
    splits: Splits
    fit: list[Sample]
    val: list[Sample]
    config: Config


def plan_category(args: argparse.Namespace, root: Path | None, category: str, out_dir: Path) -> Plan:
    splits = loader(args.dataset).load(root, category, args)
    for note in splits.notes:
        print(f"warning: {note}", file=sys.stderr)
    fit, val = split_validation(splits.train)
    if not fit:
        raise UserError(f"no training images for {args.dataset}/{category}")
    image_size = args.image_size or splits.image_size
    eps = splits.eps if args.eps is None else args.eps
    if args.resume is None:
        config = Config(backbone=args.model, k=args.k, approx=args.approx, seed=args.seed, image_size=image_size,
                        crop=args.crop, eps=eps, unbiased=args.unbiased, backbone_dtype=args.backbone_dtype)
        if config.crop and (config.crop[0] > image_size[0] or config.crop[1] > image_size[1]):
            raise UserError(f"--crop {config.crop} is larger than --image-size {image_size}")
        return Plan(category, out_dir, splits, fit, val, config)
    stored = config_from_state(read_model_file(args.resume))
    requested = {"--model": (args.model, stored.backbone), "--k": (args.k, stored.k),
                 "--image-size": (args.image_size, stored.image_size), "--crop": (args.crop, stored.crop),
                 "--backbone-dtype": (args.backbone_dtype, stored.backbone_dtype)}
    for flag, (asked, have) in requested.items():
        if asked is not None and asked != have:
            raise UserError(f"--resume {args.resume} was fitted with {flag} {have}, not {asked}; "
                            f"fit a new model or pass {flag} {have}")
    # eps and n versus n - 1 are not part of the sums: they may change
    return Plan(category, out_dir, splits, fit, val, replace(stored, eps=eps, unbiased=args.unbiased))


def build_model(args: argparse.Namespace, plan: Plan, device: torch.device, extractors: dict) -> SemiOrthogonal:
    """A new model sharing the cached backbone, or the --resume file's model with its sums."""
    if args.resume is not None:
        model = SemiOrthogonal.load(args.resume, device, finalize=False)
        model.config = plan.config
        return model
    key = (plan.config.backbone, plan.config.seed)
    if key not in extractors:
        extractors[key] = build_extractor(plan.config.backbone, args.weights, plan.config.seed).to(device)
    return SemiOrthogonal(plan.config, extractor=extractors[key]).to(device)


def segments_of(plan: Plan, rank: int, world: int) -> list[ImageDataset]:
    """What this rank decodes for a category: its shard of the fit images; rank 0 also validation and test."""
    parts = [shard(plan.fit, rank, world)] + ([plan.val, plan.splits.test] if rank == 0 else [])
    return [ImageDataset(part, plan.config.image_size, plan.config.crop) for part in parts]


def run_category(args: argparse.Namespace, plan: Plan, data: SegmentedLoader, device: torch.device,
                 rank: int = 0, world: int = 1, extractors: dict | None = None) -> dict | None:
    """Fits, calibrates and scores one category on the device, reading its segments of `data`; under
    torchrun only rank 0 goes past the fit. Returns the CPU work left for finish_category()."""
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    model = build_model(args, plan, device, {} if extractors is None else extractors)
    config = model.config
    if rank != 0 and model.stats is not None:  # resumed sums are counted once, by rank 0
        model.stats = None

    t = time.perf_counter()
    model.fit(batch["image"] for batch in data.next_segment())
    if world > 1:
        all_reduce_stats(model.stats)
    seconds["fit"] = time.perf_counter() - t
    n_fitted = model.stats.n
    if rank != 0:
        return None
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    # A GPU holds both the sums and L; on the CPU L takes the sums' memory, so they are saved first
    # and the thresholds are added to the file later.
    keep_stats = device.type == "cuda"
    if not keep_stats:
        model.save(plan.out_dir / "model.pt")
    t = time.perf_counter()
    model.finalize(keep_stats=keep_stats)
    seconds["precision"] = time.perf_counter() - t

    t = time.perf_counter()
    thresholds = {}
    validation = score(model, data.next_segment())
    if validation is not None:
        thresholds = calibrate(validation["maps"], validation["image_scores"], args.val_fpr)
    else:
        print(f"warning: {plan.category}: no validation images (fewer than 10 training images): "
              "no thresholds stored", file=sys.stderr)
    seconds["calibrate"] = time.perf_counter() - t
    t = time.perf_counter()
    result = score(model, data.next_segment())
    seconds["score"] = time.perf_counter() - t
    seconds["device_total"] = time.perf_counter() - start
    summary = {
        "dataset": args.dataset, "category": plan.category, "model": config.backbone, "approx": config.approx,
        "k": config.k, "eps": config.eps, "image_size": list(config.image_size),
        "crop": list(config.crop) if config.crop else None, "seed": config.seed,
        "backbone_dtype": config.backbone_dtype, "weights": args.weights, "unbiased": config.unbiased,
        "fpr_limit": args.fpr, "num_thresholds": args.nsamples, "n_train": len(plan.fit), "n_val": len(plan.val),
        "n_test": len(plan.splits.test), "metrics": {}, "seconds": seconds, "thresholds": thresholds,
        "resumed_from": args.resume, "n_fitted_total": n_fitted,
    }
    model.thresholds = thresholds
    return {"summary": summary, "result": result, "test": plan.splits.test, "out_dir": plan.out_dir,
            "model": model if keep_stats else None}


def finish_category(args: argparse.Namespace, work: dict) -> dict:
    """The CPU half of a category: every metric, scores.npz, metrics.json, the CSV row. Runs in a
    background thread so the device can fit the next category meanwhile."""
    import metrics as metric_functions  # scipy-heavy; imported once it is needed

    summary, result, out_dir = work["summary"], work["result"], work["out_dir"]
    timings: dict[str, float] = {}
    summary["metrics"] = metric_functions.evaluate(result["maps"], result["masks"], result["image_scores"],
                                                   result["labels"], fpr_limit=args.fpr,
                                                   num_thresholds=args.nsamples, timings=timings)
    t = time.perf_counter()
    save_npz(out_dir / "scores.npz", maps=result["maps"].astype(np.float16), masks=result["masks"],
             labels=result["labels"], image_scores=result["image_scores"],
             defects=np.array([s.defect for s in work["test"]]), paths=np.array([str(s.image) for s in work["test"]]))
    seconds = summary["seconds"]
    seconds.update({f"metric_{name}": value for name, value in timings.items()})
    seconds["write"] = time.perf_counter() - t
    seconds["total"] = seconds["device_total"] + sum(timings.values()) + seconds["write"]
    write_json(out_dir / "metrics.json", summary)
    row = {**summary, "image_size": "x".join(map(str, summary["image_size"])),
           "crop": "x".join(map(str, summary["crop"])) if summary["crop"] else "",
           "seconds": f"{seconds['total']:.2f}", "output": str(out_dir)}
    row.update({m: f"{summary['metrics'][m]:.6f}" for m in METRICS})
    append_row(Path(args.report), row)
    return summary


def save_model(model: SemiOrthogonal | None, path: Path, thresholds: dict) -> None:
    """Writes the whole model when it still has its sums (GPU), else adds the thresholds to the file."""
    if model is not None:
        model.save(path)
    else:
        write_thresholds(path, thresholds)


def report(summary: dict, metric: str) -> dict:
    print(headline(summary["category"], summary["metrics"], metric), flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(args.dataroot).expanduser() if args.dataroot else None
    if args.dataset in NEEDS_ROOT:
        if root is None:
            raise UserError(f"no dataset folder for --dataset {args.dataset}: pass --dataroot or set DATA")
        if not root.is_dir():
            raise UserError(f"--dataroot {root} is not a folder; pass the {args.dataset} dataset folder")
    known = loader(args.dataset).categories(root, args)
    wanted = known if args.category == "all" else [c.strip() for c in args.category.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in known]
    if unknown or not wanted:
        raise UserError(f"unknown category {', '.join(unknown) or '(none)'} for --dataset {args.dataset} "
                        f"(found: {', '.join(known) or 'none'})")
    if args.resume and len(wanted) > 1:
        raise UserError("--resume extends one model: pass a single --category")
    out_dirs = {c: Path(args.experiment) / args.dataset / c for c in wanted}
    taken = [str(d) for d in out_dirs.values() if d.exists() and any(d.iterdir())]
    if taken and not args.overwrite:
        raise UserError(f"{taken[0]} already holds results; pass --overwrite or another --experiment")
    rank, world, device = init_from_environment(args.device != "cpu" and torch.cuda.is_available())
    device = device or resolve_device(args.device)
    torch.manual_seed(args.seed)
    plans = [plan_category(args, root, c, out_dirs[c]) for c in wanted]
    # One loader for every category: workers start once and decode the next category's images
    # while the device finishes the current one.
    data = SegmentedLoader([part for plan in plans for part in segments_of(plan, rank, world)],
                           args.batch_size or (32 if device.type == "cuda" else 8),
                           args.workers if args.workers is not None else default_workers(device),
                           pin_memory=device.type == "cuda")

    rows: list[dict] = []
    extractors: dict = {}
    # Metrics and files of a category are computed in the background while the device fits the next
    # one; model files (1.6 GB for WRN-50-2) are written by a thread of their own, a few at a time.
    with ThreadPoolExecutor(max_workers=1) as finishing, ThreadPoolExecutor(max_workers=1) as saving:
        pending, saves = None, []
        for plan in plans:
            if pending is not None and device.type == "cpu":  # on the CPU, overlap would double the peak memory
                rows.append(report(pending.result(), args.metric))
                for save in saves:
                    save.result()
                pending, saves = None, []
            work = run_category(args, plan, data, device, rank, world, extractors)
            if pending is not None:
                rows.append(report(pending.result(), args.metric))
                pending = None
            if work is not None:
                model = work.pop("model")
                saves.append(saving.submit(save_model, model, plan.out_dir / "model.pt", work["summary"]["thresholds"]))
                pending = finishing.submit(finish_category, args, work)
            while len(saves) > 2:
                saves.pop(0).result()
        if pending is not None:
            rows.append(report(pending.result(), args.metric))
        for save in saves:
            save.result()
    if world > 1:
        torch.distributed.destroy_process_group()
    if rank != 0:
        return 0
    if len(rows) > 1:
        mean = {m: float(np.mean([r["metrics"][m] for r in rows])) for m in METRICS}
        append_row(Path(args.report), {"dataset": args.dataset, "category": "mean", "model": rows[0]["model"],
                                       "approx": rows[0]["approx"], "k": rows[0]["k"], "seed": rows[0]["seed"],
                                       **{m: f"{v:.6f}" for m, v in mean.items()}})
        print(headline("mean", mean, args.metric))
    print(f"results: {args.report}")
    return 0


if __name__ == "__main__":
    run_cli(main)
