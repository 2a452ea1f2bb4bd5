"""--approx global / lowrank / lowranki / null against float64 numpy references and against full."""
import numpy as np
import pytest
import torch

from common import UserError
from models import SemiOrthogonal
from models.distance import mahalanobis
from models.gaussian import RunningStats, cholesky_packed
from models.lowrank import check_feasible, fit_eigen
from models.pooled import PooledStats, fit_pooled
from models.semi_ortho import Config

P, N, F, EPS = 6, 40, 12, 0.01


def features(seed=0, n=N):
    """(P, n, F) correlated features with per-position means and scales."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(P, F, F, generator=g, dtype=torch.float64)
    x = torch.randn(P, n, F, generator=g, dtype=torch.float64) @ mix + 3 * torch.randn(P, 1, F, generator=g)
    return x.float()


def numpy_covariances(x):
    x = x.double().numpy()
    mu = x.mean(axis=1)
    d = x - mu[:, None]
    return mu, np.einsum("pnf,png->pfg", d, d) / x.shape[1]


def reference_eigen(x, z, k, indices_desc):
    """Distances of z (P, B, F) with the precision U_k S_k^-1 U_k^T from eigenpairs `indices_desc`."""
    mu, cov = numpy_covariances(x)
    z = z.double().numpy()
    out = np.zeros(z.shape[:2])
    for p in range(P):
        values, vectors = np.linalg.eigh(cov[p] + EPS * np.eye(F))
        order = np.argsort(values)[::-1]
        values, vectors = values[order][indices_desc], vectors[:, order][:, indices_desc]
        precision = vectors @ np.diag(1 / values) @ vectors.T
        d = z[p] - mu[p]
        out[p] = np.sqrt(np.einsum("bf,fg,bg->b", d, precision, d))
    return out


def running(x, cls=RunningStats, halves=False):
    stats = cls(P, F)
    if halves:  # two updates: the first one's shift stays, so the second exercises the centring
        stats.update(x[:, : N // 2])
        stats.update(x[:, N // 2:])
    else:
        stats.update(x)
    return stats


@pytest.mark.parametrize("approx", ["lowrank", "null", "lowranki"])
def test_every_eigen_variant_with_k_equal_F_is_the_full_distance(approx):
    x, z = features(0), features(1, n=5)
    stats = running(x)
    mu, chol = cholesky_packed(stats, EPS)
    full = mahalanobis(z, mu, chol)
    ours = fit_eigen(stats, EPS, False, approx, F, (F, F)).distance(z)
    torch.testing.assert_close(ours, full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("approx,k,size,indices", [
    ("lowrank", 4, (3, 3), [0, 1, 2, 3]),
    ("null", 3, (3, 3), [9, 10, 11]),
    ("lowranki", 3, (7, 9), [4, 5, 6]),  # k' = max(min(7, 9), 3) = 7: indices 4..6
    ("lowranki", 5, (2, 9), [0, 1, 2, 3, 4]),  # k' = max(2, 5) = 5
])
def test_eigen_variants_equal_a_float64_reference(approx, k, size, indices):
    x, z = features(2), features(3, n=4)
    ours = fit_eigen(running(x, halves=True), EPS, False, approx, k, size).distance(z)
    np.testing.assert_allclose(ours.numpy(), reference_eigen(x, z, k, indices), rtol=2e-4)


def test_global_equals_a_float64_reference_and_merges_exactly():
    x, z = features(4), features(5, n=3)
    mu, cov = numpy_covariances(x)
    pooled = cov.mean(axis=0) + EPS * np.eye(F)  # the mean of the per-position covariances
    precision = np.linalg.inv(pooled)
    d = z.double().numpy() - mu[:, None]
    expected = np.sqrt(np.einsum("pbf,fg,pbg->pb", d, precision, d))
    ours = fit_pooled(running(x, PooledStats, halves=True), EPS).distance(z)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=2e-4)
    # two disjoint halves fitted apart and merged (reshift) give the same model
    a, b = PooledStats(P, F), PooledStats(P, F)
    a.update(x[:, :15])
    b.update(x[:, 15:] + 0)
    a.merge(b)
    np.testing.assert_allclose(fit_pooled(a, EPS).distance(z).numpy(), expected, rtol=2e-4)


@pytest.mark.parametrize("approx", ["global", "lowrank", "null"])
def test_models_fit_save_load_and_score(approx, tmp_path):
    """The model with the identity W: global/lowrank k = F equal full; a reloaded model scores the same."""
    torch.manual_seed(0)
    images, test = torch.randn(6, 3, 32, 32), torch.randn(2, 3, 32, 32)
    base = dict(backbone="resnet18", image_size=(32, 32), layers=(1,), eps=0.1)
    model = SemiOrthogonal(Config(approx=approx, k=64, **base), weights="random")
    model.fit([images[:3], images[3:]])
    model.save(tmp_path / "m.pt")
    model.finalize()
    ours = model.distances(test)
    loaded = SemiOrthogonal.load(tmp_path / "m.pt")
    torch.testing.assert_close(loaded.distances(test), ours)
    if approx != "global":
        full = SemiOrthogonal(Config(approx="full", k=64, **base), weights="random")
        full.fit([images])
        full.finalize()
        torch.testing.assert_close(ours, full.distances(test), rtol=1e-3, atol=1e-3)


def test_full_covariance_is_refused_for_wrn50_with_its_size():
    sums = 4096 * 1792 * 1793 / 2 * 4  # packed float32 sums; full adds a packed factor, lowrank 300 eigenvectors
    with pytest.raises(UserError, match=f"{(sums + 4096 * 1792 * 300 * 4) / 1e9:.1f} GB"):  # 35.1
        check_feasible("lowrank", 1792, 300, (64, 64))
    with pytest.raises(UserError, match=f"{2 * sums / 1e9:.1f} GB"):  # 52.7
        check_feasible("full", 1792, 1792, (64, 64))
    check_feasible("global", 1792, 1792, (64, 64))  # pooled sums: 1792 x 1792 once
    check_feasible("lowrank", 448, 100, (64, 64))
    with pytest.raises(UserError, match="lowranki"):
        check_feasible("lowranki", 16, 8, (64, 64))


def test_merge_stats_merges_global_fits(tmp_path):
    from tools.merge_stats import merge

    torch.manual_seed(1)
    images, test = torch.randn(6, 3, 32, 32), torch.randn(2, 3, 32, 32)
    config = Config(backbone="resnet18", approx="global", k=64, image_size=(32, 32), layers=(1,), eps=0.1)
    for name, part in (("a", images[:2]), ("b", images[2:])):
        model = SemiOrthogonal(config, weights="random")
        model.fit([part])
        model.save(tmp_path / f"{name}.pt")
    torch.save(merge([tmp_path / "a.pt", tmp_path / "b.pt"]), tmp_path / "merged.pt")
    whole = SemiOrthogonal(config, weights="random")
    whole.fit([images])
    whole.finalize()
    merged = SemiOrthogonal.load(tmp_path / "merged.pt")
    torch.testing.assert_close(merged.distances(test), whole.distances(test), rtol=1e-4, atol=1e-4)
