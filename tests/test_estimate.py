"""The memory estimate's parts against the tensors they predict, and the budget's refusal before decoding."""
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import train
from common import UserError
from models import Config, SemiOrthogonal
from models.footprint import _aliases, activation_bytes, model_file_bytes, state_bytes, tapped_weight_bytes
from pipeline.budget import default_budget, parse_bytes
from pipeline.estimate import check_device, estimate, pass_estimate
from tests.helpers.data import write_category

FAST = ["--weights", "random", "--model", "resnet18", "--k", "10", "--image-size", "64", "--workers", "0",
        "--quiet"]


def nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("approx", ["ortho", "full"])
def test_state_bytes_are_the_fitted_tensors(approx, tmp_path):
    config = Config(backbone="resnet18", k=10 if approx == "ortho" else 448, approx=approx, image_size=(64, 48))
    model = SemiOrthogonal(config, weights="random")
    model.fit([torch.randn(3, 3, 64, 48)])
    model.finalize()
    predicted = state_bytes(config)
    stats = model.stats
    assert predicted["sums"] == nbytes(stats.shift, stats.sum_z, stats.sum_zz)
    assert predicted["factor"] == nbytes(model.L_packed) and predicted["mu"] == nbytes(model.mu)
    assert predicted["W"] == nbytes(model.W)
    assert state_bytes(config, "cuda")["factor"] == nbytes(model.W.new_empty(model.positions, model.W.shape[1],
                                                                              model.W.shape[1]))
    model.save(tmp_path / "m.pt")  # random weights: the tapped backbone is stored
    size = (tmp_path / "m.pt").stat().st_size
    assert abs(size - model_file_bytes(config, backbone_stored=True)) < 0.02 * size + 200_000
    assert model_file_bytes(config, False) == model_file_bytes(config, True) - tapped_weight_bytes("resnet18")


class Chain(nn.Module):
    """x -> conv (8 ch) -> in-place ReLU -> conv (4 ch) -> (conv1 out, conv2 out): by hand, the input lives
    until conv1 has run, conv1's output (aliased by the ReLU) to the end, conv2's output to the end."""

    def __init__(self):
        super().__init__()
        self.a, self.relu, self.b = nn.Conv2d(3, 8, 1), nn.ReLU(inplace=True), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.relu(self.a(x))
        return y, self.b(y)


def test_liveness_counts_each_tensor_from_its_step_to_its_last_reader(monkeypatch):
    graph = torch.fx.symbolic_trace(Chain()).to("meta")
    monkeypatch.setattr("models.footprint._meta_graph", lambda name: graph)
    activation_bytes.cache_clear()
    try:
        pixels = 2 * 10 * 10
        by_hand = max(3 * pixels + 8 * pixels, 8 * pixels + 4 * pixels) * 4
        assert activation_bytes("chain", (10, 10), 2) == by_hand
    finally:
        activation_bytes.cache_clear()
    relu = next(n for n in graph.graph.nodes if n.target == "relu")
    assert _aliases(relu, dict(graph.named_modules()))


def test_activations_grow_with_the_batch_and_hold_the_taps():
    one, four = activation_bytes("resnet18", (64, 64), 1), activation_bytes("resnet18", (64, 64), 4)
    assert four == 4 * one
    taps = (64 * 16 * 16 + 128 * 8 * 8 + 256 * 4 * 4) * 4
    assert one >= taps + 3 * 64 * 64 * 4  # the three taps live to the end; the input until the stem has run


def test_the_estimate_adds_its_phases_to_what_the_process_holds():
    config = Config(backbone="resnet18", k=10, image_size=(64, 64))
    e = estimate(config, n_val=2, n_test=5, batch_size=4, workers=0, device=torch.device("cpu"),
                 backbone_stored=True, baseline=10**9)
    phase = next(v for name, v in e.parts.items() if name.startswith("phase"))
    assert e.peak_rss_bytes == 10**9 + e.parts["runtime"] + e.parts["weights"] + phase
    bigger = estimate(Config(backbone="resnet18", k=10, image_size=(128, 128)), 2, 5, 4, 0, torch.device("cpu"),
                      True, 10**9)
    assert bigger.peak_rss_bytes > e.peak_rss_bytes and bigger.parts["sums"] == 4 * e.parts["sums"]


@pytest.mark.parametrize("text, value", [("8G", 8 << 30), ("512M", 512 << 20), ("1.5T", int(1.5 * (1 << 40))),
                                         ("123456", 123456), ("2GiB", 2 << 30), ("64k", 64 << 10)])
