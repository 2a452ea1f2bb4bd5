"""The synthetic loader and its cache folder: categories() and load() for `--dataset synthetic`.

A category is written in MVTec AD's layout into a hidden sibling folder and renamed into place,
so a crash leaves no category, and synthetic.json (written last) records the parameters it was
made with, so a cached category is only reused for the same ones.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from common import UserError, write_json
from datasets import mvtec
from datasets.options import DataOptions
from datasets.samples import Splits
from datasets.synthetic.render import CATEGORIES, VERSION, check_category, render_sample


def default_root() -> Path:
    """Cache folder for generated categories; SEMIORTHO_SYNTHETIC overrides it."""
    override = os.environ.get("SEMIORTHO_SYNTHETIC")
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "semiortho" / "synthetic"


def generate_category(root: Path, category: str, *, seed: int = 0, image_size: int | None = None,
                      n_train: int = 60, n_test_good: int = 10, n_test_defect: int = 20,
                      grayscale: bool | None = None) -> Path:
    """Write `<root>/<category>` (replacing an earlier synthetic one) and return its path.

    `n_test_defect` is the total number of defective test images, spread evenly over the
    category's defect types (the first types get the remainder). A folder that was not written
    by this generator is never replaced.
    """
    params = _resolve_params(category, seed=seed, image_size=image_size, n_train=n_train,
                             n_test_good=n_test_good, n_test_defect=n_test_defect, grayscale=grayscale)
    target = Path(root) / category
    if target.exists() and not (target / "synthetic.json").is_file():
        raise UserError(f"{target} exists and was not written by the synthetic generator; "
                        "refusing to replace it, use another root")
    return _build_and_publish(Path(root), category, params, replace=True)


def ensure_category(root: Path, category: str, **params: Any) -> Path:  # _resolve_params' keywords
    """Generate `<root>/<category>` if missing, else reuse it when it was made with the same parameters."""
    wanted = _resolve_params(category, **params)
    target = Path(root) / category
    if not target.exists():
        try:
            return _build_and_publish(Path(root), category, wanted, replace=False)
        except FileExistsError:
            pass  # another process published it first: check theirs below
    _check_existing(target, wanted)
    return target


def categories(root: Path | None, options: DataOptions) -> list[str]:
    """Every synthetic category (they are generated on demand, so the root's content does not matter)."""
    return list(CATEGORIES)


def load(root: Path | None, category: str, options: DataOptions) -> Splits:
    """Splits of a synthetic category, generated on first use (defaults unless already on disk).

    A category already generated under `root` (e.g. by tools/make_synthetic.py with other sizes)
    is used as it is, like any dataset root.
    """
    check_category(category)
    root = Path(root) if root is not None else default_root()
    if not (root / category / "synthetic.json").is_file():
        ensure_category(root, category)
    return mvtec.load(root, category, options)


# ----------------------------------------------------------------------------- parameters and files

def _resolve_params(category: str, *, seed: int = 0, image_size: int | None = None, n_train: int = 60,
                    n_test_good: int = 10, n_test_defect: int = 20, grayscale: bool | None = None) -> dict:
    check_category(category)
    image_size = CATEGORIES[category].get("size", 256) if image_size is None else image_size  # sheet: 1024
    checks = [("seed", seed, 0, 2**63 - 1), ("image_size", image_size, 32, 4096),
              ("n_train", n_train, 1, 100_000), ("n_test_good", n_test_good, 0, 100_000),
              ("n_test_defect", n_test_defect, 0, 100_000)]
    for name, value, low, high in checks:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
            raise UserError(f"synthetic {name} must be an integer in [{low}, {high}], got {value!r}")
    if n_test_good + n_test_defect == 0:
        raise UserError("synthetic data needs at least one test image (n_test_good + n_test_defect > 0)")
    gray = CATEGORIES[category]["grayscale"] if grayscale is None else bool(grayscale)
    return {"version": VERSION, "category": category, "seed": int(seed), "image_size": int(image_size),
            "n_train": int(n_train), "n_test_good": int(n_test_good), "n_test_defect": int(n_test_defect),
            "grayscale": gray}


def _check_existing(target: Path, wanted: dict) -> None:
    try:
        found = json.loads((target / "synthetic.json").read_text())
    except (OSError, ValueError):
        raise UserError(f"{target} exists but has no readable synthetic.json (not made by the generator); "
                        "delete the folder or use another root") from None
    diff = [f"{k}={found.get(k)!r} (wanted {v!r})" for k, v in wanted.items() if found.get(k) != v]
    if diff:
        raise UserError(f"{target} was generated with other parameters: {', '.join(diff)}; "
                        "delete the folder or use another root")


def _defect_counts(category: str, n_test_defect: int) -> dict[str, int]:
    types = CATEGORIES[category]["defects"]
    base, extra = divmod(n_test_defect, len(types))
    return {d: base + (i < extra) for i, d in enumerate(types)}


def _jobs(params: dict) -> list[tuple[str, int, str | None, str, str | None]]:
    """(split, index, defect, image path, mask path) of every file, relative to the category folder."""
    width = lambda n: max(3, len(str(max(n - 1, 0))))  # noqa: E731 - MVTec's 000.png naming
    jobs: list[tuple[str, int, str | None, str, str | None]] = [
        ("train", i, None, f"train/good/{i:0{width(params['n_train'])}d}.png", None) for i in range(params["n_train"])]
    jobs += [("good", i, None, f"test/good/{i:0{width(params['n_test_good'])}d}.png", None)
             for i in range(params["n_test_good"])]
    for defect, count in _defect_counts(params["category"], params["n_test_defect"]).items():
        for i in range(count):
            name = f"{i:0{width(count)}d}"
            jobs.append(("defect", i, defect, f"test/{defect}/{name}.png", f"ground_truth/{defect}/{name}_mask.png"))
    return jobs


def _write_job(folder: Path, params: dict, job: tuple) -> None:
    split, index, defect, image_path, mask_path = job
    image, mask = render_sample(params["category"], split=split, index=index, defect=defect,
                                seed=params["seed"], image_size=params["image_size"],
                                grayscale=params["grayscale"])
    # compress_level 1: several times faster than the default at 1024 px, files ~15% larger
    Image.fromarray(image).save(folder / image_path, compress_level=1)
    if mask_path is not None:
        assert mask is not None  # a mask path: a defect job, which render_sample draws a mask for
        Image.fromarray(mask, mode="L").save(folder / mask_path, compress_level=1)


def _build_and_publish(root: Path, category: str, params: dict, *, replace: bool) -> Path:
    """Render into a hidden sibling folder, then rename it into place: a crash leaves no category."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / category
    # one level down, so that a leftover of a killed run has no train/good a loader could take
    # for a category
    scratch = _sibling(target, "tmp")
    tmp = scratch / category
    try:
        jobs = _jobs(params)
        folders = {"train/good", "test/good"} | {str(Path(p).parent) for job in jobs for p in job[3:] if p}
        for folder in sorted(folders):
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        _run_jobs(lambda job: _write_job(tmp, params, job), jobs)
        write_json(tmp / "synthetic.json", params)  # written last: it marks the folder complete
        _publish(tmp, target, replace)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _sibling(target: Path, suffix: str) -> Path:
    """A new hidden folder beside `target`; unlike mkdtemp it honours the umask (a shared cache stays readable)."""
    folder = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{suffix}"
    folder.mkdir()
    return folder


def _run_jobs(work: Callable[[tuple], None], jobs: list[tuple]) -> None:
    # numpy, OpenCV and zlib release the GIL, so threads overlap rendering and PNG encoding;
    # every job has its own random stream, so the output does not depend on the scheduling
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(8, cpus)
    if workers <= 1 or len(jobs) < 4:
        for job in jobs:
            work(job)
        return
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(work, jobs):
            pass


def _publish(tmp: Path, target: Path, replace: bool) -> None:
    if not target.exists():
        try:
            os.rename(tmp, target)
            return
        except OSError:
            if not target.exists():
                raise
    if not replace:
        raise FileExistsError(target)
    trash = _sibling(target, "old")
    os.rename(target, trash / "old")
    os.rename(tmp, target)
    shutil.rmtree(trash, ignore_errors=True)
