"""The authors' --label convention: a label's suffix names the tapped layers, "preReLU" the pre-ReLU taps."""
from __future__ import annotations

import argparse

from common import UserError
from models.backbone import ALL_LAYERS

LABEL_LAYERS = {"64": (1,), "128": (2,), "256": (3,), "448": ALL_LAYERS}  # ResNet-18's channels per stage


def apply_label(args: argparse.Namespace) -> None:
    """--layers parsed; the authors' --label convention sets --layers and --pre-relu, saying so."""
    try:
        args.layers = None if args.layers is None else tuple(sorted({int(v) for v in args.layers.split(",") if v}))
    except ValueError:
        raise UserError(f"--layers {args.layers}: pass stage numbers separated by commas, e.g. 1,2,3") from None
    said = []
    suffix = args.label.rsplit("_", 1)[-1] if "_" in args.label else ""
    if suffix in LABEL_LAYERS and args.model == "resnet18":
        if args.layers not in (None, LABEL_LAYERS[suffix]):
            raise UserError(f"--label {args.label} means --layers {','.join(map(str, LABEL_LAYERS[suffix]))}; "
                            "drop --layers or change the label")
        args.layers = LABEL_LAYERS[suffix]
        said.append(f"--layers {','.join(map(str, args.layers))}")
    if "preReLU" in args.label:
        args.pre_relu = True
        said.append("--pre-relu")
    if said:
        print(f"--label {args.label}: the authors' convention sets {' '.join(said)}")
