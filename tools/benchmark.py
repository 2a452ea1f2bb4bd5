"""Measure the real pipeline: per phase, end to end, against the backbone-forward floor.

    python tools/benchmark.py --model resnet18 --k 100 --n-train 200 --n-test 100
    python tools/benchmark.py --model wide_resnet50_2 --k 300 --n-train 100 --n-test 100 --repeat 5
    python tools/benchmark.py --memory-scaling --n-train 100 400      # peak RSS vs training images
    python tools/benchmark.py --cost-table                            # approx x k: fit / score time, memory
    python tools/benchmark.py --cost-table --cost-only resnet18:global,resnet18:lowrank   # some rows of it
    python tools/benchmark.py --suite mvtec --device cuda --workers 12 # 15 MVTec-shaped categories
    python tools/benchmark.py --compare model-file|scoring|cache      # see tools/benchmark_compare.py

Data are synthetic categories in the MVTec AD layout, generated once under --root. "phases" runs
the model's own functions one phase at a time on decoded images held in memory; "end to end" runs
train.py as a child process (start to metrics written); "floor" is tools/floor.py with the same
flags, a child process that plans and decodes exactly as train.py does and runs only the backbone
forward pass, which no implementation can beat. Peak memory: resident set size of the process
(sampled every 5 ms in-process, the kernel's figure for child processes) and, on a GPU,
torch.cuda.max_memory_allocated.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import _root  # noqa: F401
from benchmark_phases import machine, phases, table

from results import METRICS_FILE, read_metrics

REPO = _root.ROOT

# MVTec AD's shape: train / test images, side in pixels, grayscale; each stood in for by a synthetic kind
MVTEC_SHAPE = {
    "bottle": (209, 83, 900, False, "washer"), "cable": (224, 150, 1024, False, "caplet"),
    "capsule": (219, 132, 1000, False, "caplet"), "carpet": (280, 117, 1024, False, "weave"),
    "grid": (264, 78, 1024, True, "mesh"), "hazelnut": (391, 110, 1024, False, "washer"),
    "leather": (245, 124, 1024, False, "marble"), "metal_nut": (220, 115, 700, False, "washer"),
    "pill": (267, 167, 800, False, "caplet"), "screw": (320, 160, 1024, True, "bolt"),
    "tile": (230, 117, 840, False, "marble"), "toothbrush": (60, 42, 1024, False, "bolt"),
    "transistor": (213, 100, 1024, False, "washer"), "wood": (247, 79, 1024, False, "plank"),
    "zipper": (240, 151, 1024, True, "mesh"),
}


def make_category(root: Path, name: str, kind: str, n_train: int, n_test: int, size: int, gray: bool | None) -> Path:
    """A synthetic category of `kind`, stored as <root>/<name>; reused when present."""
    from datasets.synthetic import generate_category

    target = root / name
    if (target / "synthetic.json").exists():
        return target
    n_good = max(1, round(n_test * 0.4))
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        made = generate_category(Path(tmp), kind, seed=0, image_size=size, n_train=n_train, n_test_good=n_good,
                                 n_test_defect=n_test - n_good, grayscale=gray)
        os.replace(made, target)
    return target


QUIET = [False]  # --quiet: no progress bars from the children either
PEAK = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
        "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def run_child(command: list[str]) -> dict:
    """Wall time and peak RSS of one child process (a wrapper reads the kernel's figure for it alone).

    On a terminal (without --quiet) the child's stderr goes to it, so train.py's progress bars show."""
    from pipeline import progress

    start = time.perf_counter()
    stderr = None if progress.wanted(QUIET[0]) else subprocess.PIPE
    process = subprocess.run([sys.executable, "-c", PEAK, *command], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=stderr, text=True)
    wall = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(f"benchmark child failed: {' '.join(command)}\n{(process.stderr or '')[-2000:]}")
    lines = process.stdout.strip().splitlines()
    return {"seconds": wall, "peak_rss_mb": int(lines[-1].split()[1]) / 1024, "stdout": lines[-4:-1]}


def train_command(root: Path, category: str, args: argparse.Namespace, experiment: Path, *flags: str,
                  **overrides) -> list[str]:
    options = {"--model": args.model, "--k": str(args.k), "--approx": args.approx,
               "--backbone-dtype": args.backbone_dtype,
               "--image-size": str(args.image_size), "--device": args.device, **overrides}
    command = [sys.executable, "train.py", "--dataset", "mvtecad", "--dataroot", str(root), "--category", category,
               "--weights", "random", "--experiment", str(experiment)]
    for flag, value in options.items():
        command += [flag, value]
    if args.workers is not None:
        command += ["--workers", str(args.workers)]
    if args.batch_size:
        command += ["--batch-size", str(args.batch_size)]
    return command + list(flags)


def floor_command(train: list[str]) -> list[str]:
    """The floor of a train.py command: tools/floor.py with the same flags (same planning and decoding)."""
    return [sys.executable, "tools/floor.py", *train[2:]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(REPO / ".bench"), help="where synthetic data are generated and reused")
    p.add_argument("--category", default="weave", help="synthetic kind for single-category runs")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--approx", default="ortho")
    p.add_argument("--backbone-dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--n-train", type=int, nargs="+", default=[200])
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--fpr", type=float, default=0.3)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--memory-scaling", action="store_true")
    p.add_argument("--cost-table", action="store_true")
    p.add_argument("--cost-only", default=None, help="cost-table rows to run, comma-separated MODEL:APPROX")
    p.add_argument("--suite", choices=["mvtec"], default=None)
    p.add_argument("--suite-scale", type=float, default=1.0, help="shrink the suite's counts and sizes (dry runs)")
    p.add_argument("--compare", choices=["model-file", "scoring", "cache"], default=None,
                   help="model file format 1 vs 2, triangular solve vs GEMM, or no / cold / warm --cache")
    p.add_argument("--scoring-k", type=int, nargs="+", default=[100, 300], help="k values of --compare scoring")
    p.add_argument("--suite-cache", action="store_true",
                   help="--suite twice with train.py --cache: an empty cache, then the filled one")
    p.add_argument("--repeat", type=int, default=1,
                   help="single runs: train.py and its floor this many times in turn; medians and the per-pair ratio")
    p.add_argument("--no-save-model", action="store_true", help="single runs: train.py --no-save-model, as sweeps run")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--quiet", action="store_true", help="no progress bars (shown on stderr only on a terminal)")
    args = p.parse_args()
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    QUIET[0] = args.quiet
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    args.workers = args.workers if args.workers is not None else (0 if (os.cpu_count() or 1) <= 2 else 2)
    results: dict = {"machine": machine(), "args": vars(args)}
    if args.compare:
        results[args.compare] = compare(root, args)
    elif args.suite:
        results["suite"] = suite(root, args)
    elif args.cost_table:
        results["cost_table"] = cost_table(root, args)
    elif args.memory_scaling:
        results["memory_scaling"] = memory_scaling(root, args)
    else:
        results.update(single(root, args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def compare(root: Path, args: argparse.Namespace) -> list[dict]:
    import benchmark_compare

    if args.compare == "model-file":
        rows = benchmark_compare.model_file(root, args)
    elif args.compare == "scoring":
        rows = benchmark_compare.scoring(args)
    else:
        name = f"{args.category}_{args.n_train[0]}_{args.n_test}_{args.image_size}"
        make_category(root, name, args.category, args.n_train[0], args.n_test, args.image_size, None)
        rows = benchmark_compare.cache_runs(root, name, args, train_command, run_child)
    print(table(rows, list(dict.fromkeys(key for row in rows for key in row))))
    return rows


def single(root: Path, args: argparse.Namespace) -> dict:
    n_train = args.n_train[0]
    name = f"{args.category}_{n_train}_{args.n_test}_{args.image_size}"
    make_category(root, name, args.category, n_train, args.n_test, args.image_size, None)
    report = phases(root, name, args)
    print(table(report, ["phase", "seconds", "items", "per_second", "peak_rss_mb"]
                + (["peak_gpu_mb"] if args.device == "cuda" else [])))
    runs, floors = [], []
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        flags = ["--overwrite"] + (["--no-save-model"] if args.no_save_model else [])
        command = train_command(root, name, args, Path(tmp) / "exp", *flags)
        for _ in range(args.repeat):  # in turn, so a change in the machine's speed touches both alike
            runs.append(run_child(command))
            floors.append(run_child(floor_command(command)))
    forward = next(r["seconds"] for r in report if r["phase"] == "backbone forward")
    end_to_end, floor_s = (statistics.median(r["seconds"] for r in rs) for rs in (runs, floors))
    ratios = [r["seconds"] / f["seconds"] for r, f in zip(runs, floors)]
    summary = {"runs": args.repeat, "end_to_end_s": end_to_end,
               "end_to_end_peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "floor_process_s": floor_s,
               "forward_only_s": forward, "ratio_to_floor_process": statistics.median(ratios),
               "ratio_min": min(ratios), "ratio_max": max(ratios), "ratio_to_forward_only": end_to_end / forward}
    print(table([summary], list(summary)))
    return {"phases": report, "summary": summary, "ratios": ratios}


def memory_scaling(root: Path, args: argparse.Namespace) -> list[dict]:
    rows = []
    for n_train in args.n_train:  # one child each, so each peak is its own (ru_maxrss of RUSAGE_CHILDREN is a max)
        name = f"{args.category}_{n_train}_{args.n_test}_{args.image_size}"
        make_category(root, name, args.category, n_train, args.n_test, args.image_size, None)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            child = run_child(train_command(root, name, args, Path(tmp) / "exp"))
        rows.append({"n_train": n_train, "seconds": child["seconds"], "peak_rss_mb": child["peak_rss_mb"]})
    print(table(rows, ["n_train", "seconds", "peak_rss_mb"]))
    return rows


def cost_table(root: Path, args: argparse.Namespace) -> list[dict]:
    """Fit and score cost of each embedding: the paper's claim, measured (one child process per row)."""
    from models import feature_dim

    n_train = args.n_train[0]
    name = f"{args.category}_{n_train}_{args.n_test}_{args.image_size}"
    make_category(root, name, args.category, n_train, args.n_test, args.image_size, None)
    configs = [("resnet18", a, k) for k in (50, 100, 200) for a in ("sample", "ortho")]
    configs += [("resnet18", "full", 448)]
    configs += [("wide_resnet50_2", a, k) for k in (100, 300) for a in ("sample", "ortho")]
    configs += [("wide_resnet50_2", "full", 1792)]
    configs += [("resnet18", "gaussian", 100), ("resnet18", "global", 448)]
    configs += [("resnet18", a, 100) for a in ("lowrank", "lowranki", "null")]
    configs += [("wide_resnet50_2", "global", 1792), ("wide_resnet50_2", "lowrank", 300)]
    if args.cost_only:
        wanted = {tuple(item.split(":")) for item in args.cost_only.split(",")}
        configs = [c for c in configs if c[:2] in wanted]
    rows = []
    for backbone, approx, k in configs:
        positions = (args.image_size // 4) ** 2
        F = feature_dim(backbone)
        # global pools one F x F sum over positions; the eigen variants keep F x F per position, like full
        width = F if approx in ("lowrank", "lowranki", "null") else k
        row = {"model": backbone, "approx": approx, "k": k,
               "sum_zz_gb": (F * F if approx == "global" else positions * width * (width + 1) // 2) * 4 / 1e9}
        if approx in ("full", "lowrank", "lowranki", "null") and F > 1000:
            row["note"] = f"infeasible: sum zz^T (packed) alone is {row['sum_zz_gb']:.0f} GB (float32)"
            rows.append(row)
            continue
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            exp = Path(tmp) / "exp"
            child = run_child(train_command(root, name, argparse.Namespace(**{**vars(args), "model": backbone,
                                                                              "k": k, "approx": approx}), exp))
            summary = read_metrics(exp / "mvtecad" / name / METRICS_FILE)
            seconds, scores = summary["seconds"], summary["metrics"]
        row.update({"fit_s": seconds["fit"], "precision_s": seconds["precision"], "score_s": seconds["score"],
                    "end_to_end_s": child["seconds"], "peak_rss_mb": child["peak_rss_mb"], "aupro": scores["aupro"],
                    "paper_pro": scores["paper_pro"]})
        rows.append(row)
        print(table([row], list(row)), flush=True)
    print(table(rows, ["model", "approx", "k", "sum_zz_gb", "fit_s", "precision_s", "score_s", "end_to_end_s",
                       "peak_rss_mb", "aupro", "paper_pro", "note"]))
    return rows


def suite(root: Path, args: argparse.Namespace) -> dict:
    """15 categories shaped like MVTec AD, fitted, scored and evaluated in one train.py process."""
    start = time.perf_counter()
    scale = args.suite_scale
    shape = {name: (max(3, round(n_train * scale)), max(3, round(n_test * scale)), max(64, round(size * scale)),
                    gray, kind)
             for name, (n_train, n_test, size, gray, kind) in MVTEC_SHAPE.items()}
    jobs = {name: (root, name, kind, n_train, n_test, size, gray)
            for name, (n_train, n_test, size, gray, kind) in shape.items()}
    with ProcessPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        list(pool.map(make_category, *zip(*jobs.values())))
    generated = time.perf_counter() - start
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        exp = Path(tmp) / "exp"
        extra = {"--cache": str(Path(tmp) / "cache")} if args.suite_cache else {}
        end_to_end = run_child(train_command(root, ",".join(MVTEC_SHAPE), args, exp, **extra))
        if args.suite_cache:  # the first run filled the cache; the second is the sweep's usual run
            cold = end_to_end
            end_to_end = run_child(train_command(root, ",".join(MVTEC_SHAPE), args, exp, "--overwrite", **extra))
        outputs = {c: exp / "mvtecad" / c for c in MVTEC_SHAPE}
        summaries = {c: read_metrics(d / METRICS_FILE) for c, d in outputs.items()}
        per_category = {c: s["seconds"] for c, s in summaries.items()}
        metrics = {c: s["metrics"] for c, s in summaries.items()}
    floor_run = run_child(floor_command(train_command(root, ",".join(MVTEC_SHAPE), args, root / "unused")))
    images = sum(n_train + n_test for n_train, n_test, *_ in shape.values())
    summary = {"images": images, "generate_s": generated, "end_to_end_s": end_to_end["seconds"],
               "end_to_end_peak_rss_mb": end_to_end["peak_rss_mb"],
               "floor_process_s": floor_run["seconds"], "ratio_to_floor": end_to_end["seconds"] / floor_run["seconds"]}
    if args.suite_cache:
        summary = {**summary, "cold_cache_end_to_end_s": cold["seconds"]}  # end_to_end_s: the warm run
    print(table([summary], list(summary)))
    rows = [{"category": c, **{k: v for k, v in s.items() if not k.startswith("metric_")},
             "metrics": sum(v for k, v in s.items() if k.startswith("metric_"))} for c, s in per_category.items()]
    print(table(rows, ["category", "fit", "precision", "calibrate", "score", "metrics", "write", "total"]))
    return {"summary": summary, "per_category": per_category, "metrics": metrics, "stdout": end_to_end["stdout"]}


if __name__ == "__main__":
    main()
