"""ImageNet backbones are named in model.pt (address + digest), not stored, unless --embed-backbone.

The ImageNet files cannot be downloaded here: a random state dict placed under the published file
name in a temporary torch hub cache stands in for them, as torchvision only checks hashes on download.
"""
import json

import pytest
import torch
import torchvision
from torch.nn.utils.fusion import fuse_conv_bn_eval

import train
from common import UserError
from models import Config, SemiOrthogonal, read_model_file
from models.backbone import (
    BACKBONES,
    FeatureExtractor,
    build_extractor,
    check_layers,
    feature_size,
    imagenet_weights,
    state_digest,
    strides,
    tap_shapes,
)
from models.taps import tap_graph
from tests.helpers.data import write_category

CONFIG = Config(backbone="resnet18", k=10, image_size=(32, 32), seed=7)


def put_weights(seed: int) -> None:
    """A resnet18 state dict of `seed` where torchvision looks for its ImageNet weights."""
    _, cache = imagenet_weights("resnet18")
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.save(torchvision.models.resnet18().state_dict(), cache)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for proxy in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):  # a download fails at once
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    monkeypatch.setenv("no_proxy", "")
    monkeypatch.setenv("NO_PROXY", "")
    put_weights(0)
    return imagenet_weights("resnet18")[1]


def fitted() -> tuple[SemiOrthogonal, torch.Tensor]:
    torch.manual_seed(1)
    model = SemiOrthogonal(CONFIG, weights="imagenet")
    model.fit(torch.randn(12, 3, 32, 32).split(5))
    model.finalize()
    return model, torch.randn(3, 3, 32, 32)


def test_digest_is_of_names_and_values():
    a = {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(3)}
    assert state_digest(a) == state_digest({"n": torch.tensor(3), "w": torch.arange(6.0).reshape(2, 3)})
    assert state_digest(a) != state_digest({**a, "w": torch.arange(6.0).reshape(3, 2)})
    assert state_digest(a) != state_digest({**a, "n": torch.tensor(4)})
    assert state_digest(a) != state_digest({"v": a["w"], "n": a["n"]})


def test_imagenet_backbone_is_named_and_loads_to_the_same_scores(hub, tmp_path):
    model, test = fitted()
    model.save(tmp_path / "named.pt")
    model.save(tmp_path / "embedded.pt", embed_backbone=True)
    named, embedded = (read_model_file(tmp_path / f"{name}.pt")["backbone"] for name in ("named", "embedded"))
    assert set(named) == {"weights", "url", "sha256"} and named["url"].endswith("/resnet18-f37072fd.pth")
    assert all(isinstance(v, torch.Tensor) for v in embedded.values())
    stored = sum(v.numel() * v.element_size() for v in embedded.values())
    saved = (tmp_path / "embedded.pt").stat().st_size - (tmp_path / "named.pt").stat().st_size
    assert stored <= saved < stored * 1.01
    expected = model.distances(test)
    for name in ("named", "embedded"):
        assert torch.equal(SemiOrthogonal.load(tmp_path / f"{name}.pt").distances(test), expected)


def test_missing_or_other_imagenet_weights_are_one_line_errors(hub, tmp_path):
    model, test = fitted()
    model.save(tmp_path / "named.pt")
    model.save(tmp_path / "embedded.pt", embed_backbone=True)
    put_weights(1)  # a different file under the same name
    with pytest.raises(UserError, match="fitted with other weights than .*resnet18-f37072fd.pth") as e:
        SemiOrthogonal.load(tmp_path / "named.pt")
    assert "\n" not in str(e.value)
    hub.unlink()
    with pytest.raises(UserError, match="not usable at .*resnet18-f37072fd.pth.*embed_backbone") as e:
        SemiOrthogonal.load(tmp_path / "named.pt")
    assert "\n" not in str(e.value)
    # a file that holds its backbone needs nothing else
    torch.testing.assert_close(SemiOrthogonal.load(tmp_path / "embedded.pt").distances(test), model.distances(test))


def test_random_and_file_weights_are_always_stored(tmp_path):
    torch.manual_seed(2)
    model = SemiOrthogonal(CONFIG, weights="random")
    model.fit(torch.randn(4, 3, 32, 32).split(2))
    model.save(tmp_path / "random.pt")
    assert all(isinstance(v, torch.Tensor) for v in read_model_file(tmp_path / "random.pt")["backbone"].values())


