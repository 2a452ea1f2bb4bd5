"""Fit a semi-orthogonal embedding model per category, score its test split and report PRO / ROC.

    python train.py --dataset synthetic --category weave --weights random
    python train.py --dataroot /data/MVTec_AD --category carpet --metric auproc --fpr 0.3
"""
from __future__ import annotations

import argparse
import os
from dataclasses import astuple, replace
from pathlib import Path

import torch

import results
from common import UserError, flags_named, run_cli, utf8_problem
from datasets import names, spec, specs
from datasets.base import SegmentedLoader
from datasets.cache import ImageCache
from datasets.options import DataOptions
from datasets.transforms import PROTOCOLS, check_protocol, default_protocol, paper_datasets
from metrics.registry import headline
from models import APPROXIMATIONS, BACKBONES, read_model_file
from models.backbone import check_layers
from models.distributed import end_process_group, init_from_environment
from pipeline import grid, intervals, outputs, progress
from pipeline.budget import parse_bytes
from pipeline.estimate import planned_passes
from pipeline.label import label_settings, parse_layers
from pipeline.options import (
    DEFAULTS,
    RunOptions,
    add_run_flags,
    check_float_flags,
    check_output_names,
    defaults,
    from_args,
    seed_value,
)
from pipeline.plan import Plan, plan_category, segments_of
from pipeline.provenance import command_of, provenance
from pipeline.run import claim_outputs, default_workers, resolve_device, run_passes
from pipeline.sizes import add_tile_flags, check_sizes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--dataroot", default=None,
                      help="dataset folder (default: the DATA environment variable; synthetic: a cache folder)")
    data.add_argument("--dataset", default=None, choices=names(),
                      help="default mvtecad, or with --resume the dataset the model file was fitted on")
    data.add_argument("--category", default="all", help="a category, a comma-separated list, or all (default)")
    for dataset in specs():  # each dataset adds its own flags
        dataset.add_flags(data)
    data.add_argument("--image-size", nargs="+", default=None, metavar="S",
                      help="resize to S x S, or H W, or native: each category at its first training image's size "
                           "(default: the dataset's protocol, 256 for MVTec AD)")
    data.add_argument("--crop", type=int, nargs="+", default=None, metavar="S",
                      help="centre crop after resizing, e.g. 224 for PaDiM's geometry (default: none)")
    data.add_argument("--protocol", choices=PROTOCOLS, default=None,
                      help="paper: the authors' transforms and splits, to compare with the paper's tables (default "
                           f"for {', '.join(paper_datasets())}); standard: one resize, nearest-neighbour masks "
                           "(default otherwise); see README")
    model = p.add_argument_group("model")
    model.add_argument("--model", "--arch", dest="model", default=None, choices=list(BACKBONES),
                       help=f"backbone (default {DEFAULTS.backbone}, or the --resume file's)")
    model.add_argument("--weights", default=None,
                       help=f"imagenet, random, or a state-dict file (default {DEFAULTS.weights}; "
                            "--resume: the file's backbone)")
    model.add_argument("--approx", default=None, metavar="|".join(APPROXIMATIONS),
                       help="ortho (default): semi-orthogonal W (paper); sample: PaDiM channel selection; "
                            "gaussian; full: exact; global: one covariance pooled over positions; lowrank / null / "
                            "lowranki: per-position precision from the k largest / smallest / k ending at "
                            "max(min(h, w), k) eigenpairs of the full covariance. A comma-separated list (as --k "
                            "and --seed) fits every combination from one pass over the images (README: Grids)")
    model.add_argument("--k", default=None, help="embedding size, or a list such as 50,100,300 (default 300 for "
                                                 "WRN-50-2, else 100)")
    model.add_argument("--eps", type=float, default=None, help="covariance regulariser (default 0.01; mSTC 0.3)")
    model.add_argument("--layers", default=None, metavar="1,2,3",
                       help="backbone stages used as features, any non-empty subset (default 1,2,3; F follows)")
    model.add_argument("--pre-relu", action="store_true", default=None,
                       help="ResNets: tap each stage before the final ReLU of its last block (ablation)")
    model.add_argument("--unbiased", action="store_true", help="divide the covariance by n - 1 instead of n")
    model.add_argument("--seed", default=None,
                       help=f"seed of W and of random weights, 0 .. 2^63 - 1, or a list (default {DEFAULTS.seed}); "
                            "the data's seeded choices take the first")
    model.add_argument("--backbone-dtype", choices=["float32", "bfloat16"], default=None,
                       help="precision of the backbone alone (default float32; bfloat16: ~2x faster on CPUs with "
                            "AVX512-BF16/AMX and on GPUs; see BENCHMARKS.md for its effect on the metrics)")
    add_tile_flags(model)
    model.add_argument("--resume", default=None, metavar="MODEL_PT",
                       help="add this run's training images to the sums stored in a model.pt (same backbone, W, size)")
    model.add_argument("--alpha", type=float, default=None, help="false-alarm rate the thresholds guarantee on new "
                       "normal images (conformal on the n validation images, n >= 1/alpha - 1; default 1/(n+1))")
    model.add_argument("--val-fpr", type=float, default=None, help="the former rule (README): nothing on new images")
    run = p.add_argument_group("run")
    add_run_flags(run)
    intervals.add_ci_flags(run)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, every value checked before any output is created or image decoded."""
    args = build_parser().parse_args(argv)
    args.command = command_of(argv)  # metrics.json's provenance
    with flags_named():  # models/ names settings; here they are flags
        return checked(args)


def checked(args: argparse.Namespace) -> argparse.Namespace:
    resolve_resume(args)
    check_sizes(args)
    if args.protocol is None and args.resume is None:  # with --resume: the model file's
        args.protocol = default_protocol(args.dataset)
    if args.protocol is not None:
        check_protocol(args.dataset, args.protocol, args.image_size)
    if args.native_size and (args.protocol == "paper" or args.resume):
        raise UserError("--image-size native: --protocol paper resizes as the authors did and --resume keeps the "
                        "model's size; use --protocol standard without --resume")
    if args.dataroot is None and spec(args.dataset).needs_root:
        args.dataroot = os.environ.get("DATA")  # the synthetic cache never lands in a real dataset folder
    if (args.batch_size is not None and args.batch_size < 1) or (args.workers is not None and args.workers < 0):
        raise UserError("--batch-size must be at least 1 and --workers at least 0")
    check_foreign_flags(args)
    check_float_flags(args)
    lists = grid.lists(args)  # --approx, --k, --seed parsed; the first of each stays in args
    intervals.check_ci_flags(args)
    args.seed = seed_value(args.seed)
    backbone = args.model or (None if args.resume else DEFAULTS.backbone)
    label = label_settings(args.label or "", backbone, parse_layers(args.layers), args.pre_relu)
    if label.said:
        print(label.said)
    args.layers, args.pre_relu = label.layers, label.pre_relu
    defaults(args)
    if args.nsamples < 1:
        raise UserError(f"--nsamples {args.nsamples} must be at least 1")
    args.grid = []  # --resume: the model file's one variant
    if args.resume is None:
        check_layers(args.model, args.layers, args.pre_relu)  # () is refused here
        args.grid = grid.variants(args.model, args.layers, lists.approx or [args.approx], lists.k,
                                  lists.seed or [args.seed])
        args.approx, args.k, args.seed = astuple(args.grid[0])
    if args.experiment is not None and Path(args.experiment).exists() and not Path(args.experiment).is_dir():
        raise UserError(f"--experiment {args.experiment} is a file; pass a folder")
    if args.report is not None:
        results.check_report(args.report)
    shown = utf8_problem(args.label)
    if shown is not None:
        raise UserError(f"--label {shown} is not UTF-8 text, which results.csv holds; pass a UTF-8 --label")
    args.cache = ImageCache.open(args.cache) if args.cache is not None else None
    args.max_memory = parse_bytes(args.max_memory) if args.max_memory is not None else None
    return args


def check_foreign_flags(args: argparse.Namespace) -> None:
    """Refuses a flag that only another dataset reads and would be silently ignored (--normal-dir ...)."""
    for other in specs():
        given = [f"--{name.replace('_', '-')}" for name in other.exclusive_flags if getattr(args, name)]
        if given and other.name != args.dataset:
            raise UserError(f"{given[0]} is for --dataset {other.name}; pass --dataset {other.name} or drop it")


def resolve_resume(args: argparse.Namespace) -> None:
    """--dataset defaults to what the --resume file was fitted on (files older than that record: the default,
    MVTec AD, the only dataset then)."""
    if args.resume is None:
        args.dataset = args.dataset or DEFAULTS.dataset
    elif args.dataset is None:
        meta = read_model_file(args.resume, mmap=True).get("meta") or {}
        args.dataset = meta.get("dataset") if meta.get("dataset") in names() else DEFAULTS.dataset


def data_options(args: argparse.Namespace) -> DataOptions:
    """The options every dataset reads, extended by the chosen dataset with its own flags."""
    common = DataOptions(dataset=args.dataset, seed=DEFAULTS.seed if args.seed is None else args.seed,
                         protocol=args.protocol, image_size=args.image_size)
    return spec(args.dataset).options_from_args(args, common)


def wanted_categories(args: argparse.Namespace, root: Path | None, data: DataOptions) -> list[str]:
    dataset = spec(args.dataset)
    if dataset.needs_root:
        if root is None:
            raise UserError(f"no dataset folder for --dataset {args.dataset}: pass --dataroot or set DATA")
        if not root.is_dir():
            raise UserError(f"--dataroot {root} is not a folder; pass the {args.dataset} dataset folder")
    known = dataset.categories(root, data)
    wanted = known if args.category == "all" else [c.strip() for c in args.category.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in known]
    if unknown or not wanted:
        raise UserError(f"unknown category {', '.join(unknown) or '(none)'} for --dataset {args.dataset} "
                        f"(found: {', '.join(known) or 'none'})")
    if args.resume and len(wanted) > 1:
        raise UserError("--resume extends one model: pass a single --category")
    check_output_names(args.experiment, wanted)
    return wanted


def planned_run(args: argparse.Namespace) -> tuple[RunOptions, list[list[Plan]], SegmentedLoader, torch.device, int,
                                                 int]:
    """What a run settles before its first image is decoded: options, the passes over each category's images
    (a plan per variant in each: one without a grid), one loader over every pass's images, the device, this
    process's rank and the world size (tools/floor.py too)."""
    root = Path(args.dataroot).expanduser() if args.dataroot else None
    data_opts = data_options(args)
    wanted = wanted_categories(args, root, data_opts)
    experiment = Path(args.experiment) if args.experiment else outputs.new_experiment()
    options = from_args(args, experiment)
    variants = args.grid or [None]  # --resume: the file's settings
    names = {c: [grid.name_of(c, v, variants) for v in variants] for c in wanted}
    out_dirs = claim_outputs(experiment, args.dataset, [n for c in wanted for n in names[c]], args.overwrite,
                             options.report)
    rank, world, device = init_from_environment(args.device != "cpu" and torch.cuda.is_available())
    device = device or resolve_device(args.device)
    torch.manual_seed(DEFAULTS.seed if options.seed is None else options.seed)
    plans = [plan for c in wanted for plan in grid.variant_plans(
        plan_category(options, data_opts, root, c, out_dirs[names[c][0]]), variants, out_dirs)]
    if options.resume is not None:  # metrics.json names the backbone the run went on with
        options = replace(options, weights=plans[0].meta["weights"])
    batch = args.batch_size or (32 if device.type == "cuda" else 8)
    workers = args.workers if args.workers is not None else default_workers(device)
    passes = planned_passes(plans, batch, workers, device, options, args.max_memory, world)
    for i, group in enumerate(passes):
        first = group[0]  # the variants of a pass share their images
        made = provenance(args.command, device, first.fit, first.val, first.splits.test)
        passes[i] = [replace(plan, provenance=made) for plan in group]
    # One loader for every pass: workers start once and decode ahead while the device works.
    data = SegmentedLoader([part for group in passes for part in segments_of(group[0], rank, world, args.cache)],
                           batch, workers, pin_memory=device.type == "cuda")
    return options, passes, data, device, rank, world


