"""Multi-scale CNN features at strides 4, 8, 16: a torchvision backbone run up to its deepest tap only.

A backbone is one row of BACKBONES. Everything else follows from it: the taps' channels (F) and the
position grid are read off one forward on the meta device (models/taps.py), the pre-ReLU taps from the
graph, the flags' choices and default k from the row."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import sys
from pathlib import Path
from typing import NamedTuple

import torch
import torchvision
from torch import fx, nn

from common import SettingError, UserError
from models.taps import fold_batch_norms, tap_graph


class Backbone(NamedTuple):
    builder: str  # torchvision.models.get_model name
    taps: tuple[str, str, str]  # graph nodes at strides 4, 8, 16 (torchvision's get_graph_node_names)
    k: int = 100  # default k
    pre_relu: bool = False  # each tap ends in a ReLU: --pre-relu taps its input instead
    # Model files written before the graph extractor numbered the tensors by this module's children
    # (body.<i>...; "" = the model itself); their rows keep it so those files and digests stay valid.
    numbered: str | None = None


RESNET_TAPS = ("layer1", "layer2", "layer3")
# MobileNetV3: the last block at strides 4, 8, 16, as the authors used. k: 300 where F = 1792, as the
# paper chose for WRN-50-2; 100 for every other backbone, as the paper.
BACKBONES: dict[str, Backbone] = {
    "resnet18": Backbone("resnet18", RESNET_TAPS, pre_relu=True, numbered=""),
    "wide_resnet50_2": Backbone("wide_resnet50_2", RESNET_TAPS, k=300, pre_relu=True, numbered=""),
    "mobilenetv3_large": Backbone("mobilenet_v3_large", ("features.3", "features.6", "features.12"),
                                  numbered="features"),
    "mobilenetv3_small": Backbone("mobilenet_v3_small", ("features.1", "features.3", "features.8"),
                                  numbered="features"),
    "resnet50": Backbone("resnet50", RESNET_TAPS, k=300, pre_relu=True),
    "wide_resnet101_2": Backbone("wide_resnet101_2", RESNET_TAPS, k=300, pre_relu=True),
    "efficientnet_b4": Backbone("efficientnet_b4", ("features.2", "features.3", "features.5")),
    "convnext_tiny": Backbone("convnext_tiny", ("features.1", "features.3", "features.5")),
}

ALL_LAYERS = (1, 2, 3)


@functools.cache
def meta_model(name: str) -> nn.Module:
    """The whole torchvision model of a row on the meta device: shapes without weights, memory or arithmetic."""
    builder = BACKBONES[name].builder
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                return torchvision.models.get_model(builder, weights=None)
        except (NotImplementedError, RuntimeError):  # a builder that computes on tensors (RegNet's widths)
            return torchvision.models.get_model(builder, weights=None).to("meta")


def _meta_graph(name: str) -> fx.GraphModule:
    """The backbone's three taps on the meta device."""
    return tap_graph(meta_model(name).eval(), BACKBONES[name].taps)


@functools.lru_cache(maxsize=256)
def tap_shapes(name: str, size: tuple[int, int] = (64, 64)) -> tuple[tuple[int, int, int], ...]:
    """(C, h, w) of each of the three taps for an image of `size`: one dry run, so the conv arithmetic
    (each layer's padding and rounding) is the backbone's own, whatever the size."""
    with torch.no_grad():
        outputs = _meta_graph(name)(torch.empty(1, 3, *size, device="meta"))
    return tuple((o.shape[1], o.shape[2], o.shape[3]) for o in outputs)


def feature_dim(name: str, layers: tuple[int, ...] = ALL_LAYERS) -> int:
    """F, the number of concatenated channels of the tapped stages (1-based: 1 = stride 4)."""
    return sum(tap_shapes(name)[i - 1][0] for i in layers)


def feature_size(size: tuple[int, int], name: str) -> tuple[int, int]:
    """The position grid for images of `size`: the first tap's map size (stride 4), whichever layers
    are tapped. ResNets and MobileNets round up twice (ceil(ceil(s / 2) / 2)), ConvNeXt's 4 x 4 stem
    rounds down."""
    return tap_shapes(name, tuple(size))[0][1:]


def strides(name: str) -> tuple[int, ...]:
    """Each tap's stride: 4, 8, 16 for every row."""
    return tuple(256 // shape[1] for shape in tap_shapes(name, (256, 256)))


def check_layers(name: str, layers: tuple[int, ...], pre_relu: bool = False) -> tuple[int, ...]:
    """The stages to tap, sorted and unique; a one-line error for anything else."""
    if not layers or any(i not in ALL_LAYERS for i in layers):
        raise SettingError(f"$layers {','.join(map(str, layers)) or '(none)'}: choose a non-empty subset of 1,2,3")
    if pre_relu and not BACKBONES[name].pre_relu:
        raise SettingError(f"$pre_relu taps ResNet stages before their last ReLU; {name} has none: drop it")
    return tuple(sorted(set(layers)))


def default_k(name: str) -> int:
    return BACKBONES[name].k


def imagenet_weights(name: str) -> tuple[torchvision.models.WeightsEnum, Path]:
    """torchvision's IMAGENET1K_V1 weights of `name` (what the paper's `pretrained=True` meant) and
    the file torchvision keeps them in."""
    spec = torchvision.models.get_model_weights(BACKBONES[name].builder).IMAGENET1K_V1
    return spec, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(spec.url)


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's names and values: the same weights give the same digest anywhere."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        # numpy declares ndarray.__buffer__ for Python >= 3.12 only; mypy checks as 3.11
        digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))  # type: ignore[arg-type]
    return digest.hexdigest()


