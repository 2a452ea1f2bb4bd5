"""tools/benchmark_runtimes.py --int8: NNCF's post-training INT8 quantisation of the exported model run by
OpenVINO, against the float32 model: the Pearson correlation of their maps and the speed. nncf is imported
only here (pip install nncf)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def variants(nncf) -> dict[str, dict]:
    """nncf.quantize's settings of each variant. Its default quantises every Conv and MatMul; "backbone" leaves
    the MatMuls (W, L^-1, the smoothing) in float32: the Mahalanobis distance whitens z, which magnifies the
    error of any direction of small variance; "mixed" quantises the activations asymmetrically (the taps are
    taken before their ReLU, signed)."""
    backbone = {"ignored_scope": nncf.IgnoredScope(types=["MatMul"])}
    return {"int8 all": {}, "int8 backbone": backbone,
            "int8 backbone, mixed": {**backbone, "preset": nncf.QuantizationPreset.MIXED}}


class Int8Scorer:
    """predict() of a quantised OpenVINO model: (maps, scores) as OpenVinoScorer's."""

    def __init__(self, model, core):
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        self.request, self.ports = compiled.create_infer_request(), compiled.outputs

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        results = self.request.infer({"images": np.ascontiguousarray(images.numpy(), dtype=np.float32)})
        maps, scores = (np.asarray(results[port]) for port in self.ports)
        return torch.from_numpy(maps), torch.from_numpy(scores)


def all_maps(scorer, test: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    parts = [scorer.predict(chunk) for chunk in test.split(8)]
    return (torch.cat([m for m, _ in parts]).double().numpy(), torch.cat([s for _, s in parts]).double().numpy())


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def require_nncf():
    try:
        import nncf
    except ImportError:
        sys.exit("--int8 needs nncf: pip install nncf")
    return nncf


def int8_rows(path: Path, backbone: str, k: int, train: torch.Tensor, test: torch.Tensor,
              args: argparse.Namespace) -> list[dict]:
    nncf = require_nncf()
    import openvino
    from benchmark_runtimes import relative, timed

    from openvino_model import OpenVinoScorer

    maps32, scores32 = all_maps(OpenVinoScorer(path), test)
    core = openvino.Core()
    calibration = nncf.Dataset([image[None].numpy() for image in train[:args.calibration]])
    rows = []
    for name, settings in variants(nncf).items():
        quantised = nncf.quantize(core.read_model(str(path)), calibration, subset_size=args.calibration, **settings)
        try:
            scorer = Int8Scorer(quantised, core)
        except RuntimeError as error:  # OpenVINO's CPU plugin may refuse what NNCF quantised
            where = next((line for line in str(error).splitlines() if "failed at" in line), str(error)[:200])
            rows.append({"backbone": backbone, "k": k, "runtime": f"openvino {name}", "error": where.strip()})
            print(json.dumps(rows[-1]), file=sys.stderr)
            continue
        maps8, scores8 = all_maps(scorer, test)
        row = {"backbone": backbone, "k": k, "runtime": f"openvino {name}", "calibration_images": args.calibration,
               "test_images": len(test), "pearson_maps": pearson(maps8, maps32),
               "pearson_maps_lowest_image": min(pearson(a, b) for a, b in zip(maps8, maps32)),
               "pearson_image_scores": pearson(scores8, scores32),
               "max_rel_diff_vs_float32": relative(torch.from_numpy(maps8), torch.from_numpy(maps32))}
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
        for batch in args.batch:
            seconds, _ = timed(scorer.predict, test[:batch], args.repeats)
            rows.append({"backbone": backbone, "k": k, "runtime": f"openvino {name}", "batch": batch,
                         "images_per_s": batch / seconds, "median_s": seconds})
            print(json.dumps(rows[-1]), file=sys.stderr)
        del scorer, quantised
    return rows


def int8_table(rows: list[dict]) -> str:
    lines = ["| backbone | k | quantised | Pearson, maps (pooled) | lowest of one image | image scores | "
             "max rel. diff |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['backbone']} | {r['k']} | {r['runtime']} | not compiled: {r['error']} | | | |")
            continue
        lines.append(f"| {r['backbone']} | {r['k']} | {r['runtime']} | {r['pearson_maps']:.5f} | "
                     f"{r['pearson_maps_lowest_image']:.5f} | {r['pearson_image_scores']:.5f} | "
                     f"{r['max_rel_diff_vs_float32']:.3f} |")
    return "\n".join(lines)