def test_train_names_imagenet_weights_unless_embed_backbone(hub, tmp_path):
    root = tmp_path / "data"
    write_category(root, "toy", seed=0)
    fast = ["--model", "resnet18", "--workers", "0", "--k", "10", "--image-size", "64", "--batch-size", "4",
            "--dataroot", str(root), "--category", "toy"]
    assert train.main([*fast, "--experiment", str(tmp_path / "a")]) == 0
    assert train.main([*fast, "--experiment", str(tmp_path / "b"), "--embed-backbone"]) == 0
    named, embedded = (tmp_path / name / "mvtecad" / "toy" for name in ("a", "b"))
    assert "sha256" in read_model_file(named / "model.pt")["backbone"]
    assert "sha256" not in read_model_file(embedded / "model.pt")["backbone"]
    assert (named / "model.pt").stat().st_size < (embedded / "model.pt").stat().st_size
    assert json.loads((named / "metrics.json").read_text())["metrics"] == \
        json.loads((embedded / "metrics.json").read_text())["metrics"]
    # --resume on the named file refits from its sums with the same (checked) backbone, on new images
    write_category(tmp_path / "more", "toy", seed=1)
    more = [*fast[:-4], "--dataroot", str(tmp_path / "more"), "--category", "toy"]
    assert train.main([*more, "--experiment", str(tmp_path / "c"), "--resume", str(named / "model.pt")]) == 0


def test_merge_compares_named_backbones_by_digest():
    from merge_stats import same_backbone

    named = {"weights": "ResNet18_Weights.IMAGENET1K_V1", "url": "u", "sha256": "ab"}
    stored = {"0.weight": torch.ones(2)}
    assert same_backbone(named, dict(named)) and not same_backbone(named, {**named, "sha256": "cd"})
    assert not same_backbone(named, stored) and not same_backbone(stored, named)
    assert same_backbone(stored, {"0.weight": torch.ones(2)})
    assert not same_backbone(stored, {"0.weight": torch.zeros(2)})


# Each row against the unmodified torchvision model run module by module with hooks: the same numbers
# bit for bit once its batch norms are folded the obvious way (consecutive Conv2d, BatchNorm2d children,
# as the extractor did before it was a graph), close to them unfolded. Every row is checked; a new row
# needs no entry here.
EXACT = [(name, (1, 2, 3), False) for name in BACKBONES] + [
    ("resnet18", (2, 3), True), ("wide_resnet50_2", (1, 2, 3), True), ("mobilenetv3_small", (1, 3), False),
    ("resnet50", (1, 3), True), ("wide_resnet101_2", (1, 2, 3), True)]


def fold_children(module: torch.nn.Module) -> torch.nn.Module:
    previous_name, previous = None, None
    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.BatchNorm2d) and isinstance(previous, torch.nn.Conv2d):
            setattr(module, previous_name, fuse_conv_bn_eval(previous, child))
            setattr(module, name, torch.nn.Identity())
        else:
            fold_children(child)
        previous_name, previous = name, child
    return module


def seeded_torchvision(name: str, seed: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)  # what build_extractor's --weights random draws
    return torchvision.models.get_model(BACKBONES[name].builder).eval()


def hooked(model: torch.nn.Module, name: str, x: torch.Tensor, layers, pre_relu: bool) -> list[torch.Tensor]:
    """Each tapped module's output, or the input of its last ReLU call (a ResNet stage's final ReLU)."""
    seen, handles = {}, []
    for layer in layers:
        tap = model.get_submodule(BACKBONES[name].taps[layer - 1])
        if pre_relu:
            handles.append(tap[-1].relu.register_forward_pre_hook(
                lambda m, inputs, layer=layer: seen.__setitem__(layer, inputs[0].clone())))
        else:
            handles.append(tap.register_forward_hook(lambda m, i, out, layer=layer: seen.__setitem__(layer, out)))
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return [seen[layer] for layer in layers]


