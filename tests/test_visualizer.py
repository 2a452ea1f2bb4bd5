"""visualizer.py and the report package on a small fake experiment written with train.py's own writers."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

import visualizer
from report.layout import ROWS_PER_PAGE
from report.load import load_category, resolve
from report.render import choose_threshold, image_order, prepare, render
from results import METRICS_FILE, MODEL_FILE, SCORES_FILE, Scores, read_scores, write_metrics, write_scores

REPO = Path(__file__).resolve().parents[1]
DEFECTS = ("good", "good", "good", "crack", "hole", "crack", "hole", "good")  # 8 test images


def make_category(folder: Path, images: Path, seed: int = 0, size: int = 64, image_size=(72, 72),
                  defects=DEFECTS, thresholds: bool = True) -> None:
    """A finished train.py category: PNG inputs at `image_size` cropped to size x size, maps, metrics."""
    rng = np.random.default_rng(seed)
    n = len(defects)
    h, w = image_size
    top, left = (h - size) // 2, (w - size) // 2
    maps = np.zeros((n, size, size), np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    paths = []
    for i, defect in enumerate(defects):
        texture = ndimage.gaussian_filter(rng.normal(size=(h + 8, w + 8)), 1.5)[4:-4, 4:-4]
        texture = (texture - texture.min()) / np.ptp(texture)
        rgb = np.stack([0.35 + 0.3 * texture, 0.3 + 0.3 * texture, 0.2 + 0.25 * texture], -1)
        if defect != "good":
            cy, cx = rng.integers(12, size - 12, size=2)
            yy, xx = np.mgrid[:size, :size]
            radius = 4 + 3 * rng.random()
            if defect == "crack":
                masks[i] = (np.abs((yy - cy) - 0.6 * (xx - cx)) < 1.8) & (np.abs(xx - cx) < 10)
            else:
                masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
            rgb[top:top + size, left:left + size][masks[i] > 0] *= 0.45
        maps[i] = ndimage.gaussian_filter(masks[i] * (2 + 2 * rng.random()) + rng.normal(0, 0.35, (size, size)), 2)
        maps[i] += 1.0 + rng.random()
        path = images / defect / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rgb * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    labels = np.array([d != "good" for d in defects], np.int8)
    folder.mkdir(parents=True)
    write_scores(folder / SCORES_FILE, Scores(maps=maps, masks=masks, labels=labels,
                                              image_scores=maps.reshape(n, -1).max(1), defects=np.array(defects),
                                              paths=np.array(paths)))
    info = {
        "dataset": folder.parent.name, "category": folder.name, "model": "resnet18", "approx": "ortho",
        "k": 100, "eps": 0.01, "image_size": list(image_size), "crop": [size, size], "seed": 1111,
        "fpr_limit": 0.3, "num_thresholds": 1000, "n_train": 18, "n_val": 2, "n_test": n,
        "metrics": {"aupro": 0.91, "pixel_auroc": 0.97, "image_auroc": 0.95, "paper_pro": 0.9,
                    "paper_roc": 0.96},
        "seconds": {"fit": 1.5, "score": 0.5, "metrics": 0.2},
    }
    if thresholds:
        info["thresholds"] = {"image": 3.0, "pixel": 2.5, "val_fpr": 0.01}
    write_metrics(folder / METRICS_FILE, info)
    (folder / MODEL_FILE).write_bytes(b"not needed by the visualizer")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exp")
    make_category(root / "synthetic" / "carpet", root / "data" / "carpet", seed=0)
    make_category(root / "synthetic" / "bottle", root / "data" / "bottle", seed=1, thresholds=False,
                  image_size=(64, 64), defects=DEFECTS[:6])
    Path(read_scores(root / "synthetic" / "carpet" / SCORES_FILE).paths[1]).unlink()  # a moved image
    return root


def pdf_page_count(path: Path) -> int:
    """Pages counted from the file itself: page objects, cross-checked with the page tree's /Count."""
    data = path.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    pages = len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))
    counts = [int(c) for c in re.findall(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)", data)]
    counts += [int(c) for c in re.findall(rb"/Count\s+(\d+)[^>]*?/Type\s*/Pages\b", data)]
    assert counts and max(counts) == pages
    return pages


def expected_pages(n_images: list[int], max_images: int, contents: bool) -> int:
    return int(contents) + sum(1 + math.ceil(min(n, max_images) / ROWS_PER_PAGE) for n in n_images)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "visualizer.py", *args, "--no-progress"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("max_images", [0, 5, 40])
def test_one_category_page_count(experiment, tmp_path, max_images):
    out = tmp_path / "carpet.pdf"
    args = visualizer.parse_args(["--ckpt", str(experiment), "--category", "carpet", "--out", str(out),
                                  "--max-images", str(max_images)])
    dataset, selected = resolve(args.ckpt, args.dataset, args.category)
    cats = [load_category(folder, dataset, name) for name, folder in selected]
    for cat in cats:
        prepare(cat, None, max_images)
    written = render(cats, experiment, out, with_contents=False, progress=False)
    expected = expected_pages([8], max_images, contents=False)
    assert written == expected
    assert pdf_page_count(out) == expected
    assert [p.name for p in tmp_path.iterdir()] == ["carpet.pdf"]  # no temp file left


def test_all_categories_default_output(experiment):
    assert visualizer.main(["--ckpt", str(experiment), "--max-images", "5", "--no-progress"]) == 0
    out = experiment / "synthetic" / "report.pdf"
    assert pdf_page_count(out) == expected_pages([6, 8], 5, contents=True)  # bottle, carpet + contents
    assert visualizer.main(["--ckpt", str(experiment), "--max-images", "1", "--no-progress"]) == 0
    assert pdf_page_count(out) == expected_pages([6, 8], 1, contents=True)  # a report is replaced


def test_cli_one_category(experiment):
    result = run_cli("--ckpt", str(experiment), "--dataset", "synthetic", "--category", "bottle",
                     "--max-images", "6", "--threshold", "2.0")
    assert result.returncode == 0, result.stderr
    out = experiment / "synthetic" / "bottle" / "report.pdf"
    assert f"wrote {out} (3 pages)" in result.stdout
    assert pdf_page_count(out) == 3


def test_image_order_failures_first():
    labels = np.array([0, 1, 1, 0, 1, 0])
    scores = np.array([1.0, 5.0, 2.0, 4.0, 3.0, 0.5])
    assert image_order(labels, scores).tolist() == [2, 4, 1, 3, 0, 5]
    # a budget smaller than the defects still shows the worst false alarms
    assert image_order(labels, scores, 2).tolist() == [2, 3]
    assert image_order(labels, scores, 5).tolist() == [2, 4, 1, 3, 0]


def test_threshold_choice(experiment):
    carpet = load_category(experiment / "synthetic" / "carpet", "synthetic", "carpet")
    bottle = load_category(experiment / "synthetic" / "bottle", "synthetic", "bottle")
    assert choose_threshold(carpet, None) == (2.5, "calibrated on normal validation images at FPR 0.01")
    assert choose_threshold(carpet, 7.0) == (7.0, "given with --threshold")
    t, source = choose_threshold(bottle, None)  # none saved: FPR limit on normal test pixels
    normal = bottle.maps[~bottle.masks].astype(np.float32)
    assert t == float(np.quantile(normal, 1 - bottle.fpr_limit))
    assert abs((normal > t).mean() - bottle.fpr_limit) < 0.01 and "FPR 0.3 on the test set's normal pixels" in source


def test_help_works_anywhere(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "visualizer.py"), "-h"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "test images each" in result.stdout and "--max-images" in result.stdout


def _copy(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())


ERRORS = {  # case: what the one-line message must name
    "no ckpt": "does not exist", "empty ckpt": "nothing trained there yet", "no category": "no category folder",
    "no scores": f"{SCORES_FILE} is missing", "no metrics": f"{METRICS_FILE} is missing",
    "corrupt npz": f"carpet/{SCORES_FILE}", "truncated npz": f"carpet/{SCORES_FILE}",
    "bad json": f"carpet/{METRICS_FILE}", "wrong dataset": "no dataset folder", "two datasets": "several datasets",
    "category as ckpt": "is a category folder", "dataset as ckpt": "is a dataset folder",
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_one_line_exit_2(experiment, tmp_path, case):
    ckpt = tmp_path / "exp"
    folder = ckpt / "synthetic" / "carpet"
    args = ["--ckpt", str(ckpt)]
    if case == "no ckpt":
        args = ["--ckpt", str(tmp_path / "missing")]
    elif case == "empty ckpt":
        ckpt.mkdir()
    else:
        _copy(experiment / "synthetic" / "carpet", folder)
        if case == "no category":
            args += ["--category", "grid"]
        elif case == "no scores":
            (folder / SCORES_FILE).unlink()
        elif case == "no metrics":
            (folder / METRICS_FILE).unlink()
        elif case == "corrupt npz":
            (folder / SCORES_FILE).write_bytes(b"garbage, not a zip file")
        elif case == "truncated npz":
            data = (folder / SCORES_FILE).read_bytes()
            (folder / SCORES_FILE).write_bytes(data[: len(data) // 2])
        elif case == "bad json":
            (folder / METRICS_FILE).write_text("{")
        elif case == "wrong dataset":
            args += ["--dataset", "mvtecad"]
        elif case == "two datasets":
            _copy(folder, ckpt / "mvtecad" / "carpet")
        elif case == "category as ckpt":
            args = ["--ckpt", str(folder)]
        elif case == "dataset as ckpt":
            args = ["--ckpt", str(folder.parent)]
    result = run_cli(*args)
    assert result.returncode == 2, (case, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and ERRORS[case] in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("*.pdf")) and not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("defects", [("good", "good", "good"), ("crack", "hole")])
def test_only_good_or_only_defective_images(tmp_path, defects):
    make_category(tmp_path / "exp" / "synthetic" / "tile", tmp_path / "data", defects=defects, thresholds=False)
    out = tmp_path / "tile.pdf"
    assert visualizer.main(["--ckpt", str(tmp_path / "exp"), "--category", "tile", "--out", str(out),
                            "--no-progress"]) == 0
    assert pdf_page_count(out) == 2
