"""Each dataset is one module that declares itself (datasets/spec.py): the registry, train.py's flags, the
splits, the tables and script/run.sh ask it, so a new layout is one new module."""
import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import datasets
import train
from common import UserError
from datasets.transforms import check_protocol, covered_box, default_protocol, paper_datasets
from tests.helpers.data import write_mvtec

REPO = Path(__file__).resolve().parents[1]
FAST = ["--weights", "random", "--model", "resnet18", "--k", "10", "--image-size", "64", "--batch-size", "4",
        "--workers", "0", "--device", "cpu", "--quiet"]

# A layout of its own, declared in one module: MVTec AD's folders, masks named <stem><--toy-suffix>.png.
TOY = '''
    import argparse
    from dataclasses import dataclass
    from pathlib import Path

    from common import UserError
    from datasets.options import DataOptions
    from datasets.readers import list_images
    from datasets.samples import Sample, Splits
    from datasets.spec import DatasetSpec


    @dataclass(frozen=True)
    class ToyOptions(DataOptions):
        suffix: str = "_mask"


    def add_flags(group: argparse._ArgumentGroup) -> None:
        group.add_argument("--toy-suffix", default="_mask", help="toyset: the masks' name suffix")


    def options_from_args(args: argparse.Namespace, common: DataOptions) -> ToyOptions:
        return ToyOptions(**vars(common), suffix=args.toy_suffix)


    def categories(root: Path, options: ToyOptions) -> list[str]:
        return sorted(p.name for p in Path(root).iterdir() if (p / "train" / "good").is_dir())


    def load(root: Path, category: str, options: ToyOptions) -> Splits:
        folder = Path(root) / category
        test = [Sample(p) for p in list_images(folder / "test" / "good")]
        for image in list_images(folder / "test" / "hole"):
            mask = folder / "ground_truth" / "hole" / f"{image.stem}{options.suffix}.png"
            if not mask.is_file():
                raise UserError(f"toyset image {image} has no mask {mask}; check --toy-suffix")
            test.append(Sample(image, mask, 1, "hole"))
        return Splits(train=[Sample(p) for p in list_images(folder / "train" / "good")], test=test)


    DATASET = DatasetSpec(name="toyset", title="Toy set", categories=categories, load=load,
                          add_flags=add_flags, options_from_args=options_from_args,
                          env_var="TOY_DATA", folder_name="ToySet")
'''


@pytest.fixture
def toy_module(tmp_path, monkeypatch):
    """datasets/toyset.py, as if it had been added to the package (in a folder on the package's path)."""
    extra = tmp_path / "more_datasets"
    extra.mkdir()
    (extra / "toyset.py").write_text(textwrap.dedent(TOY))
    monkeypatch.setattr(datasets, "__path__", [*datasets.__path__, str(extra)])
    datasets.specs.cache_clear()
    yield extra
    sys.modules.pop("datasets.toyset", None)
    datasets.specs.cache_clear()


KNOWN = ["mvtecad", "kolektor", "kolektor2", "mstc", "visa", "mvtecad2", "btad", "mpdd", "folder", "synthetic"]


def test_every_dataset_declares_itself():
    specs = {s.name: s for s in datasets.specs()}
    assert [n for n in specs if n in KNOWN] == KNOWN  # the tables' order; a module added later may sit anywhere
    known = {n: s for n, s in specs.items() if n in KNOWN}
    assert {n for n, s in known.items() if not s.needs_root} == {"folder", "synthetic"}
    assert [n for n in paper_datasets() if n in KNOWN] == ["mvtecad", "kolektor", "kolektor2", "mstc"]
    assert [default_protocol(n) for n in known] == ["paper"] * 4 + ["standard"] * 6
    assert {n for n, s in known.items() if s.paper_fits_all} == {"kolektor", "kolektor2"}
    assert covered_box("mvtecad", "paper", (60, 100)) == (0, 20, 60, 60)  # the centre square
    assert covered_box("kolektor", "paper", (60, 100)) == (0, 0, 60, 100)
    with pytest.raises(UserError, match="crops MVTec AD images to a square"):
        check_protocol("mvtecad", "paper", (64, 96))