@pytest.mark.parametrize("name,layers,pre_relu", EXACT)
def test_each_row_equals_torchvision(name, layers, pre_relu):
    extractor = build_extractor(name, "random", 4, layers, pre_relu)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = extractor(x)
    reference = seeded_torchvision(name)
    for tap, ref in zip(ours, hooked(reference, name, x, layers, pre_relu), strict=True):
        torch.testing.assert_close(tap, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    folded = fold_children(reference).to(memory_format=torch.channels_last)
    expected = hooked(folded, name, x.contiguous(memory_format=torch.channels_last), layers, pre_relu)
    assert all(torch.equal(a, b) for a, b in zip(ours, expected, strict=True))
    assert [tuple(o.shape[1:]) for o in ours] == [tap_shapes(name, (32, 32))[i - 1] for i in layers]
    assert tuple(ours[0].shape[-2:]) == feature_size((32, 32), name) or layers[0] != 1
    assert strides(name) == (4, 8, 16)
    if pre_relu:
        assert all((tap < 0).any() for tap in ours)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_pre_relu_is_offered_where_every_tap_ends_in_a_relu(name):
    try:
        with torch.device("meta"):
            model = torchvision.models.get_model(BACKBONES[name].builder)
    except (NotImplementedError, RuntimeError):  # a builder that computes on tensors (RegNet's widths)
        model = torchvision.models.get_model(BACKBONES[name].builder)
    try:
        tap_graph(model, BACKBONES[name].taps, pre_relu=True)
        ends_in_relu = True
    except ValueError:
        ends_in_relu = False
    assert ends_in_relu == BACKBONES[name].pre_relu
    if not ends_in_relu:
        with pytest.raises(UserError, match="^pre_relu") as e:
            check_layers(name, (1, 2, 3), pre_relu=True)
        assert "\n" not in str(e.value)


def test_grid_follows_each_backbones_rounding():
    # a 4 x 4 stride-4 stem (ConvNeXt) rounds down where conv + max-pool (ResNet) round up twice
    assert feature_size((70, 50), "resnet18") == (18, 13)
    assert feature_size((70, 50), "convnext_tiny") == (17, 12)
    assert feature_size((70, 50), "efficientnet_b4") == (18, 13)


@pytest.mark.parametrize("name,layers,pre_relu", [("resnet18", (1, 2, 3), False), ("resnet18", (1, 3), True),
                                                 ("mobilenetv3_small", (1, 2), False)])
def test_files_written_before_the_graph_extractor_still_load(name, layers, pre_relu, hub, tmp_path):
    """Model files (and ImageNet digests) of the module-by-module extractor named the backbone's tensors
    body.<i>... by position in the truncated nn.Sequential it ran; they are read as they were written."""
    with torch.random.fork_rng():
        torch.manual_seed(4)
        model = torchvision.models.get_model(BACKBONES[name].builder).eval()
    depth = BACKBONES[name].taps[layers[-1] - 1]
    if name.startswith("mobilenet"):
        old_body = model.features[: int(depth.split(".")[1]) + 1]
    else:
        old_body = torch.nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool,
                                       model.layer1, model.layer2, model.layer3)[: 4 + layers[-1]]
    old_digest = state_digest(old_body.state_dict())
    weights = {key: value.clone() for key, value in model.state_dict().items()}
    written = {f"body.{key}": value for key, value in fold_children(old_body).state_dict().items()}
    extractor = build_extractor(name, "random", 4, layers, pre_relu)
    assert {key: value.shape for key, value in extractor.state_dict().items()} == \
        {key: value.shape for key, value in written.items()}
    assert all(torch.equal(extractor.state_dict()[key], value) for key, value in written.items())
    config = Config(backbone=name, k=10, image_size=(32, 32), seed=4, layers=layers, pre_relu=pre_relu)
    fitted = SemiOrthogonal(config, weights="random")
    fitted.fit([torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))])
    fitted.save(tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    state["backbone"] = {key: value.clone() for key, value in written.items()}
    torch.save(state, tmp_path / "old.pt")
    test = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    fitted.finalize()
    assert torch.equal(SemiOrthogonal.load(tmp_path / "old.pt").distances(test), fitted.distances(test))
    if name == "resnet18":  # the hub fixture's file holds these weights under the ImageNet name
        torch.save(weights, imagenet_weights(name)[1])
        assert FeatureExtractor(name, "imagenet", layers, pre_relu).imagenet_digest == old_digest
