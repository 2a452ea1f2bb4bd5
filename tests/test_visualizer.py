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

import metrics
import visualizer
from report.curves import bin_index, binned_curves, finite_range, image_roc, pro_curve_for_drawing, pro_points
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


def test_binned_curves_match_definition():
    rng = np.random.default_rng(3)
    masks = np.zeros((3, 32, 32), bool)
    masks[0, 2:8, 2:8] = masks[0, 20:30, 0:5] = masks[1, 10:12, 10:30] = True
    maps = rng.random((3, 32, 32)).astype(np.float32) + masks * 0.5
    curves = binned_curves(maps, masks, bins=50)
    lo, hi = float(maps.min()), float(maps.max())
    for j in (5, 20, 40):  # threshold = lower edge of bin 50 - j: predicted = in the top j bins
        edge_bin = 50 - j
        pred = np.clip(np.floor((maps - lo) / (hi - lo) * 50), 0, 49) >= edge_bin
        regions = []
        for p, m in zip(pred, masks):
            lab, k = ndimage.label(m, structure=np.ones((3, 3)))
            regions += [p[lab == r].mean() for r in range(1, k + 1)]
        assert curves["fpr"][j] == pytest.approx(pred[~masks].mean())
        assert curves["tpr"][j] == pytest.approx(pred[masks].mean())
        assert curves["pro"][j] == pytest.approx(np.mean(regions))
    assert curves["fpr"][0] == curves["pro"][0] == 0 and curves["fpr"][-1] == curves["pro"][-1] == 1


def _curve_data(seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Score maps with ties (two decimals) and several regions, one image without a defect."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((4, 40, 40), bool)
    masks[0, 3:9, 3:9] = masks[0, 25:35, 1:6] = masks[1, 12:14, 10:32] = masks[2, 30:38, 30:38] = True
    maps = np.round(rng.random((4, 40, 40)) + masks * rng.uniform(0.2, 0.8, (4, 1, 1)), 2).astype(np.float32)
    return maps, masks


def test_drawn_pro_curve_is_metrics_pro_curve():
    maps, masks = _curve_data()
    limit = 0.3
    binned = binned_curves(maps, masks)
    fpr, pro, note = pro_points(maps, masks, limit, binned)
    exact_fpr, exact_pro = metrics.pro_curve(maps, masks, limit)
    assert note == "exact (metrics.pro_curve)"
    np.testing.assert_array_equal(fpr, exact_fpr)
    np.testing.assert_array_equal(pro, exact_pro)
    # its area, interpolated at the limit as AU-PRO is, is metrics' AU-PRO
    step = (limit - fpr[-2]) / (fpr[-1] - fpr[-2])
    at_limit = pro[-2] + step * (pro[-1] - pro[-2])
    area = np.trapezoid(np.r_[pro[:-1], at_limit], np.r_[fpr[:-1], limit]) / limit
    assert area == pytest.approx(metrics.aupro(maps, masks, limit), abs=1e-12)
    # the drawn curve is those points resampled on [0, limit]; its area stays within the resampling error
    grid, drawn, _ = pro_curve_for_drawing(maps, masks, limit, binned)
    assert grid[0] == 0 and grid[-1] == limit
    np.testing.assert_allclose(drawn, np.interp(grid, exact_fpr, exact_pro), rtol=0, atol=1e-12)
    assert np.trapezoid(drawn, grid) / limit == pytest.approx(metrics.aupro(maps, masks, limit), abs=1e-3)


def test_pro_curve_falls_back_to_binned_on_nan():
    maps, masks = _curve_data()
    maps[3, 0, 0] = np.nan
    binned = binned_curves(maps, masks)
    fpr, pro, note = pro_points(maps, masks, 0.3, binned)
    assert fpr is binned["fpr"] and pro is binned["pro"] and "metrics.pro_curve failed: score maps contain NaN" in note


def test_binned_curves_are_metrics_of_binned_scores():
    """The drawn pixel ROC and PRO are the exact curves of the scores binned: their areas are metrics' values."""
    maps, masks = _curve_data()
    bins = 60
    curves = binned_curves(maps, masks, bins=bins)
    binned_maps = bin_index(maps, *finite_range(maps), bins).astype(np.float64)
    roc_area = np.trapezoid(curves["tpr"], curves["fpr"])
    assert roc_area == pytest.approx(metrics.pixel_auroc(binned_maps, masks), abs=1e-12)
    assert roc_area == pytest.approx(metrics.pixel_auroc(maps, masks), abs=0.01)  # binning costs little
    pro_area = np.trapezoid(curves["pro"], curves["fpr"])
    assert pro_area == pytest.approx(metrics.aupro(binned_maps, masks, 1.0), abs=1e-12)


def test_image_roc_area_is_metrics_image_auroc():
    labels = np.array([0, 1, 0, 1, 1, 0, 0, 1, 0])
    scores = np.array([0.1, 0.9, 0.4, 0.4, 0.7, 0.7, 0.2, 0.3, 0.4])  # ties across classes
    fpr, tpr = image_roc(labels, scores)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.image_auroc(scores, labels), abs=1e-12)
    assert image_roc(np.zeros(3, int), scores[:3]) is None and image_roc(np.ones(3, int), scores[:3]) is None


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
