"""Export a fitted model to ONNX: one graph from normalised images to score maps and image scores.

    python tools/export.py --model runs/exp/mvtecad/carpet/model.pt --out carpet.onnx

Input `images` (N, 3, H, W) float32, RGB in [0, 1] normalised with the ImageNet mean and std as in
training, H x W the model's input size (after --crop); outputs `maps` (N, H, W), the smoothed score
maps, and `scores` (N,), their maxima. N is dynamic. The Mahalanobis distance uses mu and the inverse
Cholesky factor L^-1 (ONNX has no triangular solve). The metadata holds the calibrated thresholds,
their calibration (its n scores give predict.py's p-values), the config and the normalisation as JSON.
Weights beyond the 2 GB protobuf limit (WRN-50-2, k = 300) go to <out>.data beside the file (ONNX
external data). Both are written into a staging folder beside
<out> and renamed into place once complete: a failed, interrupted or killed export leaves the previous
files, and the next export removes what a killed one left. `predict.py --model <out>` runs it with
onnxruntime (`--runtime openvino`: OpenVINO). A tiled model (--tile) exports as tiles (N, 3, S, S) ->
`tile_maps` (N, S, S), each tile's upsampled distances; the metadata 'tiling' says how to average and smooth
them (onnx_model.ExportedScorer does).
Needs `pip install -r requirements-export.txt`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import _root  # noqa: F401

from common import UserError, run_cli


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt written by train.py")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--external-data", action="store_true",
                   help="always write the weights to <out>.data (automatic beyond the 2 GB protobuf limit)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UserError(f"--out {out} exists; pass --overwrite or another --out")
    from onnx_model import export

    export(args.model, out, external_data=args.external_data)
    data = Path(f"{out}.data")
    extra = f" (weights in {data})" if data.exists() else ""
    print(f"exported {args.model} to {out}{extra}")
    return 0


if __name__ == "__main__":
    run_cli(main)
