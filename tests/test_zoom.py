"""Zoomed crops of large test images: where they go (report/regions.py) and the pages they add to a report."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

import visualizer
from report.layout import ROWS_PER_PAGE, ZOOM_CAP, ZOOM_FROM_PX, ZOOM_MARGIN, ZOOM_MIN_PX, ZOOM_ROWS_PER_PAGE
from report.load import load_category, resolve
from report.regions import DEFECT, FALSE_ALARM, MAX_ASPECT, Box, zoom_boxes
from report.render import category_pages, prepare, render
from results import METRICS_FILE, SCORES_FILE, Scores, write_metrics, write_scores
from tests.test_visualizer import expected_pages, make_category, pdf_page_count

EIGHT = np.ones((3, 3), bool)


def covers(box: Box, region: np.ndarray) -> bool:
    ys, xs = np.nonzero(region)
    return (box.x <= xs.min() and xs.max() < box.x + box.w and box.y <= ys.min() and ys.max() < box.y + box.h)


def inside(box: Box, shape: tuple[int, int]) -> bool:
    return box.x >= 0 and box.y >= 0 and box.x + box.w <= shape[1] and box.y + box.h <= shape[0]


def test_one_thin_defect_centred_at_least_min_size():
    mask = np.zeros((600, 600), bool)
    mask[200:260, 300:303] = True  # a scratch 3 px wide
    [box] = zoom_boxes(mask, mask, margin=16, min_size=96, cap=6)
    assert box.kind == DEFECT and box.area == 180 and covers(box, mask)
    assert (box.w, box.h) == (96, 96)
    assert abs((box.x + box.w / 2) - 301.5) <= 1 and abs((box.y + box.h / 2) - 230) <= 1


def test_boxes_clipped_to_the_image():
    mask = np.zeros((600, 500), bool)
    mask[0:4, 495:500] = True  # in a corner: the crop is shifted inside, at full size
    mask[300:310, 0:2] = True
    for box in zoom_boxes(mask, np.zeros_like(mask), 16, 96, 6):
        assert inside(box, mask.shape) and (box.w, box.h) == (96, 96)
    small = np.zeros((50, 40), bool)
    small[10:12, 10:12] = True  # the image is smaller than the minimum: the whole image
    assert zoom_boxes(small, small, 16, 96, 6) == [Box(0, 0, 40, 50, DEFECT, 4)]


def test_large_and_elongated_regions():
    mask = np.zeros((600, 600), bool)
    mask[100:110, 20:520] = True  # 500 x 10: grown by the margin, then to at most 2:1
    [box] = zoom_boxes(mask, mask, 16, 96, 6)
    assert covers(box, mask) and box.w == 532 and box.h == math.ceil(532 / MAX_ASPECT) and inside(box, mask.shape)


def test_defects_first_then_false_alarms_largest_first():
    mask = np.zeros((600, 600), bool)
    mask[50:52, 50:52] = True  # 4 px
    mask[300:310, 300:310] = True  # 100 px
    prediction = np.zeros_like(mask)
    prediction[48:60, 48:60] = True  # overlaps the small defect: a detection, not a false alarm
    prediction[310:320, 310:320] = True  # touches the large one diagonally only: not a false alarm either
    prediction[500:503, 100:103] = True  # 9 px false alarm
    prediction[100:120, 500:520] = True  # 400 px false alarm
    boxes = zoom_boxes(mask, prediction, 16, 96, 6)
    assert [(b.kind, b.area) for b in boxes] == [(DEFECT, 100), (DEFECT, 4), (FALSE_ALARM, 400), (FALSE_ALARM, 9)]
    for box, (rows, cols) in zip(boxes, [(300, 300), (50, 50), (100, 500), (500, 100)]):
        region = np.zeros_like(mask)
        region[rows:rows + 2, cols:cols + 2] = True  # a corner of each region, top-left first
        assert covers(box, region)
    assert all(inside(b, mask.shape) for b in boxes)


def test_cap_keeps_the_largest_defects_then_alarms():
    mask = np.zeros((600, 600), bool)
    for k in range(8):  # 8 defects of growing size 1..8 px a side
        mask[20 + 70 * k:20 + 70 * k + k + 1, 30:30 + k + 1] = True
    prediction = np.zeros_like(mask)
    prediction[300:340, 400:440] = True  # a false alarm, but the defects fill the cap
    boxes = zoom_boxes(mask, prediction, 16, 96, ZOOM_CAP)
    assert len(boxes) == ZOOM_CAP and all(b.kind == DEFECT for b in boxes)
    assert [b.area for b in boxes] == [(k + 1) ** 2 for k in range(7, 7 - ZOOM_CAP, -1)]
    mask[:] = False
    mask[20:22, 30:32] = True
    boxes = zoom_boxes(mask, prediction, 16, 96, 2)
    assert [b.kind for b in boxes] == [DEFECT, FALSE_ALARM]
    assert zoom_boxes(mask, prediction, 16, 96, 1) == boxes[:1]


def test_nothing_to_zoom():
    empty = np.zeros((600, 600), bool)
    assert zoom_boxes(empty, empty, 16, 96, 6) == []
    mask = empty.copy()
    mask[10:20, 10:20] = True
    assert [b.kind for b in zoom_boxes(empty, mask, 16, 96, 6)] == [FALSE_ALARM]


def test_random_masks_every_region_covered():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = ndimage.binary_dilation(rng.random((300, 260)) > 0.998, iterations=int(rng.integers(1, 4)))
        mask &= rng.random(mask.shape) > 0.2  # ragged regions, some split in several
        prediction = ndimage.binary_dilation(rng.random(mask.shape) > 0.999, iterations=2)
        boxes = zoom_boxes(mask, prediction, 8, 64, 1000)
        labels, n = ndimage.label(mask, structure=EIGHT)
        assert [b.kind for b in boxes].count(DEFECT) == n
        for box in boxes:
            assert inside(box, mask.shape) and box.w >= 64 and box.h >= 64
            assert max(box.w, box.h) <= MAX_ASPECT * min(box.w, box.h)
        defects = boxes[:n]
        for r in range(1, n + 1):  # each region has a box of its own size that covers it
            region = labels == r
            assert any(b.area == region.sum() and covers(b, region) for b in defects)
        pred_labels, m = ndimage.label(prediction, structure=EIGHT)
        near = ndimage.binary_dilation(mask, structure=EIGHT)
        alarms = [int((pred_labels == r).sum()) for r in range(1, m + 1) if not near[pred_labels == r].any()]
        assert sorted(b.area for b in boxes[n:]) == sorted(alarms)


SIZE = 600


def _write_large(folder: Path, images: Path) -> dict[int, int]:
    """A 600 x 600 category of 5 test images; returns the crops each should get."""
    n = 5
    maps = np.ones((n, SIZE, SIZE), np.float32)
    masks = np.zeros((n, SIZE, SIZE), np.uint8)
    masks[0, 200:260, 300:303] = 1  # one thin scratch, predicted exactly
    maps[0][masks[0] > 0] = 5.0
    masks[1, 100:140, 100:103] = 1  # a scratch found a little wider, a small defect missed, a false alarm
    masks[1, 450:456, 450:456] = 1
    maps[1, 98:142, 98:105] = 6.0
    maps[1, 500:505, 50:55] = 4.0
    maps[2, 80:84, 500:504] = 3.0  # a good image with one false alarm
    maps[3, 10, 10] = 2.0  # a clean good image, below the threshold
    for k in range(8):  # 8 defects, all predicted: the cap applies
        masks[4, 40 + 65 * k:44 + 65 * k, 200:204] = 1
    maps[4][masks[4] > 0] = 7.0
    defects = np.array(["scratch", "scratch", "good", "good", "dots"])
    paths = []
    for i in range(n):
        path = images / str(defects[i]) / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((SIZE, SIZE, 3), 90 + 20 * i, np.uint8)).save(path)
        paths.append(str(path))
    folder.mkdir(parents=True)
    write_scores(folder / SCORES_FILE, Scores(maps=maps, masks=masks, labels=(defects != "good").astype(np.int8),
                                              image_scores=maps.reshape(n, -1).max(1), defects=defects,
                                              paths=np.array(paths)))
    write_metrics(folder / METRICS_FILE, {
        "dataset": folder.parent.name, "category": folder.name, "model": "resnet18", "image_size": [SIZE, SIZE],
        "fpr_limit": 0.3, "n_test": n, "metrics": {"aupro": 0.9}, "thresholds": {"pixel": 2.5},
    })
    return {0: 1, 1: 3, 2: 1, 3: 0, 4: ZOOM_CAP}


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> tuple[Path, dict[int, int]]:
    root = tmp_path_factory.mktemp("large")
    crops = _write_large(root / "synthetic" / "plate", root / "data")
    make_category(root / "synthetic" / "carpet", root / "data" / "carpet", seed=0)  # 64 px: no crops
    return root, crops


def _prepared(root: Path, category: str, max_images: int = 40):
    dataset, selected = resolve(root, None, category)
    cats = [load_category(folder, dataset, name) for name, folder in selected]
    for cat in cats:
        prepare(cat, None, max_images)
    return cats


def _expected_large(crops: dict[int, int], order: list[int]) -> int:
    pages = [order[p:p + ROWS_PER_PAGE] for p in range(0, len(order), ROWS_PER_PAGE)]
    return 1 + sum(1 + math.ceil(sum(crops[i] for i in page) / ZOOM_ROWS_PER_PAGE) for page in pages)


@pytest.mark.parametrize("max_images", [0, 2, 40])
def test_large_category_pages(large, tmp_path, max_images):
    root, crops = large
    [cat] = _prepared(root, "plate", max_images)
    assert SIZE > ZOOM_FROM_PX
    assert {i: len(b) for i, b in cat.zooms.items()} == {i: c for i, c in crops.items() if c and i in cat.order}
    if 1 in cat.order:  # the scratch found wider is no false alarm; the missed defect is still shown
        assert [b.kind for b in cat.zooms[1]] == [DEFECT, DEFECT, FALSE_ALARM]
    # defective images from the lowest image score up (0, 1, 4), then good from the highest down (2, 3)
    assert cat.order.tolist() == {0: [], 2: [0, 2], 40: [0, 1, 4, 2, 3]}[max_images]
    if max_images:
        assert (cat.zooms[0][0].w, cat.zooms[0][0].h) == (ZOOM_MIN_PX, ZOOM_MIN_PX)  # the 3 px scratch
    expected = _expected_large(crops, cat.order.tolist())
    assert category_pages(cat) == expected
    out = tmp_path / "plate.pdf"
    assert render([cat], root, out, with_contents=False, progress=False) == expected
    assert pdf_page_count(out) == expected
    assert out.stat().st_size < 400_000 * expected  # within visualizer.py -h's 0.4 MB a page


def test_all_categories_with_zooms(large, capsys):
    root, crops = large
    out = root / "synthetic" / "report.pdf"
    assert visualizer.main(["--ckpt", str(root), "--no-progress"]) == 0
    carpet_pages, plate_pages = expected_pages([8], 40, contents=False), _expected_large(crops, [0, 1, 4, 2, 3])
    expected = 1 + carpet_pages + plate_pages  # contents, then the categories in name order
    assert pdf_page_count(out) == expected and f"({expected} pages)" in capsys.readouterr().out
    carpet, plate = _prepared(root, "all")
    assert [category_pages(c) for c in (carpet, plate)] == [carpet_pages, plate_pages]


@pytest.mark.parametrize("size", [64, 256])
def test_small_maps_no_zoom_pages(tmp_path, size):
    make_category(tmp_path / "exp" / "synthetic" / "tile", tmp_path / "data", size=size, image_size=(size, size))
    [cat] = _prepared(tmp_path / "exp", "tile")
    assert cat.zooms == {} and category_pages(cat) == expected_pages([8], 40, contents=False)
    out = tmp_path / "tile.pdf"
    assert visualizer.main(["--ckpt", str(tmp_path / "exp"), "--out", str(out), "--category", "tile",
                            "--no-progress"]) == 0
    assert pdf_page_count(out) == expected_pages([8], 40, contents=False)


def test_help_tells_the_crops():
    for told in (f"at most {ZOOM_CAP} an image", f"over {ZOOM_FROM_PX} px", f"{ZOOM_MARGIN} px around",
                 f"at least {ZOOM_MIN_PX} px"):
        assert told in " ".join(visualizer.HELP.split()), told
