"""Model files at the edges: damaged files, merges of other setups or of the same images, --resume of
another category's model or of images already fitted, a full or read-only disk for merge_stats."""
import json
import signal
import subprocess
from dataclasses import fields
from pathlib import Path

import merge_stats
import numpy as np
import pytest
import torch

import train
from common import UserError, run_cli
from models import Config, SemiOrthogonal, read_model_file
from tests.helpers.data import write_category
from tests.helpers.layouts import save_image, surface

CONFIG = Config(backbone="resnet18", k=10, image_size=(32, 32))
FAST = ["--weights", "random", "--model", "resnet18", "--workers", "0", "--k", "10", "--image-size", "64",
        "--batch-size", "4"]


def fitted(path: Path, config: Config = CONFIG, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = SemiOrthogonal(config, weights="random")
    model.fit([torch.randn(4, 3, *config.image_size)])
    model.save(path)
    return path


def one_line_error(call, *match: str) -> str:
    with pytest.raises(UserError) as error:
        call()
    text = str(error.value)
    assert "\n" not in text and all(m in text for m in match), text
    return text


# ------------------------------------------------------------------------------------------ item 18

@pytest.mark.parametrize("damage, says", [
    (lambda s: s.update(W=s["W"][:, :5]), "W has shape (448, 5)"),
    (lambda s: s["stats"].update(sum_z=s["stats"]["sum_z"][:3]), "stats sum_z has shape (3, 10)"),
    (lambda s: s["stats"].update(sum_zz_packed=s["stats"]["sum_zz_packed"].int()), "not floating point"),
    (lambda s: s["config"].update(k=12), "W has shape (448, 10)"),  # k and W disagree
    (lambda s: s["config"].update(k=1000), "k 1000 > F = 448"),
    (lambda s: s["config"].update(backbone="resnet99"), "backbone 'resnet99'"),
    (lambda s: s["config"].update(image_size="big"), "config does not read"),
    (lambda s: s["config"].update(colour_space="lab"), "newer release (unknown field colour_space); update"),
    (lambda s: s.update(fitted=torch.zeros(3)), "fitted is not"),
])
def test_a_damaged_model_file_is_one_line_naming_it(tmp_path, damage, says):
    state = torch.load(fitted(tmp_path / "model.pt"), weights_only=True)
    damage(state)
    torch.save(state, tmp_path / "damaged.pt")
    one_line_error(lambda: SemiOrthogonal.load(tmp_path / "damaged.pt"), "damaged.pt", says)


def test_missing_or_misshapen_backbone_tensors_are_one_line(tmp_path):
    state = torch.load(fitted(tmp_path / "model.pt"), weights_only=True)
    key = sorted(state["backbone"])[3]
    state["backbone"][key] = state["backbone"][key][:1]
    torch.save(state, tmp_path / "shape.pt")
    one_line_error(lambda: SemiOrthogonal.load(tmp_path / "shape.pt"), "shape.pt", f"'{key}' has shape")
    del state["backbone"][key]
    torch.save(state, tmp_path / "missing.pt")
    one_line_error(lambda: SemiOrthogonal.load(tmp_path / "missing.pt"), "missing.pt", f"no backbone tensor '{key}'")


# ------------------------------------------------------------------------------------------- item 9

def test_merge_refuses_fits_of_any_other_setting(tmp_path):
    """Every Config field must match: pre_relu (forgotten before), sigma, layers, ..."""
    assert set(merge_stats.MUST_MATCH) | set(merge_stats.MAY_DIFFER) == {f.name for f in fields(Config)}
    a = fitted(tmp_path / "a.pt")
    for field, value in (("pre_relu", True), ("sigma", 2.0), ("layers", (1, 2))):
        other = fitted(tmp_path / f"{field}.pt", Config(**{**vars(CONFIG), field: value}), seed=1)
        one_line_error(lambda other=other: merge_stats.merge([a, other]), f"{field}.pt was fitted with {field}")


# ------------------------------------------------------------------------------------------ item 10

@pytest.fixture(scope="module")
def first_fit(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    write_category(root, "toy", seed=0, n_train=10)
    write_category(root, "other", seed=1, n_train=10)
    experiment = root.parent / f"{root.name}-e1"
    assert train.main([*FAST, "--dataroot", str(root), "--category", "toy", "--experiment", str(experiment)]) == 0
    return root, experiment / "mvtecad" / "toy" / "model.pt"


def test_resume_refuses_another_category_the_same_images_and_other_weights(first_fit, tmp_path):
    root, model = first_fit
    assert len(read_model_file(model)["fitted"]) == int(read_model_file(model)["stats"]["n"]) == 9
    resume = ["--resume", str(model), "--weights", "random", "--workers", "0", "--dataroot", str(root)]
    one_line_error(lambda: train.main([*resume, "--category", "other", "--experiment", str(tmp_path / "a")]),
                   "is a model of mvtecad category toy, not other")
    one_line_error(lambda: train.main([*resume, "--category", "toy", "--experiment", str(tmp_path / "b")]),
                   "already holds 9 of these 9 training images", "count twice")
    one_line_error(lambda: train.main(["--resume", str(model), "--weights", "imagenet", "--dataroot", str(root),
                                       "--category", "toy", "--experiment", str(tmp_path / "c")]),
                   "weights random", "drop --weights")


def test_resume_with_new_images_in_a_folder_keeps_what_the_model_is_of(first_fit, tmp_path, capsys):
    """The README's example: new images in a plain folder, --dataset folder, the model's category."""
    _, model = first_fit
    rng = np.random.default_rng(7)
    for i in range(10):
        save_image(surface(rng), tmp_path / "more" / f"{i}.png")
    assert train.main(["--resume", str(model), "--dataset", "folder", "--normal-dir", str(tmp_path / "more"),
                       "--category", "toy", "--workers", "0", "--experiment", str(tmp_path / "e")]) == 0
    folder = tmp_path / "e" / "folder" / "toy"
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["weights"] == "random"  # was "imagenet": the flag's default, not the backbone used
    state = read_model_file(folder / "model.pt")
    assert state["meta"] == {"dataset": "mvtecad", "category": "toy", "weights": "random"}  # not relabelled
    n = int(state["stats"]["n"])
    assert n == 9 + 8 and len(state["fitted"]) == n  # 2 of the 10 held out: they calibrate
    assert set(read_model_file(model)["fitted"].tolist()) < set(state["fitted"].tolist())
    # a merge of the resumed model with the first fit would count the first fit's images twice
    one_line_error(lambda: merge_stats.merge([model, folder / "model.pt"]), "both fitted 9 of the same image files")
    # a file without the record (older versions) merges, with a warning that it cannot be checked
    old = torch.load(model, weights_only=True)
    del old["fitted"]
    torch.save(old, tmp_path / "old.pt")
    capsys.readouterr()
    merge_stats.merge([tmp_path / "old.pt", folder / "model.pt"])  # 9 images twice: what it cannot see
    assert "old.pt record(s) not all of their fitted image files" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- 16/17

@pytest.fixture
def small_mount(tmp_path):
    """A 3 MB tmpfs, and a read-only one; skipped where mounting is not allowed."""
    full, read_only = tmp_path / "full", tmp_path / "ro"
    full.mkdir()
    read_only.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(full)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root): full-disk case untested")
    (full / "earlier.pt").write_bytes(b"earlier result")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(read_only)],
                      capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(full)])
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    yield full, read_only
    subprocess.run(["umount", "-l", str(full)])
    subprocess.run(["umount", "-l", str(read_only)])


def cli(main, argv: list[str], capsys) -> tuple[int, str]:
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as exit_code:
            run_cli(lambda: main(argv))
    finally:
        signal.signal(signal.SIGTERM, handler)
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning: ")]
    return exit_code.value.code, "".join(line + "\n" for line in errors)


def test_merge_on_a_full_or_read_only_disk_is_one_line_and_keeps_the_earlier_file(small_mount, tmp_path, capsys):
    full, read_only = small_mount
    a = fitted(tmp_path / "a.pt")
    b = fitted(tmp_path / "b.pt", seed=1)
    code, err = cli(merge_stats.main, [str(a), str(b), "-o", str(full / "earlier.pt"), "--overwrite"], capsys)
    assert code == 2 and err.count("\n") == 1 and str(full) in err and "no space left" in err, err
    assert [p.name for p in full.iterdir()] == ["earlier.pt"]  # no temporary file left
    assert (full / "earlier.pt").read_bytes() == b"earlier result"
    code, err = cli(merge_stats.main, [str(a), str(b), "-o", str(read_only / "m.pt")], capsys)
    assert code == 2 and err.count("\n") == 1 and str(read_only) in err and "read-only" in err, err
