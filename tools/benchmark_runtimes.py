"""Images per second of one fitted model run by torch, onnxruntime and OpenVINO, in one process:

    python tools/benchmark_runtimes.py                       # ResNet-18 (k 100), WRN-50-2 (k 300), 256 x 256
    python tools/benchmark_runtimes.py --int8                # and OpenVINO INT8 by NNCF (pip install nncf)

Per backbone it fits a model (random weights: ImageNet's cannot be downloaded everywhere) on --train images
of the synthetic `washer` category (generated in a temporary folder; more than k, as real categories have, so
that no direction of the Gaussian is eps alone), exports it (tools/export.py's graph), then times what predict.py calls:
SemiOrthogonal.predict, onnx_model.OnnxScorer.predict and openvino_model.OpenVinoScorer.predict, at each
--batch: one warm-up call, then --repeats calls on the category's test images; the median gives images per
second. Each runtime's maps are compared with torch's (max relative difference).

--int8 quantises the OpenVINO model with NNCF's post-training quantisation (nncf.quantize, the first
--calibration training images as its calibration set) in the variants of tools/benchmark_int8.py (NNCF's
default, every Conv and MatMul; the backbone alone) and reports the Pearson correlation of its maps with
float32 OpenVINO's over every pixel of the test images (pooled, and the lowest of one image), of the image
scores, and its speed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _root  # noqa: F401
import torch

from common import run_cli

K = {"resnet18": 100, "wide_resnet50_2": 300}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=sorted(K), default=["resnet18", "wide_resnet50_2"])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes timed")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per runtime and batch, after one warm-up")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--category", default="washer", help="the synthetic category fitted and scored")
    p.add_argument("--train", type=int, default=400, help="training images of the generated category")
    p.add_argument("--calibration", type=int, default=100, help="--int8: NNCF's calibration images")
    p.add_argument("--int8", action="store_true", help="also NNCF's INT8 OpenVINO model (needs nncf)")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    return p.parse_args(argv)


def images(samples: list, size: int) -> torch.Tensor:
    """The samples decoded as predict.py decodes them: (N, 3, size, size), normalised."""
    from datasets.base import ImageDataset

    dataset = ImageDataset(samples, (size, size))
    return torch.stack([dataset[i].image for i in range(len(dataset))])


def timed(predict, batch: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    """(median seconds of `repeats` calls after one warm-up, the maps)."""
    maps = predict(batch)[0]  # warm-up: first-call allocations, OpenVINO's shapes
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times), maps


def fit(backbone: str, train: torch.Tensor, size: int, folder: Path) -> Path:
    from models import Config, SemiOrthogonal
    from onnx_model import export

    model = SemiOrthogonal(Config(backbone=backbone, k=K[backbone], image_size=(size, size)), weights="random")
    model.fit(train.split(8))
    model.finalize()
    model.save(folder / "model.pt")
    del model
    start = time.perf_counter()
    export(folder / "model.pt", folder / "model.onnx")
    print(f"{backbone}: exported in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return folder / "model.onnx"


def runtimes(folder: Path):
    """(name, a loader of the scorer) of each runtime; each is loaded, timed and freed in turn."""
    from models import SemiOrthogonal
    from onnx_model import OnnxScorer
    from openvino_model import OpenVinoScorer

    return [("torch", lambda: SemiOrthogonal.load(folder / "model.pt")),
            ("onnxruntime", lambda: OnnxScorer(folder / "model.onnx")),
            ("openvino", lambda: OpenVinoScorer(folder / "model.onnx"))]


def relative(maps: torch.Tensor, reference: torch.Tensor) -> float:
    return float((maps - reference).abs().max() / reference.abs().max())


def benchmark(backbone: str, args: argparse.Namespace, train: torch.Tensor, test: torch.Tensor) -> list[dict]:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="runtimes-") as tmp:
        folder = Path(tmp)
        fit(backbone, train, args.image_size, folder)
        reference: dict[int, torch.Tensor] = {}
        for name, load in runtimes(folder):
            scorer = load()
            for batch in args.batch:
                seconds, maps = timed(scorer.predict, test[:batch], args.repeats)
                reference.setdefault(batch, maps)
                rows.append({"backbone": backbone, "k": K[backbone], "runtime": name, "batch": batch,
                             "images_per_s": batch / seconds, "median_s": seconds,
                             "max_rel_diff_vs_torch": relative(maps, reference[batch])})
                print(json.dumps(rows[-1]), file=sys.stderr)
            del scorer
        if args.int8:
            from benchmark_int8 import int8_rows

            rows += int8_rows(folder / "model.onnx", backbone, K[backbone], train, test, args)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| backbone | k | runtime | batch | images/s | median s per call | max rel. diff vs torch |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "images_per_s" in r:
            lines.append(f"| {r['backbone']} | {r['k']} | {r['runtime']} | {r['batch']} | {r['images_per_s']:.2f} | "
                         f"{r['median_s']:.3f} | {r.get('max_rel_diff_vs_torch', float('nan')):.1e} |")
    return "\n".join(lines)


def machine() -> dict:
    import onnxruntime
    import openvino

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1m": os.getloadavg()[0], "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.int8:  # before minutes of fitting
        from benchmark_int8 import require_nncf

        require_nncf()
    from datasets.mvtec import load
    from datasets.synthetic.loader import generate_category

    with tempfile.TemporaryDirectory(prefix="runtimes-data-") as root:
        generate_category(Path(root), args.category, n_train=args.train)
        splits = load(Path(root), args.category)
        train, test = images(splits.train, args.image_size), images(splits.test, args.image_size)
    if max(args.batch) > len(test):
        sys.exit(f"--batch {max(args.batch)}: the category has {len(test)} test images")
    about = {"at_start": machine()}  # the load of other processes, before and after
    rows = [row for backbone in args.models for row in benchmark(backbone, args, train, test)]
    about["at_end"] = machine()
    print(json.dumps(about))
    print(table(rows))
    int8 = [r for r in rows if "pearson_maps" in r or "error" in r]
    if int8:
        from benchmark_int8 import int8_table

        print(int8_table(int8))
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": about, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    run_cli(main)
