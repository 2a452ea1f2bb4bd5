"""The model against direct float64 formulas: W, streaming statistics, precision, distances, smoothing."""
import math

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from common import UserError
from models import (
    Config,
    RunningStats,
    SemiOrthogonal,
    cholesky_packed,
    feature_dim,
    mahalanobis,
    make_projection,
    read_model_file,
    smooth,
)
from models.backbone import BACKBONES, FeatureExtractor, feature_size, strides, tap_shapes
from models.gaussian import pack_lower, unpack_lower

ORIGINAL_ROWS = ["resnet18", "wide_resnet50_2", "mobilenetv3_large", "mobilenetv3_small"]


@pytest.mark.parametrize("F_, k", [(448, 100), (88, 88), (30, 7)])
def test_ortho_projection_is_semi_orthogonal_and_seeded(F_, k):
    W = make_projection(F_, k, "ortho", seed=3).double()
    assert W.shape == (F_, k)
    assert torch.allclose(W.T @ W, torch.eye(k, dtype=torch.float64), atol=1e-5)
    assert torch.equal(make_projection(F_, k, "ortho", seed=3), make_projection(F_, k, "ortho", seed=3))
    assert not torch.equal(make_projection(F_, k, "ortho", seed=3), make_projection(F_, k, "ortho", seed=4))


def test_sample_full_gaussian_projections():
    W = make_projection(50, 10, "sample", seed=1)
    assert torch.equal(W.sum(0), torch.ones(10)) and set(W.unique().tolist()) == {0.0, 1.0}
    assert W.sum(1).max() == 1  # distinct channels
    assert torch.equal(make_projection(50, 10, "full"), torch.eye(50))
    G = make_projection(500, 20, "gaussian", seed=1)
    assert abs(G.std().item() - 1) < 0.05 and not torch.allclose(G.T @ G, torch.eye(20) * 500, atol=1.0)
    with pytest.raises(UserError, match="k = 51"):
        make_projection(50, 51, "ortho")


def reference_stats(z: np.ndarray, eps: float, unbiased: bool):
    """z (P, N, k) float64 -> mu, precision per position by the textbook formula."""
    mu = z.mean(axis=1)
    prec = []
    for p in range(z.shape[0]):
        cov = np.cov(z[p].T, bias=not unbiased) + eps * np.eye(z.shape[2])
        prec.append(np.linalg.inv(cov))
    return mu, np.stack(prec)


@pytest.mark.parametrize("unbiased", [False, True])
def test_streaming_fit_matches_float64_formula_with_large_offset(unbiased):
    rng = np.random.default_rng(0)
    P, N, k = 5, 300, 12
    scale = rng.uniform(0.1, 3, size=(1, 1, k))
    z = 1000.0 + rng.normal(size=(P, N, k)) * scale + rng.normal(size=(P, 1, k))  # big mean, small spread
    stats = RunningStats(P, k)
    for start in range(0, N, 37):  # uneven batches
        stats.update(torch.from_numpy(z[:, start:start + 37]).float())
    mu, packed = cholesky_packed(stats, eps=0.01, unbiased=unbiased, chunk_elements=2 * k * k)
    assert packed.shape == (P, k * (k + 1) // 2)
    chol = unpack_lower(packed, k).tril()
    assert torch.equal(pack_lower(chol), packed)
    prec = np.linalg.inv(chol.double().numpy() @ chol.double().numpy().transpose(0, 2, 1))
    ref_mu, ref_prec = reference_stats(z, 0.01, unbiased)
    assert stats.n == N
    np.testing.assert_allclose(mu.double().numpy(), ref_mu, rtol=1e-6)
    # float32 inputs carry ~1e-4 absolute rounding at 1000; precision must still agree to ~1e-3 relative
    np.testing.assert_allclose(prec, ref_prec, rtol=2e-3, atol=2e-3 * np.abs(ref_prec).max())


def test_cholesky_for_large_k_is_exact():
    # batched LU on some CPU builds returns garbage for k >= 200: Cholesky must not
    rng = np.random.default_rng(1)
    P, N, k = 3, 600, 256
    z = rng.normal(size=(P, N, k)) @ rng.normal(size=(k, k)) * 0.1
    stats = RunningStats(P, k)
    stats.update(torch.from_numpy(z).float())
    _, packed = cholesky_packed(stats, eps=0.01)
    chol = unpack_lower(packed, k).tril()
    ref_cov = np.stack([np.cov(x.T, bias=True) for x in z.astype(np.float32).astype(np.float64)]) + 0.01 * np.eye(k)
    cov = chol.double().numpy() @ chol.double().numpy().transpose(0, 2, 1)
    err = np.abs(cov - ref_cov).max() / np.abs(ref_cov).max()
    assert err < 1e-5
    probe = rng.normal(size=(P, 4, k)) * 0.3
    d = mahalanobis(torch.from_numpy(probe).float(), stats.mean(), packed).double().numpy()
    ref_mu = z.astype(np.float32).astype(np.float64).mean(axis=1)
    centred = probe - ref_mu[:, None]
    ref_d = np.sqrt(np.einsum("pbi,pij,pbj->pb", centred, np.linalg.inv(ref_cov), centred))
    np.testing.assert_allclose(d, ref_d, rtol=1e-3)


def test_mahalanobis_matches_direct_formula():
    rng = np.random.default_rng(2)
    P, B, k = 4, 6, 9
    chol = np.tril(rng.normal(size=(P, k, k))) + 3 * np.eye(k)
    prec = np.linalg.inv(chol @ chol.transpose(0, 2, 1))
    mu, z = rng.normal(size=(P, k)), rng.normal(size=(P, B, k))
    d = mahalanobis(torch.from_numpy(z), torch.from_numpy(mu), pack_lower(torch.from_numpy(chol)), chunk=3)
    ref = np.array([[np.sqrt((z[p, b] - mu[p]) @ prec[p] @ (z[p, b] - mu[p])) for b in range(B)] for p in range(P)])
    np.testing.assert_allclose(d.numpy(), ref, rtol=1e-10)


def test_merge_equals_single_fit():
    rng = np.random.default_rng(3)
    z = torch.from_numpy(rng.normal(size=(4, 90, 6)) * 2 + 50).float()
    whole, a, b = RunningStats(4, 6), RunningStats(4, 6), RunningStats(4, 6)
    whole.update(z)
    a.update(z[:, :30])
    b.update(z[:, 30:])
    a.merge(b)
    assert a.n == whole.n
    for x, y in zip(cholesky_packed(a, 0.01), cholesky_packed(whole, 0.01)):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)


