"""Regions (pipeline/regions.py) against a literal flood fill, and predict.py's regions.jsonl, n_regions,
p_value and overlay boxes on a fitted model."""
import csv
import json
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import predict
from pipeline.predict_draw import BOX
from pipeline.regions import find_regions
from tests.test_predict import fitted  # noqa: F401  (a fixture)


def literal_regions(score_map, threshold):
    """8-connected components of score > threshold by breadth-first search, pixel by pixel."""
    h, w = score_map.shape
    above = score_map > threshold
    seen = np.zeros_like(above)
    found = []
    for y in range(h):
        for x in range(w):
            if not above[y, x] or seen[y, x]:
                continue
            queue, pixels = deque([(y, x)]), []
            seen[y, x] = True
            while queue:
                cy, cx = queue.popleft()
                pixels.append((cy, cx))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = cy + dy, cx + dx
                        if 0 <= ny < h and 0 <= nx < w and above[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            queue.append((ny, nx))
            ys, xs = zip(*pixels)
            values = [float(score_map[p]) for p in pixels]
            found.append({"box": [min(xs), min(ys), max(xs) + 1, max(ys) + 1], "area": len(pixels),
                          "max": max(values), "mean": sum(values) / len(values)})
    return found


def canonical(regions):
    return sorted((tuple(r["box"]), r["area"], round(r["max"], 5), round(r["mean"], 5)) for r in regions)


def test_regions_are_the_8_connected_components():
    rng = np.random.default_rng(0)
    for size in ((20, 30), (1, 40), (17, 17)):
        score_map = rng.gamma(2.0, size=size).astype(np.float32)
        expected = literal_regions(score_map, 2.5)
        found = find_regions(score_map, 2.5)
        assert canonical(found) == canonical(expected) and len(found) > 1
        assert [r["max"] for r in found] == sorted((r["max"] for r in found), reverse=True)
        assert canonical(find_regions(score_map, 2.5, min_area=3)) == canonical(
            [r for r in expected if r["area"] >= 3])
    diagonal = np.eye(4, dtype=np.float32)  # touching corners: one region under 8-connectivity
    assert find_regions(diagonal, 0.5) == [{"box": [0, 0, 4, 4], "area": 4, "max": 1.0, "mean": 1.0}]
    assert find_regions(np.zeros((3, 3), np.float32), 0.5) == []


def test_predict_writes_regions_p_values_and_boxes(fitted, tmp_path):  # noqa: F811
    root, folder = fitted
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("000.png", "001.png"):
        (inputs / f"blob_{name}").write_bytes((root / "toy" / "test" / "blob" / name).read_bytes())
    Image.open(root / "toy" / "test" / "good" / "000.png").resize((90, 50)).save(inputs / "wide.png")
    state = torch.load(folder / "model.pt", weights_only=True)
    low = str(state["thresholds"]["val_pixel_q99"])  # a low pixel threshold: several regions
    out = tmp_path / "out"
    assert predict.main(["--model", str(folder / "model.pt"), "--input", str(inputs), "--out", str(out),
                         "--threshold", low]) == 0
    rows = {Path(r["path"]).name: r for r in csv.DictReader(open(out / "predictions.csv"))}
    lines = [json.loads(line) for line in (out / "regions.jsonl").read_text().splitlines()]
    assert [Path(line["path"]).name for line in lines] == list(rows) == ["blob_000.png", "blob_001.png", "wide.png"]
    calibration = state["calibration"]["scores"].tolist()
    for line in lines:
        name = Path(line["path"]).name
        row = rows[name]
        score = float(row["image_score"])
        expected_p = (1 + sum(1 for c in calibration if c >= line["image_score"])) / (len(calibration) + 1)
        assert float(row["p_value"]) == pytest.approx(expected_p) and line["p_value"] == pytest.approx(expected_p)
        assert line["image_score"] == pytest.approx(score) and int(row["n_regions"]) == len(line["regions"])
        mask = np.asarray(Image.open(out / f"{Path(name).stem}_mask.png")) > 0  # at the original size
        heat = np.asarray(Image.open(out / f"{Path(name).stem}_heatmap.png"))
        expected = literal_regions(mask.astype(np.float32), 0.5)  # the mask's components: boxes and areas
        assert sorted((tuple(r["box"]), r["area"]) for r in line["regions"]) == sorted(
            (tuple(r["box"]), r["area"]) for r in expected)
        assert all(r["max"] >= r["mean"] > float(low) for r in line["regions"])
        assert all(0 <= r["box"][0] < r["box"][2] <= heat.shape[1] and 0 <= r["box"][1] < r["box"][3] <= heat.shape[0]
                   for r in line["regions"])
        overlay = np.asarray(Image.open(out / f"{Path(name).stem}_overlay.png"))
        for region in line["regions"]:  # a white frame just outside each box
            left, top, right, bottom = region["box"]
            if left > 0 and top > 0 and right < heat.shape[1] and bottom < heat.shape[0]:
                assert (overlay[top - 1, left - 1:right + 1] == BOX).all()
                assert (overlay[bottom, left - 1:right + 1] == BOX).all()
    assert sum(len(line["regions"]) for line in lines) >= 2
    smallest = min(r["area"] for line in lines for r in line["regions"])
    assert predict.main(["--model", str(folder / "model.pt"), "--input", str(inputs), "--out", str(tmp_path / "big"),
                         "--threshold", low, "--min-area", str(smallest + 1)]) == 0
    kept = [json.loads(line) for line in (tmp_path / "big" / "regions.jsonl").read_text().splitlines()]
    for before, after in zip(lines, kept):
        assert after["regions"] == [r for r in before["regions"] if r["area"] > smallest]


def test_line_report_counts_regions_touched_by_boxes():
    from line_report import hits, random_splits

    truth = np.zeros((20, 20), dtype=bool)
    truth[2:4, 2:4] = True  # region 1
    truth[10:12, 15:18] = True  # region 2
    truth[18, 0] = truth[19, 1] = True  # region 3, diagonal: one region
    boxes = [{"box": [3, 3, 6, 6]}, {"box": [0, 18, 1, 19]}, {"box": [8, 0, 12, 5]}]  # touches 1, 3; a stray box
    assert hits(truth, boxes) == (3, 2, 1)
    rng = np.random.default_rng(0)
    pool = rng.normal(size=60)
    mean, se = random_splits(pool, 19, 19, 3000, 0)  # the maximum of 19: 1 / 20 of new normal images flagged
    assert abs(mean - 1 / 20) <= 3 * se
