"""The authors' --label convention: a label's suffix names the tapped layers, "preReLU" the pre-ReLU taps."""
from __future__ import annotations

from dataclasses import dataclass

from common import UserError
from models.backbone import ALL_LAYERS

LABEL_LAYERS = {"64": (1,), "128": (2,), "256": (3,), "448": ALL_LAYERS}  # ResNet-18's channels per stage


@dataclass(frozen=True)
class LabelSettings:
    """--layers and --pre-relu once the label has spoken, and the line that says what it set (None: nothing)."""
    layers: tuple[int, ...] | None
    pre_relu: bool | None
    said: str | None


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    """--layers "1,3" as (1, 3), sorted and unique; None when not given."""
    try:
        return None if text is None else tuple(sorted({int(v) for v in text.split(",") if v}))
    except ValueError:
        raise UserError(f"--layers {text}: pass stage numbers separated by commas, e.g. 1,2,3") from None


def label_settings(label: str, backbone: str | None, layers: tuple[int, ...] | None,
                   pre_relu: bool | None) -> LabelSettings:
    """What the authors' convention makes of `label`: ResNet-18's _64/_128/_256/_448 suffix sets the layers
    (refusing other --layers), "preReLU" anywhere sets the pre-ReLU taps."""
    said = []
    suffix = label.rsplit("_", 1)[-1] if "_" in label else ""
    if suffix in LABEL_LAYERS and backbone == "resnet18":
        if layers not in (None, LABEL_LAYERS[suffix]):
            raise UserError(f"--label {label} means --layers {','.join(map(str, LABEL_LAYERS[suffix]))}; "
                            "drop --layers or change the label")
        layers = LABEL_LAYERS[suffix]
        said.append(f"--layers {','.join(map(str, layers))}")
    if "preReLU" in label:
        pre_relu = True
        said.append("--pre-relu")
    line = f"--label {label}: the authors' convention sets {' '.join(said)}" if said else None
    return LabelSettings(layers, pre_relu, line)