def bilinear_reference(maps, size):
    """align_corners=False bilinear resampling written out per axis, float64: the sample at output
    i reads source (i + 0.5) * low / high - 0.5, clamped at 0, between its two neighbours."""
    def axis(low, high):
        matrix = np.zeros((high, low))
        for i in range(high):
            source = max((i + 0.5) * low / high - 0.5, 0.0)
            left = int(np.floor(source))
            right, frac = min(left + 1, low - 1), source - np.floor(source)
            matrix[i, left] += 1 - frac
            matrix[i, right] += frac
        return matrix
    rows, cols = axis(maps.shape[1], size[0]), axis(maps.shape[2], size[1])
    return np.stack([rows @ m @ cols.T for m in maps])


@pytest.mark.parametrize("low,size", [((16, 16), (64, 64)), ((10, 6), (40, 24)), ((3, 4), (8, 12)), ((7, 5), (29, 17))])
def test_smoothing_matches_bilinear_then_scipy_gaussian(low, size):
    distances = np.random.default_rng(4).random((2, *low)) * 10
    ours = smooth(torch.from_numpy(distances), size, sigma=4.0).numpy()
    ref = np.stack([scipy.ndimage.gaussian_filter(m, sigma=4, truncate=4.0, mode="reflect")
                    for m in bilinear_reference(distances, size)])
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    single = smooth(torch.from_numpy(distances).float(), size, sigma=4.0).double().numpy()
    np.testing.assert_allclose(single, ref, rtol=1e-6)  # float32 maps: float64 matrices, float32 products


@pytest.mark.parametrize("name", ORIGINAL_ROWS)  # the other rows: tests/test_backbone_reference.py
def test_feature_maps_have_expected_channels_and_size(name):
    torch.manual_seed(0)
    extractor = FeatureExtractor(name, "random")
    assert strides(name) == (4, 8, 16)
    for size in [(64, 64), (88, 32), (70, 50)]:
        outputs = extractor(torch.zeros(1, 3, *size))
        assert [o.shape for o in outputs] == [(1, *shape) for shape in tap_shapes(name, size)]
        assert tuple(outputs[0].shape[-2:]) == feature_size(size, name)
        assert sum(o.shape[1] for o in outputs) == feature_dim(name)
        # two stride-2 layers that each round up (ConvNeXt's 4 x 4 stem rounds down)
        assert feature_size(size, name) == tuple(math.ceil(math.ceil(s / 2) / 2) for s in size)


def test_resnet_extractor_never_runs_layer4():
    extractor = FeatureExtractor("resnet18", "random")
    assert not any("layer4" in n or n.startswith("fc") for n, _ in extractor.named_modules())


def test_embedding_equals_projection_of_concatenated_features():
    torch.manual_seed(0)
    model = SemiOrthogonal(Config(backbone="resnet18", k=20, image_size=(64, 96)), weights="random")
    images = torch.randn(2, 3, 64, 96)
    features = model.extractor(images)
    h, w = model.feature_size
    full = torch.cat([F.interpolate(f, size=(h, w), mode="nearest") for f in features], dim=1)  # (B, F, h, w)
    ref = torch.einsum("bfhw,fk->hwbk", full.double(), model.W.double()).reshape(h * w, 2, 20)
    torch.testing.assert_close(model.embed(images).double(), ref, rtol=1e-4, atol=1e-4)


