"""Model file format 2 (packed sums, written once), format 1 still read, and --no-save-model."""
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from common import UserError
from models import Config, RunningStats, SemiOrthogonal, read_model_file
from models.gaussian import pack_lower, unpack_lower
from tests.helpers.data import write_category

CONFIG = Config(backbone="resnet18", k=10, image_size=(32, 32), seed=7)


def fitted(seed: int = 0) -> tuple[SemiOrthogonal, torch.Tensor]:
    torch.manual_seed(seed)
    model = SemiOrthogonal(CONFIG, weights="random")
    model.fit(torch.randn(12, 3, 32, 32).split(5))
    return model, torch.randn(3, 3, 32, 32)


def write_version_1(model: SemiOrthogonal, path: Path) -> None:
    """A model file exactly as the format-1 code wrote it: full k x k sums, version 1."""
    stats = model.stats
    full = unpack_lower(stats.sum_zz, stats.sum_z.shape[1])
    torch.save({"format": "semiortho-model", "version": 1,
                "config": model.config.stored(),  # plain lists and strings, as format 1 held them
                "W": model.W, "stats": {"n": torch.tensor(stats.n), "shift": stats.shift, "sum_z": stats.sum_z,
                                        "sum_zz": full},
                "thresholds": {"pixel": 1.5}, "meta": {}, "backbone": model.extractor.state_dict()}, path)


def test_pack_matches_numpy_lower_triangle_and_round_trips():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 7, 7))
    sym = a + a.transpose(0, 2, 1)
    rows, cols = np.tril_indices(7)
    packed = pack_lower(torch.from_numpy(sym))
    assert packed.shape == (5, 28)
    np.testing.assert_array_equal(packed.numpy(), sym[:, rows, cols])
    assert torch.equal(unpack_lower(packed, 7), torch.from_numpy(sym))


def test_packed_round_trip_is_half_size_and_scores_the_same(tmp_path):
    model, test = fitted()
    model.thresholds = {"pixel": 2.0}
    model.save(tmp_path / "v2.pt")
    write_version_1(model, tmp_path / "v1.pt")
    state = torch.load(tmp_path / "v2.pt", weights_only=True)
    k, positions = CONFIG.k, model.positions
    assert state["version"] == 2 and "sum_zz" not in state["stats"]
    assert state["stats"]["sum_zz_packed"].shape == (positions, k * (k + 1) // 2)
    loaded = SemiOrthogonal.load(tmp_path / "v2.pt", finalize=False)
    assert torch.equal(loaded.stats.sum_zz, model.stats.sum_zz)  # packed in memory as in the file: bit for bit
    assert loaded.thresholds == {"pixel": 2.0} and loaded.stats.n == 12
    loaded.finalize()
    model.finalize()
    torch.testing.assert_close(loaded.distances(test), model.distances(test), rtol=1e-6, atol=1e-6)
    sums_v1, sums_v2 = positions * k * k * 4, positions * k * (k + 1) // 2 * 4
    v1, v2 = (tmp_path / "v1.pt").stat().st_size, (tmp_path / "v2.pt").stat().st_size
    assert abs((v1 - v2) - (sums_v1 - sums_v2)) < 2048  # what packing saves, up to the zip records' padding


def test_format_1_files_still_load(tmp_path):
    model, test = fitted(1)
    write_version_1(model, tmp_path / "v1.pt")
    loaded = SemiOrthogonal.load(tmp_path / "v1.pt")
    assert loaded.thresholds == {"pixel": 1.5}
    model.finalize()
    torch.testing.assert_close(loaded.distances(test), model.distances(test), rtol=1e-6, atol=1e-6)
    state = read_model_file(tmp_path / "v1.pt")
    state["version"] = 4
    torch.save(state, tmp_path / "v4.pt")
    with pytest.raises(UserError, match="version 4, this code reads 1, 2, 3"):
        read_model_file(tmp_path / "v4.pt")
    del state["stats"]["sum_zz"]
    state["version"] = 1
    torch.save(state, tmp_path / "damaged.pt")
    with pytest.raises(UserError, match="'sum_zz'"):
        read_model_file(tmp_path / "damaged.pt")


def test_saving_after_finalize_or_while_scoring_writes_the_sums_as_fitted(tmp_path):
    """finalize() leaves the packed sums as they were: the file written before it, after it, and from a
    thread while the model scores are the same, and the sums of a format-1 file come back packed."""
    model, test = fitted(2)
    model.save(tmp_path / "before.pt")
    model.finalize()
    scorer = threading.Thread(target=lambda: [model.distances(test) for _ in range(3)])
    scorer.start()
    model.save(tmp_path / "after.pt")
    scorer.join()
    a, b = (torch.load(tmp_path / name, weights_only=True)["stats"] for name in ("before.pt", "after.pt"))
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    write_version_1(model, tmp_path / "v1.pt")
    assert torch.equal(SemiOrthogonal.load(tmp_path / "v1.pt", finalize=False).stats.sum_zz, model.stats.sum_zz)
    torch.testing.assert_close(SemiOrthogonal.load(tmp_path / "after.pt").distances(test), model.distances(test))


def test_packed_sums_are_the_float64_sums_of_the_centred_embeddings():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(6, 41, 9)) * 3 + 20
    stats = RunningStats(6, 9)
    for start in range(0, 41, 13):  # uneven batches; positions cross the update's chunks of 4
        stats.update(torch.from_numpy(z[:, start:start + 13]).float(), chunk=4)
    centred = z.astype(np.float32).astype(np.float64) - stats.shift.double().numpy()[:, None]
    ref = np.einsum("pni,pnj->pij", centred, centred)
    rows, cols = np.tril_indices(9)
    np.testing.assert_allclose(stats.sum_zz.double().numpy(), ref[:, rows, cols], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(stats.sum_z.double().numpy(), centred.sum(axis=1), rtol=1e-5, atol=1e-4)
    other = torch.from_numpy(rng.normal(size=(6, 9))).float()
    stats.reshift(other)  # the same sums around another shift, float64 inside
    moved = z.astype(np.float32).astype(np.float64) - other.double().numpy()[:, None]
    np.testing.assert_allclose(unpack_lower(stats.sum_zz, 9).double().numpy(),
                               np.einsum("pni,pnj->pij", moved, moved), rtol=1e-5)


def test_no_save_model_still_writes_scores_metrics_and_report(tmp_path):
    root = tmp_path / "data"
    write_category(root, "toy", seed=0)
    fast = ["--weights", "random", "--model", "resnet18", "--workers", "0", "--k", "10", "--image-size", "64",
            "--batch-size", "4", "--dataroot", str(root), "--category", "toy"]
    assert train.main([*fast, "--experiment", str(tmp_path / "a"), "--no-save-model"]) == 0
    assert train.main([*fast, "--experiment", str(tmp_path / "b")]) == 0
    without, with_model = (tmp_path / name / "mvtecad" / "toy" for name in ("a", "b"))
    assert sorted(p.name for p in without.iterdir()) == ["metrics.json", "scores.npz"]
    assert sorted(p.name for p in with_model.iterdir()) == ["metrics.json", "model.pt", "scores.npz"]
    assert (tmp_path / "a" / "results.csv").read_text().count("\n") == 2
    assert json.loads((without / "metrics.json").read_text())["metrics"] == \
        json.loads((with_model / "metrics.json").read_text())["metrics"]
    state = read_model_file(with_model / "model.pt")  # written once, with its thresholds
    assert state["version"] == 2 and state["thresholds"]
