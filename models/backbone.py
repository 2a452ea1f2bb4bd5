"""Multi-scale CNN features at strides 4, 8, 16: the backbone runs up to its third stage only."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from common import UserError

# name -> (torchvision builder, indices of the three stages, their channel counts)
# ResNets: layer1..layer3; MobileNetV3: features[i] at strides 4, 8, 16, as the authors used.
BACKBONES: dict[str, tuple[str, tuple, tuple[int, int, int]]] = {
    "resnet18": ("resnet18", ("layer1", "layer2", "layer3"), (64, 128, 256)),
    "wide_resnet50_2": ("wide_resnet50_2", ("layer1", "layer2", "layer3"), (256, 512, 1024)),
    "mobilenetv3_large": ("mobilenet_v3_large", (3, 6, 12), (24, 40, 112)),
    "mobilenetv3_small": ("mobilenet_v3_small", (1, 3, 8), (16, 24, 48)),
}
DEFAULT_K = {"wide_resnet50_2": 300}  # 100 for every other backbone, as the paper


ALL_LAYERS = (1, 2, 3)


def feature_dim(name: str, layers: tuple[int, ...] = ALL_LAYERS) -> int:
    """F, the number of concatenated channels of the tapped stages (1-based: 1 = stride 4)."""
    return sum(BACKBONES[name][2][i - 1] for i in layers)


def check_layers(name: str, layers: tuple[int, ...], pre_relu: bool = False) -> tuple[int, ...]:
    """The stages to tap, sorted and unique; a one-line error for anything else."""
    if not layers or any(i not in ALL_LAYERS for i in layers):
        raise UserError(f"--layers {','.join(map(str, layers)) or '(none)'}: choose a non-empty subset of 1,2,3")
    if pre_relu and name.startswith("mobilenet"):
        raise UserError(f"--pre-relu taps ResNet stages before their last ReLU; {name} has none: drop it")
    return tuple(sorted(set(layers)))


def default_k(name: str) -> int:
    return DEFAULT_K.get(name, 100)


def imagenet_weights(name: str) -> tuple[torchvision.models.WeightsEnum, Path]:
    """torchvision's IMAGENET1K_V1 weights of `name` (what the paper's `pretrained=True` meant) and
    the file torchvision keeps them in."""
    spec = torchvision.models.get_model_weights(BACKBONES[name][0]).IMAGENET1K_V1
    return spec, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(spec.url)


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's names and values: the same weights give the same digest anywhere."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
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
    builder = BACKBONES[name][0]
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


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """Replaces every (Conv2d, BatchNorm2d) pair of consecutive children by one conv with a bias."""
    previous_name, previous = None, None
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d) and isinstance(previous, nn.Conv2d):
            setattr(module, previous_name, fuse_conv_bn_eval(previous, child))
            setattr(module, name, nn.Identity())
        else:
            fold_batch_norms(child)
        previous_name, previous = name, child
    return module


def _block_pre_relu(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A torchvision BasicBlock or Bottleneck without its final ReLU (it reuses one ReLU module for
    every activation, so the last one cannot be swapped out)."""
    identity = x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(block.conv1(x)))
    if isinstance(block, torchvision.models.resnet.Bottleneck):
        out = block.relu(block.bn2(block.conv2(out)))
        return block.bn3(block.conv3(out)) + identity
    return block.bn2(block.conv2(out)) + identity


class FeatureExtractor(nn.Module):
    """Returns the tapped stage outputs (strides 4, 8, 16 for layers 1, 2, 3) of a backbone, in eval
    mode, frozen. pre_relu (ResNets): each tap is its stage before the last block's final ReLU; the
    next stage still receives the ReLU'd tensor."""

    def __init__(self, name: str, weights: str = "imagenet", layers: tuple[int, ...] = ALL_LAYERS,
                 pre_relu: bool = False):
        super().__init__()
        if name not in BACKBONES:
            raise UserError(f"unknown model '{name}'; choose one of {', '.join(BACKBONES)}")
        layers = check_layers(name, layers, pre_relu)
        builder, stages, channels = BACKBONES[name]
        model = torchvision.models.get_model(builder, weights=None)
        _load_weights(model, name, weights)
        self.name = name
        self.channels = tuple(channels[i - 1] for i in layers)
        self.pre_relu = pre_relu
        if name.startswith("mobilenet"):
            self.body = model.features[: stages[layers[-1] - 1] + 1]
            self.taps = tuple(stages[i - 1] for i in layers)
        else:
            # Everything after the last tapped stage (layer4, pooling, classifier) is dropped: never run, never kept.
            self.body = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool,
                                      model.layer1, model.layer2, model.layer3)[: 4 + layers[-1]]
            self.taps = tuple(3 + i for i in layers)
        # Fitted on torchvision's ImageNet weights, a model file may name them instead of holding them
        # (SemiOrthogonal.save); the digest of the tapped part, before folding, proves a match on load.
        self.imagenet_digest = state_digest(self.body.state_dict()) if weights == "imagenet" else None
        self.eval().requires_grad_(False)
        fold_batch_norms(self.body)  # frozen BN is an affine map: folded into the conv, 10% faster on CPU
        # channels-last convolutions measured 1.3x faster on CPU for ResNet-18 and WRN-50-2
        self.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)  # batch-norm statistics stay the pretrained ones

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        x = x.contiguous(memory_format=torch.channels_last)
        for i, layer in enumerate(self.body):
            if self.pre_relu and i in self.taps:
                *blocks, last = layer
                for block in blocks:
                    x = block(x)
                outputs.append(_block_pre_relu(last, x))
                x = torch.relu(outputs[-1])
                continue
            x = layer(x)
            if i in self.taps:
                outputs.append(x)
        return outputs


def build_extractor(backbone: str, weights: str, seed: int, layers: tuple[int, ...] = (1, 2, 3),
                    pre_relu: bool = False) -> FeatureExtractor:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # --weights random is reproducible from the seed
        return FeatureExtractor(backbone, weights, layers, pre_relu)
