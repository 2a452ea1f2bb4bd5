"""A grid of variants: `--approx`, `--k` and `--seed` as comma-separated lists, every combination a model.

The variants of a category share its images: each image is decoded and goes through the backbone once,
and every variant projects and accumulates from the same features (pipeline/shared_pass.py). Each
variant is committed like a category of its own, into `<category>/<approx>-k<k>-seed<seed>/`, with its
own results.csv row. A single variant keeps the usual `<category>/` folder.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from common import UserError
from models import APPROXIMATIONS
from models.backbone import default_k, feature_dim, feature_size
from models.config import Approx
from models.lowrank import check_feasible
from pipeline.options import seed_value
from pipeline.plan import Plan

T = TypeVar("T")
WHOLE = (Approx.FULL, Approx.GLOBAL)  # k is F whatever --k says


@dataclass(frozen=True)
class Variant:
    approx: Approx
    k: int
    seed: int

    @property
    def folder(self) -> str:
        return f"{self.approx}-k{self.k}-seed{self.seed}"


def listed(flag: str, text: str | None, parse: Callable[[str], T]) -> list[T] | None:
    """A flag's comma-separated values, each parsed, repeats dropped (first kept); None if not given."""
    if text is None:
        return None
    items = [item.strip() for item in str(text).split(",")]
    if not all(items):
        raise UserError(f"{flag} {text}: an empty item; pass values separated by commas, e.g. {flag} 50,100")
    return list(dict.fromkeys(parse(item) for item in items))


def approx_value(text: str) -> Approx:
    if text not in APPROXIMATIONS:
        raise UserError(f"--approx {text}: choose from {', '.join(APPROXIMATIONS)} (or a comma-separated list)")
    return Approx(text)


def k_value(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f"--k {text} must be an integer (or a comma-separated list of them)") from None


def seeds(text: str | None) -> list[int] | None:
    return listed("--seed", text, lambda item: seed_value(item))  # type: ignore[arg-type, return-value]


@dataclass(frozen=True)
class Lists:
    """The grid flags' values; None: not given."""
    approx: list[Approx] | None
    k: list[int] | None
    seed: list[int] | None


def lists(args: Any) -> Lists:
    """Parses --approx, --k and --seed as lists and leaves the first of each in `args` (what a run of one
    variant, --resume and the data's seeded choices read). --resume extends one model: one of each."""
    found = Lists(listed("--approx", args.approx, approx_value), listed("--k", args.k, k_value), seeds(args.seed))
    if args.resume is not None and any(len(values or ()) > 1 for values in astuple(found)):
        raise UserError("--resume extends one model: pass one --approx, --k and --seed (or none)")
    args.approx, args.k, args.seed = (values[0] if values else None for values in astuple(found))
    return found


def variants(backbone: str, layers: tuple[int, ...], approxes: list[Approx], ks: list[int] | None,
             seed_list: list[int]) -> list[Variant]:
    """Every combination, in the order given (approx, then k, then seed); k checked against F, and F itself
    for full and global, whose k is not a choice."""
    F = feature_dim(backbone, layers)
    for k in ks or []:
        if not 1 <= k <= F and any(a not in WHOLE for a in approxes):
            raise UserError(f"--k {k} must be between 1 and F = {F} for {backbone}")
    found: list[Variant] = []
    for approx in approxes:
        for k in ([F] if approx in WHOLE else ks or [min(F, default_k(backbone))]):
            found += [Variant(approx, k, seed) for seed in seed_list]
    return list(dict.fromkeys(found))


def name_of(category: str, variant: Variant | None, grid: list[Variant] | list[None]) -> str:
    """A variant's output folder below the dataset's: the category's own when there is one variant (or
    None: --resume's)."""
    return category if variant is None or len(grid) == 1 else f"{category}/{variant.folder}"


def variant_plans(plan: Plan, grid: list[Variant] | list[None], out_dirs: dict[str, Path]) -> list[Plan]:
    """The category's plan once per variant, each with its settings and its output folder. Refuses a
    variant that cannot be fitted (the full covariance too large, lowranki's k') before any decoding."""
    if len(grid) == 1:
        return [plan]
    planned = []
    for v in grid:
        assert v is not None  # None only alone: --resume
        config = replace(plan.config, approx=v.approx, k=v.k, seed=v.seed)
        check_feasible(config.approx, feature_dim(config.backbone, config.layers), config.k,
                       feature_size(config.model_size, config.backbone))
        planned.append(replace(plan, config=config, out_dir=out_dirs[name_of(plan.category, v, grid)],
                               variant=v.folder))
    return planned
