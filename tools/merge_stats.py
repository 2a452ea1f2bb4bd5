"""Merge fits of disjoint image sets into one model: python tools/merge_stats.py a.pt b.pt -o c.pt

The running sums add up exactly, so the merged model scores as one fit on the union would. Models
must share every config setting (backbone, its weights and precision, W, image size, taps, ...) and,
where the files record it, dataset and category. An image file fitted in two of them (the same path,
size and mtime), or the same fit given twice, is refused: it would count twice.
Calibrated thresholds cannot be merged from sums: the merged file has none (predict.py then asks for
--threshold); calibrate it on normal images that none of the fits used with tools/recalibrate.py.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import _root  # noqa: F401
import torch

from common import UserError, run_cli
from models import Config, read_model_file
from models.backbone import is_reference
from models.model_file import VERSION, save_state
from models.semi_ortho import stats_class

# Config fields that may differ between the merged files: none. eps, unbiased and sigma act only after
# the sums, but the merged file could keep only one of each (refit with --resume --eps to change eps).
# Every other field changes the features, W or the pipeline, so a field added to Config must match too.
MAY_DIFFER: tuple[str, ...] = ()
MUST_MATCH = tuple(f.name for f in fields(Config) if f.name not in MAY_DIFFER)
META_MUST_MATCH = ("dataset", "category")  # what the fits are of; "weights" spells a file path: W and tensors decide
DEFAULTS = Config().stored()


def setting(state: dict, key: str):
    """A config value; files written before a setting existed had its default."""
    return state["config"].get(key, DEFAULTS[key])


def same_sums(a: dict, b: dict) -> bool:
    """Identical n and sum_z: the same fit (a copy), not two disjoint image sets."""
    return int(a["n"]) == int(b["n"]) and torch.equal(a["sum_z"], b["sum_z"])


def check_compatible(path: Path, state: dict, first: Path, reference: dict) -> None:
    for key in MUST_MATCH:
        if setting(state, key) != setting(reference, key):
            raise UserError(f"{path} was fitted with {key} {setting(state, key)}, {first} with "
                            f"{setting(reference, key)}; only fits of the same setup can be merged")
    meta, reference_meta = state.get("meta") or {}, reference.get("meta") or {}
    for key in META_MUST_MATCH:
        if key in meta and key in reference_meta and meta[key] != reference_meta[key]:
            raise UserError(f"{path} is a fit of {key} {meta[key]}, {first} of {reference_meta[key]}; "
                            "only fits of the same data can be merged")
    if not torch.equal(state["W"], reference["W"]):
        raise UserError(f"{path} has another embedding W than {first} (another --seed?); cannot merge")
    if not same_backbone(state["backbone"], reference["backbone"]):
        raise UserError(f"{path} has other backbone weights than {first}; cannot merge")


def same_backbone(a: dict, b: dict) -> bool:
    """Equal tensors, or the same ImageNet weights named (by digest); a named and a stored backbone are
    not compared (refit both with or both without --embed-backbone)."""
    if is_reference(a) or is_reference(b):
        return is_reference(a) and is_reference(b) and a["sha256"] == b["sha256"]
    return a.keys() == b.keys() and all(torch.equal(a[k], v) for k, v in b.items())


def recorded(state: dict) -> tuple[torch.Tensor, bool]:
    """The file's fitted-image digests, and whether they cover all of its images (older files: none)."""
    digests = state.get("fitted")
    digests = torch.empty(0, dtype=torch.int64) if digests is None else digests
    return digests, len(digests) >= int(state["stats"]["n"])


def merge(paths: list[Path]) -> dict:
    seen: dict[Path, Path] = {}
    for path in paths:
        if path.resolve() in seen:
            raise UserError(f"{path} is given twice (as {seen[path.resolve()]}); each fit can be merged once")
        seen[path.resolve()] = path
    merged = read_model_file(paths[0])
    stats_type = stats_class(merged["config"]["approx"])  # --approx global keeps sums pooled over positions
    stats = stats_type.from_state(merged["stats"])
    digests, complete = recorded(merged)
    fitted, unrecorded = [(paths[0], merged["stats"], digests)], [] if complete else [paths[0]]
    for path in paths[1:]:
        state = read_model_file(path)
        check_compatible(path, state, paths[0], merged)
        digests, complete = recorded(state)
        unrecorded += [] if complete else [path]
        for other, sums, other_digests in fitted:
            if same_sums(state["stats"], sums):
                raise UserError(f"{path} holds the same fit as {other} (equal sums); each fit can be merged once")
            both = int(torch.isin(digests, other_digests).sum())
            if both:
                raise UserError(f"{path} and {other} both fitted {both} of the same image files (path, size and "
                                "mtime); they would count twice: merge fits of disjoint images")
        fitted.append((path, state["stats"], digests))
        stats.merge(stats_type.from_state(state["stats"]))
    merged["stats"] = stats.state()
    merged["fitted"] = torch.cat([digests for _, _, digests in fitted]).sort().values
    if unrecorded:  # once the merge is sound: a refusal stays one line
        print(f"warning: {', '.join(map(str, unrecorded))} record(s) not all of their fitted image files (older "
              "files record none): cannot check that no image is in two of the merged fits", file=sys.stderr)
    merged["version"] = VERSION  # the sums are now stored packed, also when the inputs were format 1
    merged["thresholds"], merged["calibration"] = {}, {}  # the merged model scores its own: recalibrate it
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
    if out.is_dir():
        raise UserError(f"-o {out} is a folder; name the merged model file, e.g. {out / 'model.pt'}")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists; pass --overwrite or another -o")
    merged = merge([Path(m) for m in args.models])
    save_state(merged, out)
    print(f"merged {len(args.models)} fits ({int(merged['stats']['n'])} images) into {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
