"""Each default is written once, in its options dataclass, and the command line, the data options and the
Python API read it there; models/ name settings and the command line words them as flags."""
import inspect
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import torch

import api
import train
from common import SettingError, UserError, flag_of, flags_named
from datasets.folder import FolderOptions
from datasets.kolektor import KolektorOptions
from datasets.options import DataOptions
from datasets.stc import StcOptions
from models import Config, default_k
from models.backbone import check_layers
from models.config import Approx, Protocol
from pipeline.label import label_settings
from pipeline.options import DEFAULTS, RunOptions
from tests.helpers.data import write_category

REPO = Path(__file__).resolve().parents[1]


def test_the_seed_literal_is_written_once_outside_the_tests():
    """As a number in code (docs may quote the authors' seed): models/config.py's default, nowhere else."""
    found = []
    for path in sorted(REPO.rglob("*.py")):
        if "tests" in path.relative_to(REPO).parts:
            continue
        with open(path, "rb") as f:
            found += [f"{path.relative_to(REPO)}: {token.line.strip()}" for token in tokenize.tokenize(f.readline)
                      if token.type == tokenize.NUMBER and token.string == "1111"]
    assert found == ["models/config.py: seed: int = 1111"]


def test_every_layer_reads_the_same_defaults():
    assert Config.k == default_k(Config.backbone)  # Config's k is its backbone's row's
    assert DEFAULTS.backbone == Config.backbone and DEFAULTS.seed == Config.seed == DataOptions.seed
    assert DEFAULTS.approx == Config.approx == Approx.ORTHO and DataOptions.protocol == Config.protocol
    assert StcOptions.seed == KolektorOptions.seed == FolderOptions.seed == Config.seed
    fit = inspect.signature(api.fit).parameters
    assert (fit["backbone"].default, fit["seed"].default, fit["val_fpr"].default) == (
        DEFAULTS.backbone, Config.seed, DEFAULTS.val_fpr)


def test_flags_left_out_take_the_dataclasses_defaults():
    args = train.parse_args(["--dataset", "synthetic", "--weights", "random"])
    for name in ("approx", "seed", "layers", "pre_relu", "backbone_dtype", "val_fpr", "fpr", "nsamples",
                 "metric", "label", "weights"):
        expected = "random" if name == "weights" else getattr(DEFAULTS, name)
        assert getattr(args, name) == expected, name
    assert args.model == DEFAULTS.backbone and args.k == default_k(DEFAULTS.backbone)
    data = train.data_options(args)
    assert (data.seed, data.protocol) == (Config.seed, Protocol.STANDARD)
    folder = train.data_options(train.parse_args(["--dataset", "folder", "--normal-dir", "x", "--weights", "random"]))
    assert folder.normal_test_ratio == FolderOptions.normal_test_ratio
    kolektor = train.data_options(train.parse_args(["--dataset", "kolektor", "--dataroot", "/k", "--weights",
                                                    "random"]))
    assert kolektor.scale == KolektorOptions.scale
    stc = train.data_options(train.parse_args(["--dataset", "mstc", "--dataroot", "/s", "--train-frames", "7"]))
    assert (stc.train_frames, stc.startidx) == (7, StcOptions.startidx)


def test_seed_zero_is_zero(tmp_path):
    """--seed 0 once reseeded torch with the default (a `seed or 1111`)."""
    write_category(tmp_path / "data", "toy", seed=0)
    args = train.parse_args(["--dataroot", str(tmp_path / "data"), "--category", "toy", "--weights", "random",
                             "--model", "resnet18", "--k", "10", "--image-size", "64", "--seed", "0",
                             "--workers", "0", "--experiment", str(tmp_path / "exp")])
    options, *_ = train.planned_run(args)
    assert options.seed == 0 and torch.initial_seed() == 0


def test_label_settings_return_values_and_change_nothing(capsys):
    given = (None, None)
    settings = label_settings("ablation_preReLU_128", "resnet18", *given)
    assert (settings.layers, settings.pre_relu) == ((2,), True) and given == (None, None)
    assert settings.said == "--label ablation_preReLU_128: the authors' convention sets --layers 2 --pre-relu"
    assert capsys.readouterr().out == ""
    assert label_settings("run_128", "wide_resnet50_2", None, None).said is None  # ResNet-18's convention only
    with pytest.raises(UserError, match="means --layers 3"):
        label_settings("run_256", "resnet18", (1,), None)


def test_models_name_settings_and_the_command_line_names_flags():
    with pytest.raises(SettingError) as e:
        check_layers("resnet18", (4,))
    assert str(e.value) == "layers 4: choose a non-empty subset of 1,2,3"
    assert e.value.worded(flag_of) == "--layers 4: choose a non-empty subset of 1,2,3"
    with pytest.raises(UserError, match="^--pre-relu taps ResNet stages"), flags_named():
        check_layers("mobilenetv3_small", (1, 2, 3), pre_relu=True)
    assert flag_of("backbone") == "--model" and flag_of("image_size") == "--image-size"
    assert SettingError("$HOME/x under $approx").worded(flag_of) == "$HOME/x under --approx"  # only lowercase names
    with pytest.raises(UserError, match="^layers 4"):
        api.fit([REPO / "x.png"], backbone="resnet18", layers=(4,), weights="random")


def test_run_cli_prints_a_setting_as_its_flag(tmp_path):
    code = ("from common import SettingError, run_cli\n"
            "def main():\n    raise SettingError('$eps 0 is too small; use a larger $eps')\nrun_cli(main)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr == "error: --eps 0 is too small; use a larger --eps\n"


def test_enums_are_their_strings_and_files_hold_plain_values():
    config = Config(backbone="resnet18", k=10, approx="sample", protocol="paper")
    assert config.approx is Approx.SAMPLE and config.approx == "sample" and f"{config.approx}" == "sample"
    stored = config.stored()
    assert type(stored["approx"]) is str and type(stored["protocol"]) is str and stored["layers"] == [1, 2, 3]
    assert Config(**{**stored, "layers": tuple(stored["layers"]), "image_size": tuple(stored["image_size"])}) == config
    assert RunOptions(dataset="mvtecad", report=Path("r.csv"), approx="full").approx is Approx.FULL
    with pytest.raises(ValueError):
        Config(approx="nosuch")