def weights_reference(extractor: FeatureExtractor) -> dict | None:
    """What a model file can store instead of the backbone's tensors: its ImageNet weights by address
    and digest (None for random or file weights, which only the tensors describe)."""
    if extractor.imagenet_digest is None:
        return None
    spec, _ = imagenet_weights(extractor.name)
    return {"weights": str(spec), "url": spec.url, "sha256": extractor.imagenet_digest}


def is_reference(backbone: dict) -> bool:
    """A model file's backbone entry names ImageNet weights (weights_reference) rather than holding them."""
    return isinstance(backbone.get("sha256"), str)


def _load_weights(model: nn.Module, name: str, weights: str) -> None:
    builder = BACKBONES[name].builder
    if weights == "random":
        return
    if weights == "imagenet":
        spec, cache = imagenet_weights(name)
        log = io.StringIO()  # torch.hub announces the download; shown only if it works
        try:
            with contextlib.redirect_stderr(log):
                state = spec.get_state_dict(progress=False, check_hash=True)
        except Exception as e:  # no network, proxy, corrupt cached file...
            raise UserError(
                f"ImageNet weights for {name} are not usable at {cache} and could not be downloaded "
                f"({type(e).__name__}); download {spec.url} to that path, or use weights from a state-dict file "
                f"or random weights") from None
        sys.stderr.write(log.getvalue())
    else:
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"weights {weights}: no such file; use imagenet, random or a state-dict file")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(f"weights {weights}: not a readable torch state dict ({type(e).__name__})") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"weights {weights}: does not fit torchvision's {builder} ({first})") from None


class FeatureExtractor(nn.Module):
    """Returns the tapped stage outputs (strides 4, 8, 16 for layers 1, 2, 3) of a backbone, in eval
    mode, frozen: torchvision's graph up to the deepest tap (nothing after it is kept or run), batch
    norms folded, channels-last. pre_relu: each tap is its stage before the final ReLU; the next stage
    still receives the ReLU'd tensor."""

    def __init__(self, name: str, weights: str = "imagenet", layers: tuple[int, ...] = ALL_LAYERS,
                 pre_relu: bool = False):
        super().__init__()
        if name not in BACKBONES:
            raise UserError(f"unknown model '{name}'; choose one of {', '.join(BACKBONES)}")
        layers = check_layers(name, layers, pre_relu)
        row = BACKBONES[name]
        model = torchvision.models.get_model(row.builder, weights=None)
        _load_weights(model, name, weights)
        self.name = name
        self.channels = tuple(tap_shapes(name)[i - 1][0] for i in layers)
        self.pre_relu = pre_relu
        self.body = tap_graph(model.eval(), tuple(row.taps[i - 1] for i in layers), pre_relu)
        # a file's tensor names: torchvision's, or for the original rows the numbering they were saved with
        self._numbers = None if row.numbered is None else \
            {child: str(i) for i, (child, _) in enumerate(model.get_submodule(row.numbered).named_children())}
        self._register_state_dict_hook(_stored_names)
        self._register_load_state_dict_pre_hook(_native_names, with_module=True)
        # Fitted on torchvision's ImageNet weights, a model file may name them instead of holding them
        # (SemiOrthogonal.save); the digest of the tapped part, before folding, proves a match on load.
        self.imagenet_digest = None if weights != "imagenet" else \
            state_digest({self.stored_name(key): value for key, value in self.body.state_dict().items()})
        self.eval().requires_grad_(False)
        fold_batch_norms(self.body)  # frozen BN is an affine map: folded into the conv, 10% faster on CPU
        # channels-last convolutions measured 1.3x faster on CPU for ResNet-18 and WRN-50-2
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch 2.6's stubs lack it

    def stored_name(self, key: str) -> str:
        """A tensor's name under `body` as model files and the ImageNet digest know it."""
        if self._numbers is None:
            return key
        trunk = BACKBONES[self.name].numbered
        child, _, rest = key[len(trunk) + 1:].partition(".") if trunk else key.partition(".")
        return f"{self._numbers[child]}.{rest}"

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)  # batch-norm statistics stay the pretrained ones

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x.contiguous(memory_format=torch.channels_last)))


def _stored_names(module: FeatureExtractor, state: dict, prefix: str, local_metadata: dict) -> None:
    body = prefix + "body."
    for key in [key for key in state if key.startswith(body)]:
        state[body + module.stored_name(key[len(body):])] = state.pop(key)


def _native_names(module: FeatureExtractor, state: dict, prefix: str, *args) -> None:
    body = prefix + "body."
    native = {module.stored_name(key): key for key in module.body.state_dict()}
    for key in [key for key in state if key.startswith(body) and key[len(body):] in native]:
        state[body + native[key[len(body):]]] = state.pop(key)


def build_extractor(backbone: str, weights: str, seed: int, layers: tuple[int, ...] = (1, 2, 3),
                    pre_relu: bool = False) -> FeatureExtractor:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # --weights random is reproducible from the seed
        return FeatureExtractor(backbone, weights, layers, pre_relu)
