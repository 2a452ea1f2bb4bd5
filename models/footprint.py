"""What a model holds in memory and on disk, computed from its settings before anything is allocated.

Everything here is arithmetic on shapes: the sums and the factor from P positions and k, the backbone's
weights and its activations from one forward on the meta device (no memory, no arithmetic), with each
intermediate tensor counted from the step that makes it to the last step that reads it.
"""
from __future__ import annotations

import functools

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from models import tiles
from models.backbone import _meta_graph, feature_dim, feature_size, meta_model
from models.config import Approx, Config
from models.embedding import IDENTITY
from models.lowrank import FULL_COVARIANCE

FLOAT = 4  # bytes of a float32


def state_bytes(config: Config, device_type: str = "cpu") -> dict[str, int]:
    """The fitted state's parts in bytes: the sums (kept until model.pt is written), the factor (packed L
    on a CPU, L^-1 on a GPU) and mu, W. The paper's ablations on all F channels have their own shapes."""
    P = _positions(config)
    F = feature_dim(config.backbone, config.layers)
    k = F if config.approx in (Approx.FULL, Approx.GLOBAL) or config.approx in FULL_COVARIANCE else config.k
    packed = k * (k + 1) // 2
    W = F * (F if config.approx in IDENTITY else config.k) * FLOAT
    if config.approx == Approx.GLOBAL:  # one F x F covariance; each position keeps its mean
        return {"sums": (2 * P * F + F * F) * FLOAT, "factor": F * F * FLOAT, "mu": P * F * FLOAT, "W": W}
    if config.approx in FULL_COVARIANCE and config.approx != Approx.FULL:  # k eigenpairs of F per position
        return {"sums": (2 * P * F + P * packed) * FLOAT, "factor": P * F * config.k * FLOAT, "mu": P * F * FLOAT,
                "W": W}
    factor = P * (k * k if device_type == "cuda" else packed) * FLOAT
    return {"sums": (2 * P * k + P * packed) * FLOAT, "factor": factor, "mu": P * k * FLOAT, "W": W}


def model_file_bytes(config: Config, backbone_stored: bool) -> int:
    """model.pt: W, the sums (the factor is recomputed on load) and, for random or file weights or with
    --embed-backbone, the tapped backbone's tensors; the rest (config, thresholds, digests) is small."""
    parts = state_bytes(config)
    return parts["W"] + parts["sums"] + (tapped_weight_bytes(config.backbone) if backbone_stored else 0)


def tile_bytes(config: Config, batch: int) -> int:
    """What a tiled model holds beside a batch of `batch` images: their tiles, cut out, and each tile's
    upsampled map before they are put back together (0 for an untiled model)."""
    if config.tile is None or config.stride is None:
        return 0
    n = batch * tiles.count(config.input_size, config.tile, config.stride)
    return n * (3 + 1) * config.tile[0] * config.tile[1] * FLOAT


def _positions(config: Config) -> int:
    h, w = feature_size(config.model_size, config.backbone)  # a tiled model's: one tile's
    return h * w


@functools.cache
def weight_bytes(backbone: str) -> int:
    """The whole torchvision model's parameters and buffers: what building it holds before it is cut at
    its last tap."""
    model = meta_model(backbone)
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


@functools.cache
def tapped_weight_bytes(backbone: str) -> int:
    graph = _meta_graph(backbone)
    return sum(t.numel() * t.element_size() for t in [*graph.parameters(), *graph.buffers()])


@functools.cache
def activation_bytes(backbone: str, size: tuple[int, int], batch: int = 1) -> int:
    """The most bytes the forward of `batch` images of `size` holds at once: each node's output lives from
    its node to its last reader; in-place activations and the batch norms folded into convs add nothing."""
    graph = _meta_graph(backbone)
    ShapeProp(graph).propagate(torch.empty(batch, 3, *size, device="meta"))
    modules = dict(graph.named_modules())
    nodes = list(graph.graph.nodes)
    order = {node: i for i, node in enumerate(nodes)}
    owner: dict[fx.Node, fx.Node] = {}  # an alias's storage: the node that allocated it
    sizes: dict[fx.Node, int] = {}
    for node in nodes:
        meta = node.meta.get("tensor_meta")
        if node.op == "output" or not hasattr(meta, "shape"):
            continue
        if _aliases(node, modules):
            owner[node] = owner.get(node.args[0], node.args[0])
            continue
        owner[node] = node
        sizes[node] = meta.shape.numel() * meta.dtype.itemsize
    last = {node: order[node] for node in sizes}
    for node in nodes:
        for source in node.all_input_nodes:
            if source in owner:
                base = owner[source]
                last[base] = max(last[base], len(nodes) if node.op == "output" else order[node])
    live = [0] * (len(nodes) + 1)
    for node, nbytes in sizes.items():
        for step in range(order[node], last[node] + 1):
            live[step] += nbytes
    return max(live)


def _aliases(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A node that writes into its input: an in-place activation, or a batch norm the extractor folds."""
    if node.op == "call_module":
        module = modules[str(node.target)]
        return isinstance(module, nn.BatchNorm2d) or bool(getattr(module, "inplace", False))
    return node.op in ("call_function", "call_method") and bool(node.kwargs.get("inplace"))
