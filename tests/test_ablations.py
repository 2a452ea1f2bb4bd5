"""--layers and --pre-relu taps against an unmodified torchvision ResNet; the --label convention."""
import pytest
import torch
import torchvision

from common import UserError
from models import SemiOrthogonal
from models.backbone import BACKBONES, FeatureExtractor, feature_dim
from models.semi_ortho import Config


def reference_with_weights(name, tmp_path):
    """An unmodified torchvision ResNet with non-trivial BN statistics, and its state-dict file."""
    torch.manual_seed(2)
    reference = torchvision.models.get_model(BACKBONES[name][0]).eval()
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)
    return reference, str(path)


def hooked_taps(reference, x, pre_relu):
    """Each stage's output, or the input of the last call of its last block's ReLU (the final one)."""
    seen = {}
    handles = []
    for i in (1, 2, 3):
        stage = getattr(reference, f"layer{i}")
        if pre_relu:
            def hook(module, inputs, i=i):
                seen[i] = inputs[0].clone()  # later calls overwrite: the last one is before the output
            handles.append(stage[-1].relu.register_forward_pre_hook(hook))
        else:
            handles.append(stage.register_forward_hook(lambda m, inp, out, i=i: seen.__setitem__(i, out)))
    with torch.no_grad():
        reference(x)
    for handle in handles:
        handle.remove()
    return seen


@pytest.mark.parametrize("name,layers,pre_relu", [("resnet18", (3,), False), ("resnet18", (1, 2, 3), True),
                                                 ("resnet18", (2,), True), ("resnet18", (1, 3), False),
                                                 ("wide_resnet50_2", (1, 2, 3), True)])  # Bottleneck blocks
def test_taps_equal_torchvision_tensors(name, layers, pre_relu, tmp_path):
    reference, weights = reference_with_weights(name, tmp_path)
    extractor = FeatureExtractor(name, weights, layers, pre_relu)
    x = torch.randn(2, 3, 48, 48)
    expected = hooked_taps(reference, x, pre_relu)
    with torch.no_grad():
        ours = extractor(x)
    assert len(ours) == len(layers)
    assert sum(o.shape[1] for o in ours) == feature_dim(name, layers)
    for tap, layer in zip(ours, layers):
        ref = expected[layer]
        torch.testing.assert_close(tap, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
        if pre_relu:
            assert (tap < 0).any()  # really before the ReLU
    # nothing past the last tapped stage is kept or run
    assert [name for name, _ in extractor.body.named_children()][-1] == f"layer{layers[-1]}"


def test_layers_set_F_and_the_model_runs():
    config = Config(backbone="resnet18", k=10, image_size=(64, 64), layers=(1, 2))
    model = SemiOrthogonal(config, weights="random")
    assert model.W.shape == (64 + 128, 10)
    model.fit([torch.randn(3, 3, 64, 64)])
    model.finalize()
    assert model.distances(torch.randn(2, 3, 64, 64)).shape == (2, 16, 16)


def test_bad_layers_and_pre_relu_on_mobilenet_are_refused():
    with pytest.raises(UserError, match="^layers"):  # models/ names the setting; train.py the flag
        FeatureExtractor("resnet18", "random", ())
    with pytest.raises(UserError, match="^layers"):  # models/ names the setting; train.py the flag
        FeatureExtractor("resnet18", "random", (4,))
    with pytest.raises(UserError, match="^pre_relu"):
        FeatureExtractor("mobilenetv3_small", "random", (1, 2, 3), True)
