"""Merge fits of disjoint image sets into one model: python tools/merge_stats.py a.pt b.pt -o c.pt

The running sums add up exactly, so the merged model scores as one fit on the union would. Models
must share backbone (and its weights), W and image size. Calibrated thresholds cannot be merged
from sums: the merged file has none (predict.py then asks for --threshold); refit with --resume
on validation images to calibrate again.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from common import UserError, atomic_write, run_cli  # noqa: E402
from models import RunningStats, read_model_file  # noqa: E402

MUST_MATCH = ("backbone", "k", "approx", "image_size", "crop")


def merge(paths: list[Path]) -> dict:
    merged = read_model_file(paths[0])
    stats = RunningStats.from_state(merged["stats"])
    for path in paths[1:]:
        state = read_model_file(path)
        for key in MUST_MATCH:
            if state["config"][key] != merged["config"][key]:
                raise UserError(f"{path} was fitted with {key} {state['config'][key]}, {paths[0]} with "
                                f"{merged['config'][key]}; only fits of the same setup can be merged")
        if not torch.equal(state["W"], merged["W"]):
            raise UserError(f"{path} has another embedding W than {paths[0]} (another --seed?); cannot merge")
        if any(not torch.equal(state["backbone"][k], v) for k, v in merged["backbone"].items()):
            raise UserError(f"{path} has other backbone weights than {paths[0]}; cannot merge")
        stats.merge(RunningStats.from_state(state["stats"]))
    merged["stats"] = stats.state()
    merged["thresholds"] = {}
    return merged


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model.pt files of disjoint image sets")
    p.add_argument("-o", "--out", required=True, help="merged model file")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    if len(args.models) < 2:
        raise UserError("give at least two model files to merge")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists; pass --overwrite or another -o")
    merged = merge([Path(m) for m in args.models])
    atomic_write(out, lambda tmp: torch.save(merged, tmp))
    print(f"merged {len(args.models)} fits ({int(merged['stats']['n'])} images) into {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