def main(argv: list[str] | None = None) -> int:
    with flags_named():
        return checked_main(argv)


def checked_main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    # A failed run removes the folders it created and left empty (<experiment>/<dataset>/, the experiment).
    created = outputs.absent(Path(args.experiment) / args.dataset if args.experiment else Path("runs"))
    try:
        if args.experiment is None:
            args.experiment = str(outputs.new_experiment())
            created += [Path(args.experiment), Path(args.experiment) / args.dataset]
        return run(args)
    except BaseException:
        outputs.remove_empty(created)
        raise


def run(args: argparse.Namespace) -> int:
    options, passes, data, device, rank, world = planned_run(args)
    total = sum(len(group) for group in passes)
    with progress.bars(total, progress.wanted(args.quiet) and world == 1):  # a shard's counts would mislead
        done = run_passes(options, passes, data, device, rank, world,
                          lambda r: progress.finished(headline(r.category, r.metrics, args.metric)))
    if world > 1:
        end_process_group()
    if rank != 0:
        return 0
    for variant in args.grid or [None]:  # a mean row per variant of a grid
        folder = variant.folder if variant is not None and len(args.grid) > 1 else None
        measured = [r for r in done if r.metrics and (folder is None or r.out_dir.name == folder)]
        if len(measured) > 1:
            bounds = intervals.of_mean(options, measured[0].summary["seed"], [r.resamples for r in measured])
            row, means = results.mean_row(args.dataset, [r.summary for r in measured], bounds)
            results.append_rows(options.report, [row])
            print(headline("mean" if folder is None else f"mean {folder}", means, args.metric))
    print(f"results: {options.report}")
    return 0


if __name__ == "__main__":
    run_cli(main)