def test_fit_save_load_predict_roundtrip(tmp_path):
    torch.manual_seed(0)
    config = Config(backbone="resnet18", k=16, image_size=(48, 48), seed=5)
    model = SemiOrthogonal(config, weights="random")
    train = torch.randn(10, 3, 48, 48)
    model.fit([train[:4], train[4:]])
    model.save(tmp_path / "model.pt")
    model.finalize()
    test = torch.randn(3, 3, 48, 48)
    maps, scores = model.predict(test)
    assert maps.shape == (3, 48, 48) and torch.equal(scores, maps.flatten(1).amax(1))
    loaded = SemiOrthogonal.load(tmp_path / "model.pt")
    maps2, _ = loaded.predict(test)
    torch.testing.assert_close(maps, maps2)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert state["stats"]["n"] == 10 and state["config"]["k"] == 16
    # the random backbone is rebuilt from the seed alone
    again = SemiOrthogonal(config, weights="random")
    for a, b in zip(again.extractor.state_dict().values(), model.extractor.state_dict().values()):
        assert torch.equal(a, b)


def test_model_file_errors(tmp_path):
    with pytest.raises(UserError, match="no model file"):
        read_model_file(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="truncated"):
        read_model_file(tmp_path / "junk.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a semi-orthogonal model"):
        read_model_file(tmp_path / "other.pt")


def test_missing_weights_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        FeatureExtractor("resnet18", str(tmp_path / "nope.pth"))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="does not fit"):
        FeatureExtractor("resnet18", str(tmp_path / "bad.pth"))


def reference_taps(name: str, model, x: torch.Tensor) -> list[torch.Tensor]:
    """The three tapped modules' outputs of an unmodified torchvision model, caught by hooks."""
    outputs = []
    handles = [model.get_submodule(tap).register_forward_hook(lambda m, i, out: outputs.append(out))
               for tap in BACKBONES[name].taps]
    model(x)
    for handle in handles:
        handle.remove()
    return outputs


@pytest.mark.parametrize("name", ORIGINAL_ROWS)  # the other rows: tests/test_backbone_reference.py
def test_extractor_with_folded_batch_norm_equals_torchvision(name, tmp_path):
    import torchvision

    torch.manual_seed(1)
    reference = torchvision.models.get_model(BACKBONES[name].builder).eval()
    with torch.no_grad():  # non-trivial running statistics, so folding is really exercised
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    torch.save(reference.state_dict(), tmp_path / "weights.pth")
    extractor = FeatureExtractor(name, str(tmp_path / "weights.pth"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in extractor.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for ours, ref in zip(extractor(x), reference_taps(name, reference, x)):
            torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize("approx, k", [("ortho", 20), ("sample", 20), ("gaussian", 20), ("full", 448)])
def test_distances_equal_a_float64_reference(approx, k):
    """Project, np.cov(bias=True) per position, + eps I, invert, quadratic form, sqrt: all in numpy float64."""
    torch.manual_seed(0)
    config = Config(backbone="resnet18", k=k, approx=approx, image_size=(32, 32), seed=3)
    model = SemiOrthogonal(config, weights="random")
    train, test = torch.randn(40, 3, 32, 32), torch.randn(3, 3, 32, 32)
    model.fit(train.split(16))
    model.finalize()
    ours = model.distances(test).double().numpy()

    def features(images):  # (N, P, F) float64: the three stages, nearest-upsampled and concatenated
        with torch.no_grad():
            taps = model.extractor(images)
        h, w = model.feature_size
        full = torch.cat([F.interpolate(t, size=(h, w), mode="nearest") for t in taps], dim=1)
        return full.double().numpy().reshape(len(images), full.shape[1], h * w).transpose(0, 2, 1)

    W = model.W.double().numpy()
    z_train, z_test = features(train) @ W, features(test) @ W  # (N, P, k)
    ref = np.empty((3, z_train.shape[1]))
    for p in range(z_train.shape[1]):
        cov = np.cov(z_train[:, p].T, bias=True) + 0.01 * np.eye(k)
        diff = z_test[:, p] - z_train[:, p].mean(axis=0)
        ref[:, p] = np.sqrt(np.einsum("bi,ij,bj->b", diff, np.linalg.inv(cov), diff))
    np.testing.assert_allclose(ours.reshape(3, -1), ref, rtol=1e-4)


def test_streaming_fit_is_independent_of_batch_size():
    torch.manual_seed(0)
    config = Config(backbone="resnet18", k=16, image_size=(32, 32))
    images = torch.randn(16, 3, 32, 32)
    one, sixteen = SemiOrthogonal(config, weights="random"), SemiOrthogonal(config, weights="random")
    one.fit(images.split(1))
    sixteen.fit(images.split(16))
    assert one.stats.n == sixteen.stats.n == 16
    one.finalize()  # the shifts differ (each run's first batch mean): compare what the sums define
    sixteen.finalize()
    torch.testing.assert_close(one.mu, sixteen.mu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(one.L_packed, sixteen.L_packed, rtol=1e-4,
                               atol=1e-4 * sixteen.L_packed.abs().max().item())

