"""ImageNet backbones are named in model.pt (address + digest), not stored, unless --embed-backbone.

The ImageNet files cannot be downloaded here: a random state dict placed under the published file
name in a temporary torch hub cache stands in for them, as torchvision only checks hashes on download.
"""
import json

import pytest
import torch
import torchvision

import train
from common import UserError
from models import Config, SemiOrthogonal, read_model_file
from models.backbone import imagenet_weights, state_digest
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
    with pytest.raises(UserError, match="not usable at .*resnet18-f37072fd.pth.*--embed-backbone") as e:
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
