"""The model file (model.pt): what SemiOrthogonal.save writes and load reads, checked before use.

Format 2: config, W, the running sums (n, shift, sum z, sum zz^T packed: k(k+1)/2 values per
position), thresholds, the calibration that set them (`calibration`: rule, alpha, n, the n calibration
images' scores, pipeline/calibrate.py; files written before it have none), meta, the fitted images'
digests (one int64 per image, see `fitted`; files written before it have none) and the backbone: its
tensors, or for torchvision's ImageNet weights their name, address and digest (backbone.weights_reference).
Format 3, a model fitted in blocks (models/blocks.py), is format 2 with sum zz^T in a file of its own
beside the model file, named by the stats entry `sum_zz_file`: raw little-endian float32, (P, k(k+1)/2)
row by row, as a format-2 file's tensor. Format 1 (full k x k sums) still loads.
Every entry is checked against the config on reading: a damaged file is one line naming what is wrong.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from common import SettingError, UserError, atomic_write, literal
from models.backbone import (
    ALL_LAYERS,
    BACKBONES,
    FeatureExtractor,
    build_extractor,
    feature_dim,
    feature_size,
    imagenet_weights,
    is_reference,
    weights_reference,
)
from models.calibration import RULES
from models.config import Config
from models.embedding import APPROXIMATIONS, IDENTITY

if TYPE_CHECKING:
    from models.semi_ortho import SemiOrthogonal

FORMAT = "semiortho-model"
VERSION = 2  # 2: sum zz^T stored packed (k(k+1)/2 per position); 1: full k x k, still read
BLOCKED_VERSION = 3  # 2 with sum zz^T in a file beside it
READABLE_VERSIONS = (1, 2, 3)
REQUIRED_KEYS = ("config", "W", "stats", "backbone")  # "thresholds" and "meta" may be absent
STATS_KEYS = {1: ("n", "shift", "sum_z", "sum_zz"), 2: ("n", "shift", "sum_z", "sum_zz_packed"),
              3: ("n", "shift", "sum_z", "sum_zz_file")}
CONFIG_FIELDS = tuple(f.name for f in fields(Config))
DAMAGED = "the file is damaged: refit or restore it"


def model_state(model: SemiOrthogonal, embed_backbone: bool = False) -> dict:
    """The dictionary save() writes (tensors and plain values only: loads with weights_only=True)."""
    assert model.stats is not None  # save(), the one caller, refuses a model without its sums
    stats = model.stats.state()
    return {
        "format": FORMAT, "version": BLOCKED_VERSION if "sum_zz_file" in stats else VERSION,
        "config": model.config.stored(),
        "W": model.W.cpu(),
        "stats": {key: value.cpu() if isinstance(value, torch.Tensor) else value for key, value in stats.items()},
        "thresholds": dict(model.thresholds),
        "calibration": {key: value.cpu() if isinstance(value, torch.Tensor) else value
                        for key, value in model.calibration.items()},
        "meta": dict(model.meta),
        "fitted": model.fitted.cpu(),
        "provenance": dict(model.provenance),
        "backbone": (None if embed_backbone else weights_reference(model.extractor))
        or {key: value.cpu() for key, value in model.extractor.state_dict().items()},
    }


def save_state(state: dict, path: str | Path) -> None:
    """Writes a model file atomically. Through a Python file object, so that a full disk or a read-only
    folder is the OSError itself (torch's own writer makes it a RuntimeError without errno)."""
    path = Path(path)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            try:
                torch.save(state, f)
            except RuntimeError as error:  # the zip writer's complaint after the file object's OSError
                cause = error.__context__
                while cause is not None and not isinstance(cause, OSError):
                    cause = cause.__context__
                if cause is None:
                    raise
                raise cause from None
    atomic_write(path, write)  # a full disk or read-only folder: one line naming the folder


def read_model_file(path: str | Path, mmap: bool = False) -> dict:
    """The saved dictionary, checked against its config, or a one-line UserError for a file that is
    missing, truncated, damaged or not ours. mmap: the tensors are read only where used (a quick look
    at config and meta)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no model file {path}; pass the model.pt that train.py wrote")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        raise UserError(f"{path} is not a readable model file ({type(e).__name__}); "
                        "it may be truncated: refit") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a semi-orthogonal model written by train.py")
    if state.get("version") not in READABLE_VERSIONS:
        raise UserError(f"{path} has model format version {state.get('version')}, this code reads "
                        f"{', '.join(map(str, READABLE_VERSIONS))}; refit with this code")
    for key in REQUIRED_KEYS:
        if key not in state:
            raise UserError(f"{path} has no '{key}' entry; the file is damaged: refit or restore it")
    keys = STATS_KEYS[state["version"]]
    missing = [key for key in keys if not isinstance(state["stats"], dict) or key not in state["stats"]]
    if missing:
        raise UserError(f"{path} has no 'stats' entry '{missing[0]}'; {DAMAGED}")
    config = config_from_state(state, path)
    problem = tensor_problem(state, config) or sums_file_problem(path, state, config)
    if problem:
        raise UserError(f"{path}: {problem}; {DAMAGED}")
    return state


def sums_file_problem(path: Path, state: dict, config: Config) -> str | None:
    """Format 3: what is wrong with the sums file it names, or None. Its name is made the file's full
    path in `state`, for RunningStats.from_state to read it wherever the model file was moved."""
    name = state["stats"].get("sum_zz_file")
    if name is None:
        return None
    if not isinstance(name, str) or Path(name).name != name:
        return "its sums file entry is not a file name"
    sums = path.parent / name
    h, w = feature_size(config.model_size, config.backbone)
    expected = h * w * config.k * (config.k + 1) // 2 * 4
    if not sums.is_file():
        return f"its sums file {sums} is missing (a model fitted in blocks is the two files together)"
    if sums.stat().st_size != expected:
        return f"its sums file {sums} has {sums.stat().st_size:,} bytes, not the {expected:,} of its config"
    state["stats"]["sum_zz_file"] = str(sums.absolute())
    return None


def tensor_problem(state: dict, config: Config) -> str | None:
    """What is wrong with the file's tensors for its config (type, dtype, shape), or None."""
    F, k = feature_dim(config.backbone, config.layers), config.k
    if config.approx not in ("full", "global") and k > F:
        return f"its config has k {k} > F = {F} of {config.backbone}"
    d = F if config.approx in IDENTITY else k  # W = I for these: their sums are of all F channels
    h, w = feature_size(config.model_size, config.backbone)  # a tiled model's: one tile's
    rows = 1 if config.approx == "global" else h * w  # global: one (F, F) sum, packed as a single row
    stats = state["stats"]
    expected: dict[str, tuple[Any, tuple[int, ...]]] = {
        "W": (state["W"], (F, d)), "stats shift": (stats["shift"], (h * w, d)),
        "stats sum_z": (stats["sum_z"], (h * w, d))}
    if "sum_zz_file" in stats:  # format 3: checked by sums_file_problem
        pass
    elif "sum_zz_packed" in stats:
        expected["stats sum_zz_packed"] = (stats["sum_zz_packed"], (rows, d * (d + 1) // 2))
    else:  # format 1
        expected["stats sum_zz"] = (stats["sum_zz"], (d, d) if config.approx == "global" else (h * w, d, d))
    problems = [f"{name} is not a tensor" if not isinstance(t, torch.Tensor) else
                f"{name} is {t.dtype}, not floating point" if not t.is_floating_point() else
                f"{name} has shape {tuple(t.shape)}, its config (k {k}, {config.backbone}, layers "
                f"{','.join(map(str, config.layers))}, input {config.input_size[0]} x {config.input_size[1]}) "
                f"needs {shape}" if tuple(t.shape) != shape else None
                for name, (t, shape) in expected.items()]
    n = stats["n"]
    if not (isinstance(n, int) or (isinstance(n, torch.Tensor) and n.dim() == 0 and not n.is_floating_point())) \
            or int(n) < 0:
        problems.append("stats n is not a count of images")
    fitted = state.get("fitted")
    if fitted is not None and not (isinstance(fitted, torch.Tensor) and fitted.dtype == torch.int64
                                   and fitted.dim() == 1):
        problems.append("fitted is not a list of int64 image digests")
    backbone = state["backbone"]
    if not isinstance(backbone, dict) or not (is_reference(backbone) or
                                              all(isinstance(t, torch.Tensor) for t in backbone.values())):
        problems.append("backbone is neither tensors nor named ImageNet weights")
    thresholds = state.get("thresholds") or {}
    if not isinstance(thresholds, dict) or not all(isinstance(v, (int, float)) for v in thresholds.values()):
        problems.append("thresholds are not numbers")
    if not isinstance(state.get("meta") or {}, dict):
        problems.append("meta is not a mapping")
    problems.append(calibration_problem(state.get("calibration") or {}))
    return next((p for p in problems if p), None)


def calibration_problem(calibration: Any) -> str | None:
    """What is wrong with a calibration entry (models/calibration.py, pipeline/calibrate.py), or None."""
    if not isinstance(calibration, dict):
        return "calibration is not a mapping"
    if not calibration:
        return None
    n = calibration.get("n")
    if calibration.get("rule") not in RULES or not isinstance(n, int) or n < 1:
        return f"calibration has rule {calibration.get('rule')!r} and n {n!r}"
    for key in ("scores", "maxima"):
        t = calibration.get(key)
        if not (isinstance(t, torch.Tensor) and t.is_floating_point() and tuple(t.shape) == (n,)):
            return f"calibration {key} is not {n} scores"
    return None


def check_backbone_tensors(path: str | Path, expected: dict[str, torch.Tensor], stored: dict) -> None:
    """The stored backbone's tensors against the architecture's: the first missing, unexpected or
    misshapen one named in one line (load_state_dict's own error is many)."""
    missing = [key for key in expected if key not in stored]
    extra = [key for key in stored if key not in expected]
    wrong = [key for key, t in expected.items() if key in stored and stored[key].shape != t.shape]
    for what, keys in (("has no backbone tensor", missing), ("has an unknown backbone tensor", extra)):
        if keys:
            raise UserError(f"{path} {what} '{keys[0]}' ({len(keys)} in all); {DAMAGED}")
    if wrong:
        raise UserError(f"{path}: backbone tensor '{wrong[0]}' has shape {tuple(stored[wrong[0]].shape)}, expected "
                        f"{tuple(expected[wrong[0]].shape)}; {DAMAGED}")


def referenced_backbone(path: str | Path, state: dict) -> FeatureExtractor | None:
    """The backbone a model file names by reference (ImageNet weights), checked against the digest it
    was fitted with; None for a file that holds its backbone's tensors."""
    config, reference = config_from_state(state, path), state["backbone"]
    if not is_reference(reference):
        return None
    _, cache = imagenet_weights(config.backbone)
    try:
        extractor = build_extractor(config.backbone, "imagenet", config.seed, config.layers, config.pre_relu)
    except UserError:
        raise SettingError(f"{literal(path)} names torchvision's ImageNet weights ({literal(reference['weights'])}) "
                           f"instead of holding them, and they are not usable at {literal(cache)}: download "
                           f"{literal(reference['url'])} to that path (fitting with $embed_backbone stores "
                           "them in the file)") from None
    if extractor.imagenet_digest != reference["sha256"]:
        raise UserError(f"{path} was fitted with other weights than {cache} holds (their sha256 differs); "
                        f"restore that file from {reference['url']}, or refit")
    return extractor


def config_from_state(state: dict, path: str | Path = "the model file") -> Config:
    """The stored config, checked: a field of a newer release, a missing or ill-typed value is one line."""
    config = state["config"]
    if not isinstance(config, dict):
        raise UserError(f"{path}: its config is not a mapping; {DAMAGED}")
    unknown = [key for key in config if key not in CONFIG_FIELDS]
    if unknown:
        raise UserError(f"{path} was written by a newer release (unknown field {unknown[0]}); update this checkout")
    try:
        values = {**config, "image_size": size(config.get("image_size", Config.image_size)),
                  "crop": size(config["crop"]) if config.get("crop") else None,
                  # files written before tiles have neither
                  "tile": size(config["tile"]) if config.get("tile") else None,
                  "tile_stride": size(config["tile_stride"]) if config.get("tile_stride") else None,
                  "layers": tuple(int(i) for i in config.get("layers", ALL_LAYERS))}
        result = Config(**values)
    except (TypeError, ValueError) as error:
        raise UserError(f"{path}: its config does not read ({error}); {DAMAGED}") from None
    problem = config_problem(result)
    if problem:
        raise UserError(f"{path}: its config has {problem}; {DAMAGED}")
    return result


def size(value) -> tuple[int, int]:
    if isinstance(value, (str, bytes)) or len(value) != 2:
        raise ValueError(f"size {value!r} is not (H, W)")
    return cast(tuple[int, int], tuple(int(v) for v in value))  # two: checked above


def config_problem(c: Config) -> str | None:
    defaults = Config()
    for f in fields(Config):  # each value of its default's type (crop: a size or None, checked by size())
        value, default = getattr(c, f.name), getattr(defaults, f.name)
        kinds = (int, float) if isinstance(default, float) else type(default)
        wrong_bool = isinstance(value, bool) != isinstance(default, bool)  # bool is an int to isinstance
        if default is not None and (not isinstance(value, kinds) or wrong_bool):
            return f"{f.name} {value!r}"
    if c.backbone not in BACKBONES:
        return f"backbone {c.backbone!r}, not one of {', '.join(BACKBONES)}"
    if c.approx not in APPROXIMATIONS:
        return f"approx {c.approx!r}"
    if not c.layers or any(i not in ALL_LAYERS for i in c.layers):
        return f"layers {c.layers}"
    if c.k < 1 or min(c.image_size) < 1 or (c.crop and min(c.crop) < 1):
        return f"k {c.k}, image size {c.image_size}, crop {c.crop}"
    if c.tile_stride and not c.tile:
        return f"tile_stride {c.tile_stride} without a tile"
    if c.tile and c.stride and not all(0 < t <= s <= n for t, s, n in zip(c.stride, c.tile, c.input_size)):
        return f"tile {c.tile}, tile_stride {c.tile_stride} for a {c.input_size} input"
    return None
