"""A run's memory, predicted from its plan before the first image is decoded, and the budget it must fit.

The peak resident memory of this process is what it holds now (Python, torch and the libraries) plus the
backbone's weights plus the largest of the phases a category goes through: the fit (the sums, the group
buffer, one batch's activations and the batches in flight), the factorization (sums, factor, float64
workspaces), scoring the validation and test images (their score maps and masks are kept for the
metrics) and the metrics themselves (the defect-free scores sorted, a copy). On a GPU the model's state
and the activations are device memory; the host keeps the maps.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from common import UserError
from models.backbone import feature_size
from models.config import Config
from models.footprint import FLOAT, activation_bytes, model_file_bytes, state_bytes, tile_bytes, weight_bytes
from models.groups import group_size
from pipeline.budget import MARGIN, default_budget, resident_bytes, shown
from pipeline.intervals import resampling_bytes
from pipeline.options import RunOptions
from pipeline.plan import Plan
from pipeline.shared_pass import backbone_key

CHUNK_ELEMENTS = 1 << 20  # models/gaussian.py's float64 chunk on a CPU
MAP_BATCH = 8  # pipeline/blocked.py's maps smoothed at a time
# Measured on CPU (ResNet-18 at 256, 512, 1024 and WRN-50-2 at 256, BENCHMARKS.md): the convolutions hold
# about 1.3x the graph's live tensors (layout copies, oneDNN workspaces), and the allocator's arenas and
# caches keep about 100 MiB beyond what is live.
ACTIVATION_FACTOR = 1.3
RUNTIME = 100 << 20
# Measured: metrics.evaluate on 30 maps of 512 and of 1024 px peaked 27 bytes a pixel above the maps and masks
# it was given (sorted copies, index arrays, the PRO curve's labelled regions)
METRIC_BYTES = 27


@dataclass(frozen=True)
class Estimate:
    peak_rss_bytes: int  # this process's predicted peak resident memory
    model_file_bytes: int
    device_bytes: int  # on a GPU: its predicted peak memory; 0 on a CPU
    parts: dict[str, int]  # the peak's parts, for --verbose

    def as_json(self) -> dict[str, int]:
        return {"peak_rss_bytes": self.peak_rss_bytes, "model_file_bytes": self.model_file_bytes}


def estimate(config: Config, n_val: int, n_test: int, batch_size: int, workers: int, device: torch.device,
             backbone_stored: bool, baseline: int | None = None) -> Estimate:
    """The peak of one category fitted with `config` (several categories run one after another: the
    largest one's peak is the run's)."""
    return pass_estimate([config], n_val, n_test, batch_size, workers, device, backbone_stored, baseline)


def pass_estimate(configs: Sequence[Config], n_val: int, n_test: int, batch_size: int, workers: int,
                  device: torch.device, backbone_stored: bool, baseline: int | None = None,
                  backbones: int = 1, resampling: int = 0) -> Estimate:
    """The peak of one category's variants fitted and scored together from one pass over its images
    (pipeline/shared_pass.py): each variant's state, group buffer and kept maps, beside what they share (the
    images in flight, one batch's activations at a time, `backbones` distinct backbones' weights). The
    variants differ in approx, k and seed only: size, backbone and tiles are the first's."""
    baseline = resident_bytes() if baseline is None else baseline
    on_gpu = device.type == "cuda"
    first = configs[0]
    H, W = first.input_size
    image = 3 * H * W * FLOAT
    in_flight = (1 + 2 * workers) * batch_size * (image + H * W)  # pixels and masks; 2 prefetched per worker
    # a tiled model's backbone takes a batch's tiles at most batch_size at a time
    activations = int(ACTIVATION_FACTOR * activation_bytes(first.backbone, first.model_size, batch_size))
    activations += tile_bytes(first, batch_size)
    h, w = feature_size(first.model_size, first.backbone)
    P = h * w
    states = [state_bytes(config, device.type) for config in configs]
    sums = sum(state["sums"] for state in states)
    buffer = sum(P * group_size(P, config.k) * config.k * FLOAT for config in configs)
    model = sum(state["sums"] + state["factor"] + state["mu"] + state["W"] for state in states)
    # k, or F for the ablations on every channel
    k = max(state["mu"] // (P * FLOAT) for state in states)
    workspace = (torch.get_num_threads() if not on_gpu else 1) * 2 * 8 * min(P * k * k, CHUNK_ELEMENTS)
    # float32 maps of each variant and the uint8 masks they share, kept for the metrics (written in place)
    maps = max(n_val, n_test) * H * W * (len(configs) * FLOAT + 1)
    smoothing = 3 * batch_size * H * W * FLOAT  # a batch's upsampled and blurred maps
    # every variant's maps and masks wait for the metrics, which add their own to one variant's at a time
    metrics = n_test * H * W * (len(configs) * FLOAT + 1 + METRIC_BYTES) + resampling  # + --ci's statistics
    device_side = {"fit": sums + buffer + activations, "factor": model + workspace,
                   "score": model + buffer + activations + smoothing}
    if on_gpu:
        host = {"fit": in_flight, "factor": 0, "score": in_flight + maps, "metrics": metrics}
    else:
        host = {phase: used + in_flight for phase, used in device_side.items()}
        host["score"] += maps
        host["metrics"] = metrics + activations  # the allocator keeps the activations' memory (as in blocks)
    phase = max(host, key=lambda name: host[name])
    weights = backbones * weight_bytes(first.backbone)
    parts = {"held now": baseline, "runtime": RUNTIME, "weights": weights, f"phase {phase}": host[phase],
             "sums": sums, "factor": sum(state["factor"] for state in states), "activations": activations,
             "maps": maps}
    return Estimate(peak_rss_bytes=baseline + RUNTIME + weights + host[phase],
                    model_file_bytes=sum(model_file_bytes(config, backbone_stored) for config in configs),
                    device_bytes=max(device_side.values()) + weights if on_gpu else 0, parts=parts)


BLOCKABLE = ("ortho", "sample", "gaussian", "full")  # one k x k Gaussian per position, factored by Cholesky


def blocked_estimate(config: Config, rows: int, n_val: int, n_test: int, batch_size: int, workers: int,
                     backbone_stored: bool, baseline: int) -> Estimate:
    """The peak of one category fitted on the CPU in blocks of `rows` feature-map rows (pipeline/blocked.py):
    the embedding pass (a group buffer, a batch's activations), then per block its sums, factor and one
    group's rows beside every position's shift and sum z and the scored images' distances, then the maps."""
    H, W = config.input_size
    h, w = feature_size(config.input_size, config.backbone)
    P, k = h * w, config.k
    G, Pb, packed = group_size(P, k), min(rows, h) * w, k * (k + 1) // 2
    image = 3 * H * W * FLOAT
    in_flight = (1 + 2 * workers) * batch_size * (image + H * W)
    activations = int(ACTIVATION_FACTOR * activation_bytes(config.backbone, (H, W), batch_size))
    distances = (n_val + n_test) * P * FLOAT
    block = Pb * (2 * packed + 3 * k + 2 * G * k) * FLOAT + torch.get_num_threads() * 2 * 8 * min(Pb * k * k,
                                                                                               CHUNK_ELEMENTS)
    # after the embedding pass the allocator keeps the activations' memory (measured: WRN-50-2 at 1024 in
    # blocks peaked 1.1 GiB above the blocks alone), so the later phases count them too
    host = {"embed": P * G * k * FLOAT + P * k * FLOAT + activations + in_flight,
            "blocks": 2 * P * k * FLOAT + distances + block + activations,
            "score": distances + max(n_val, n_test) * H * W * (FLOAT + 1) + 3 * MAP_BATCH * H * W * FLOAT
            + activations,
            "metrics": n_test * H * W * (FLOAT + 1 + METRIC_BYTES) + activations}
    phase = max(host, key=lambda name: host[name])
    weights = weight_bytes(config.backbone)
    parts = {"held now": baseline, "runtime": RUNTIME, "weights": weights, f"phase {phase}": host[phase],
             "block sums and factor": Pb * 2 * packed * FLOAT, "activations": activations}
    return Estimate(peak_rss_bytes=baseline + RUNTIME + weights + host[phase],
                    model_file_bytes=model_file_bytes(config, backbone_stored), device_bytes=0, parts=parts)


def embedding_bytes(config: Config, n_images: int) -> int:
    """The embedding files a blocked category writes into its staging folder (removed at its end)."""
    h, w = feature_size(config.input_size, config.backbone)
    return n_images * h * w * config.k * FLOAT


def block_rows(config: Config, budget: int, estimate_of: Callable[[int], Estimate]) -> int | None:
    """The most feature-map rows per block whose estimate fits the budget (fewer blocks: fewer passes
    over the embeddings), or None if not even one row does."""
    low, high = 0, feature_size(config.input_size, config.backbone)[0]
    while low < high:  # the estimate grows with the rows: the largest that fits, by bisection
        middle = (low + high + 1) // 2
        low, high = (middle, high) if estimate_of(middle).peak_rss_bytes <= budget else (low, middle - 1)
    return low or None


def check_budget(named: dict[str, Estimate], budget: int, given: bool, not_blocked: dict[str, str] | None = None
                 ) -> None:
    """Refuses, in one line naming the flags that reduce it, a run whose largest category would pass the
    budget: before any image is decoded, rather than killed by the kernel on the way."""
    category, worst = max(named.items(), key=lambda item: item[1].peak_rss_bytes)
    if worst.peak_rss_bytes <= budget:
        return
    parts = ", ".join(f"{name} {shown(nbytes)}" for name, nbytes in worst.parts.items())
    limit = f"--max-memory {shown(budget)}" if given else \
        f"the {shown(budget)} this machine has available (less {shown(MARGIN)}; --max-memory sets it)"
    blocks = f" ({not_blocked[category]})" if not_blocked and category in not_blocked else ""
    raise UserError(f"{category} needs about {shown(worst.peak_rss_bytes)}{blocks} ({parts}), more than {limit}; "
                    "use a smaller --image-size, --k or --batch-size, fewer --layers or a smaller --model")


def planned_passes(plans: list[Plan], batch_size: int, workers: int, device: torch.device, options: RunOptions,
                   max_memory: int | None, world: int = 1) -> list[list[Plan]]:
    """Each category's variants (one in a run without a grid) in as few passes over its images as fit the
    budget, each plan with its pass's estimate (printed with --verbose). A variant that does not fit alone
    is fitted in blocks of feature-map rows where the run can be blocked (plan.block_rows), else refused."""
    baseline = resident_bytes()
    stored = options.embed_backbone or options.weights != "imagenet"
    backbones = len({backbone_key(plan.config, options.weights) for plan in plans})  # the run keeps each built

    def together(group: list[Plan]) -> Estimate:
        n_test = len(group[0].splits.test)
        return pass_estimate([p.config for p in group], len(group[0].val), n_test, batch_size, workers, device, stored,
                             baseline, backbones, resampling_bytes(options, n_test))
    budget = max_memory if max_memory is not None else default_budget()
    passes: list[list[Plan]] = []
    rows: dict[str, int] = {}
    named: dict[str, Estimate] = {}
    reasons: dict[str, str] = {}  # why an over-budget variant is not fitted in blocks
    for category in dict.fromkeys(plan.category for plan in plans):
        fits = []
        for plan in (p for p in plans if p.category == category):
            named[plan.name] = together([plan])
            if named[plan.name].peak_rss_bytes <= budget:
                fits.append(plan)
                continue
            passes.append([plan])
            reason = not_blockable(plan.config, options, device, world)
            if reason:
                reasons[plan.name] = reason
                continue
            def blocked(r: int, plan: Plan = plan) -> Estimate:
                return blocked_estimate(plan.config, r, len(plan.val), len(plan.splits.test), batch_size, workers,
                                        stored, baseline)
            found = block_rows(plan.config, budget, blocked)
            if found is not None:
                rows[plan.name], named[plan.name] = found, blocked(found)
            else:
                reasons[plan.name] = "even in blocks of one feature-map row"
        for group in packed(fits, together, budget):
            named.update({plan.name: together(group) for plan in group})
            passes.append(group)
    if options.verbose:
        for name, e in named.items():
            parts = ", ".join(f"{part} {shown(nbytes)}" for part, nbytes in e.parts.items())
            blocks = f" in blocks of {rows[name]} feature-map rows" if name in rows else ""
            print(f"{name}: estimate peak {shown(e.peak_rss_bytes)}{blocks} ({parts}), model.pt "
                  f"{shown(e.model_file_bytes)}, budget {shown(budget)}", flush=True)
    check_budget(named, budget, max_memory is not None, reasons)
    if device.type == "cuda":
        check_device(named, device)
    for plan in plans:
        if plan.name in rows:
            check_disk(plan, named[plan.name])
    own = {plan.name: model_file_bytes(plan.config, stored) for plan in plans}
    return [[replace(plan, estimate={**named[plan.name].as_json(), "model_file_bytes": own[plan.name]},
                     block_rows=rows.get(plan.name)) for plan in group] for group in passes]


def packed(plans: list[Plan], together: Callable[[list[Plan]], Estimate], budget: int) -> list[list[Plan]]:
    """The variants in as few groups as fit the budget together (first fit, largest state first), each group
    and the groups in the variants' own order."""
    index = {id(plan): i for i, plan in enumerate(plans)}
    groups: list[list[Plan]] = []
    for plan in sorted(plans, key=lambda p: -sum(state_bytes(p.config).values())):
        for group in groups:
            if together([*group, plan]).peak_rss_bytes <= budget:
                group.append(plan)
                break
        else:
            groups.append([plan])
    groups = [sorted(group, key=lambda p: index[id(p)]) for group in groups]
    return sorted(groups, key=lambda group: index[id(group[0])])


def not_blockable(config: Config, options: RunOptions, device: torch.device, world: int) -> str | None:
    """Why a run cannot be fitted in blocks, or None if it can."""
    if config.tile is not None:
        return "a --tile model is one tile's state: use a smaller --tile"
    if config.approx not in BLOCKABLE:
        return f"--approx {config.approx} cannot be fitted in blocks ({', '.join(BLOCKABLE)} can)"
    if device.type != "cpu":
        return "blocks run on the CPU only (--device cpu)"
    if world > 1:
        return "blocks are not built for torchrun: run one process"
    if options.resume is not None:
        return "--resume extends a model in memory only"
    return None


def check_disk(plan: Plan, e: Estimate) -> None:
    """A blocked category's embeddings and sums go to its staging folder: refused before decoding when the
    disk there cannot take them."""
    n = len(plan.fit) + len(plan.val) + len(plan.splits.test)
    check_room(plan.out_dir, embedding_bytes(plan.config, n) + e.model_file_bytes, plan.category,
               "embeddings and sums", "--experiment")


def check_room(target: Path, needed: int, what: str, files: str, flag: str) -> None:
    folder = target
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise UserError(f"{what} in blocks writes about {shown(needed)} of {files} into {folder}, which has "
                        f"{shown(free)} free; free space there or choose another {flag}")


def check_device(named: dict[str, Estimate], device: torch.device) -> None:
    """On a GPU the state and the activations are device memory: a category that would not fit in what
    the device has free is refused in one line, rather than stopped by torch's out-of-memory error."""
    category, worst = max(named.items(), key=lambda item: item[1].device_bytes)
    free, _ = torch.cuda.mem_get_info(device)
    if worst.device_bytes > free:
        raise UserError(f"{category} needs about {shown(worst.device_bytes)} of {device} memory (sums "
                        f"{shown(worst.parts['sums'])}, factor {shown(worst.parts['factor'])}, activations "
                        f"{shown(worst.parts['activations'])}), more than its {shown(free)} free; use a smaller "
                        "--image-size, --k or --batch-size, fewer --layers, a smaller --model or --device cpu")