def test_a_new_dataset_is_one_module(toy_module, tmp_path, capsys):
    """The toy module alone gives train.py its --dataset choice, its flag and its options; summarize its title."""
    root = tmp_path / "ToySet"
    write_mvtec(root, ["plate"])
    exp = tmp_path / "exp"
    with pytest.raises(UserError, match="has no mask .*000_gt.png; check --toy-suffix"):
        train.main(["--dataset", "toyset", "--dataroot", str(root), "--toy-suffix", "_gt", "--experiment", str(exp),
                    *FAST])
    assert train.main(["--dataset", "toyset", "--dataroot", str(root), "--experiment", str(exp), *FAST]) == 0
    with open(exp / "results.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["dataset"], row["category"], row["n_test"]) == ("toyset", "plate", "4")
    assert 0 <= float(row["image_auroc"]) <= 1 and row["protocol"] == "standard"
    sys.path.insert(0, str(REPO / "tools"))
    try:
        from tools import summarize
        assert summarize.config_label(("toyset", "resnet18") + ("",) * 8) == "Toy set: resnet18"
    finally:
        sys.path.remove(str(REPO / "tools"))


def test_run_sh_asks_the_dataset_module(tmp_path):
    (tmp_path / "data" / "BTech_Dataset_transformed").mkdir(parents=True)
    env = {**{k: v for k, v in os.environ.items() if not k.endswith(("_DATA", "_NAME")) and k != "DATA"},
           "PYTHON": "echo"}
    done = subprocess.run([str(REPO / "script" / "run.sh"), "btad", "--k", "7"], cwd=tmp_path / "data", env=env,
                          capture_output=True, text=True, timeout=60)
    root = str((tmp_path / "data" / "BTech_Dataset_transformed").resolve())
    assert done.returncode == 0 and done.stdout.split()[1:] == ["--dataset", "btad", "--dataroot", root,
                                                               "--category", "all", "--k", "7"], done.stderr
    stc = subprocess.run([str(REPO / "script" / "run.sh"), "mstc"], cwd=tmp_path, env={**env, "STC_DATA": "/s"},
                         capture_output=True, text=True, timeout=60)
    assert stc.stdout.split()[1:] == ["--dataset", "mstc", "--dataroot", "/s", "--category", "mstc", "--model",
                                      "resnet18", "--k", "100", "--seed", "5555", "--metric", "auroc"]
    unknown = subprocess.run([str(REPO / "script" / "run.sh"), "nosuch"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and unknown.stdout == ""
    (line,) = unknown.stderr.strip().splitlines()
    prefix = "error: script/run.sh has no sweep for dataset 'nosuch'; pass one of "
    assert line.startswith(prefix)
    offered = line[len(prefix):].split(", ")  # a dataset module added later is offered too
    assert [n for n in offered if n in KNOWN] == ["mvtecad", "kolektor", "kolektor2", "mstc", "visa", "mvtecad2",
                                                  "btad", "mpdd"]


def test_dataset_modules_import_alone_and_without_torch():
    """No import circle (base and transforms once imported each other; each module first in a fresh
    interpreter), and the declarations stay light for the tables and the scripts: every dataset module and
    the registry without torch, which only the dataset class and the paper pipeline bring."""
    def first(module: str) -> str:
        code = f"import {module}, sys, datasets; datasets.specs(); print('torch' in sys.modules)"
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
        return f"{done.returncode} {done.stdout.strip()} {done.stderr.strip()[-300:]}".strip()

    for module in ("datasets.base", "datasets.transforms"):
        assert first(module) == "0 True", module
    for module in ("datasets.kolektor", "datasets.sweep"):  # sweep: what script/run.sh runs
        assert first(module) == "0 False", module