def test_sizes_parse(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "x", "-1G", "0", "8Q"])
def test_bad_sizes_name_the_flag(text):
    with pytest.raises(UserError, match="--max-memory"):
        parse_bytes(text)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mvtec")
    write_category(root, "toy", seed=0)
    return root


def test_an_over_budget_run_is_refused_before_decoding(root, tmp_path, monkeypatch):
    decoded = []
    monkeypatch.setattr("datasets.base.read_image", lambda *a, **k: decoded.append(a) or 1 / 0)
    exp = tmp_path / "exp"
    with pytest.raises(UserError, match=r"toy needs about [0-9.]+ GiB \(even in blocks of one feature-map row\) "
                                        r"\(held now .*\), more than --max-memory 100 MiB; use a smaller "
                                        r"--image-size, --k or --batch-size"):
        train.main(["--dataroot", str(root), "--category", "toy", "--experiment", str(exp), "--max-memory", "100M",
                    *FAST])
    assert decoded == [] and not exp.exists()


def test_metrics_json_holds_the_estimate_and_verbose_prints_it(root, tmp_path, capsys):
    exp = tmp_path / "exp"
    assert train.main(["--dataroot", str(root), "--category", "toy", "--experiment", str(exp), "--verbose",
                       *FAST]) == 0
    out = capsys.readouterr().out
    assert "toy: estimate peak " in out and "model.pt " in out and "budget " in out
    summary = json.loads(next(exp.rglob("metrics.json")).read_text())
    assert set(summary["estimate"]) == {"peak_rss_bytes", "model_file_bytes"}
    model_size = next(exp.rglob("model.pt")).stat().st_size
    assert abs(summary["estimate"]["model_file_bytes"] - model_size) < 0.02 * model_size + 200_000


def test_the_default_budget_is_shared_by_the_processes_of_one_machine(monkeypatch):
    monkeypatch.setattr("pipeline.budget._meminfo", lambda key: 9 << 30)
    monkeypatch.setattr("pipeline.budget._cgroup_room", lambda: None)
    monkeypatch.setattr("pipeline.budget.resident_bytes", lambda: 1 << 30)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_budget() == (1 << 30) + (8 << 30)  # what it holds, the available memory less 1 GiB
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_budget() == (1 << 30) + (4 << 30)
    monkeypatch.setattr("pipeline.budget._cgroup_room", lambda: 3 << 30)  # a container's tighter limit
    assert default_budget() == (1 << 30) + (1 << 30)


def test_a_gpu_without_room_is_refused_in_one_line(monkeypatch):
    """The device's share (state, activations) against what the GPU has free; no GPU is needed to check it."""
    config = Config(backbone="resnet18", k=100, image_size=(512, 512))
    e = estimate(config, 6, 30, 32, 0, torch.device("cuda"), True, 10**9)
    state = state_bytes(config, "cuda")
    assert e.device_bytes >= state["sums"] + state["factor"] and e.parts["factor"] == state["factor"]
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (e.device_bytes - 1, 80 << 30))
    with pytest.raises(UserError, match=r"^x needs about .* of cuda memory .* free; use a smaller --image-size.*"
                                        r"--device cpu$"):
        check_device({"x": e}, torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (e.device_bytes, 80 << 30))
    check_device({"x": e}, torch.device("cuda"))


def test_ci_statistics_count_in_the_metrics_phase():
    """--ci keeps per-image histograms and protocol rates beside the metrics: a run with 1000 test images is
    predicted that much larger."""
    from pathlib import Path as P

    from pipeline.intervals import resampling_bytes
    from pipeline.options import RunOptions

    config = Config(backbone="resnet18", k=100, image_size=(256, 256))
    options = RunOptions(dataset="synthetic", report=P("r.csv"), ci=95.0, bootstrap=1000)
    extra = resampling_bytes(options, 1000)
    assert extra == resampling_bytes(RunOptions(dataset="synthetic", report=P("r.csv"), ci=90.0), 1000) > 100 << 20
    assert resampling_bytes(RunOptions(dataset="synthetic", report=P("r.csv")), 1000) == 0
    plain = pass_estimate([config], 10, 1000, 8, 0, torch.device("cpu"), True, 0)
    with_ci = pass_estimate([config], 10, 1000, 8, 0, torch.device("cpu"), True, 0, resampling=extra)
    assert "phase metrics" in plain.parts and with_ci.peak_rss_bytes - plain.peak_rss_bytes == extra
