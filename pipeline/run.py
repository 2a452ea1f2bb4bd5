"""A run of several categories: the device, the output folders, and the loop that fits one category (or a
grid's variants of it) while the previous one is finished in the background."""
from __future__ import annotations

import importlib
import os
import sys
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from pathlib import Path

import torch

import results
from common import UserError, utf8_problem, write_problem
from datasets.base import SegmentedLoader
from pipeline import outputs
from pipeline.background import Background
from pipeline.blocked import fit_and_score_blocked
from pipeline.category import CategoryResult, finish, save_model
from pipeline.options import RunOptions
from pipeline.plan import Plan
from pipeline.shared_pass import fit_and_score


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


def claim_outputs(experiment: Path, dataset: str, categories: list[str], overwrite: bool,
                  report: Path | None = None) -> dict[str, Path]:
    """Each category's folder, after removing what dead runs left there; refuses earlier results, an
    experiment folder or report that cannot be written, and a folder name results.csv cannot hold."""
    problem = write_problem(experiment)
    if problem is not None:
        raise UserError(f"--experiment {experiment} cannot be written: {problem}; pass another --experiment")
    if report is not None:
        results.check_report(report)
    out_dirs = {c: experiment / dataset / c for c in categories}
    for out_dir in out_dirs.values():
        shown = utf8_problem(str(out_dir))
        if shown is not None:  # the report holds it as text: refused before the fit, not after it
            flag = "--experiment" if utf8_problem(str(experiment)) else "the category"
            raise UserError(f"{flag} in {shown} is not UTF-8 text, which results.csv holds; pass a UTF-8 name")
        for note in outputs.clean_stale(out_dir):
            print(f"warning: {note}", file=sys.stderr)
        if outputs.holds_results(out_dir) and not overwrite:
            raise UserError(f"{out_dir} already holds results; pass --overwrite or another --experiment")
        kept = outputs.foreign_files(out_dir) if overwrite else []
        if kept:
            stale = f" ({results.REPORT_FILE} shows the replaced results: run visualizer.py again)" \
                if results.REPORT_FILE in kept else ""
            print(f"warning: {out_dir} holds files train.py does not write ({', '.join(kept)}): --overwrite keeps "
                  f"them beside the new results{stale}", file=sys.stderr)
    return out_dirs


def run_passes(options: RunOptions, passes: list[list[Plan]], data: SegmentedLoader, device: torch.device, rank: int,
               world: int, announce: Callable[[CategoryResult], None]) -> list[CategoryResult]:
    """Fits each pass (a category's variants fitted together; one in a run without a grid) on the device
    while the previous one's metrics and files are finished in the background (model files, 0.75 GB for
    WRN-50-2, by a thread of their own as soon as a model is calibrated, two at most in flight).
    `announce` is called with each committed category or variant, in order."""
    done: list[CategoryResult] = []
    finishing: deque[Future] = deque()

    def report_finished() -> None:
        while finishing:
            result = finishing.popleft().result()
            announce(result)
            done.append(result)

    extractors: dict = {}
    with Background(limit=2) as saving, Background(limit=1) as finisher:
        if rank == 0:  # the metrics' scipy.ndimage takes half a second to import: meanwhile, not after the last one
            finisher.submit(importlib.import_module, "scipy.ndimage")
        for plans in passes:
            if device.type == "cpu":  # on the CPU, overlap would double the peak memory
                report_finished()
            stagings: list[Path | None] = []
            try:
                for plan in plans:
                    stagings.append(outputs.stage(plan.out_dir) if rank == 0 else None)
                saves = [partial(saving.submit, save_model, staging, options.embed_backbone)
                         if options.save_model and staging is not None else None for staging in stagings]
                if plans[0].block_rows is not None:  # the estimate found the state too large for one piece
                    assert stagings[0] is not None  # blocks are refused under torchrun
                    scored = [fit_and_score_blocked(options, plans[0], data, device, stagings[0], extractors,
                                                    saves[0])]
                else:
                    scored = fit_and_score(options, plans, data, device, stagings, rank, world, extractors, saves)
            except BaseException:
                for staging in stagings:
                    outputs.discard(staging)
                raise
            report_finished()
            for one in scored:
                finishing.append(finisher.submit(finish, options, one))
        report_finished()
    return done
