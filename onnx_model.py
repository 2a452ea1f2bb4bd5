"""A fitted model as one ONNX file: export with torch.onnx, score with onnxruntime or OpenVINO (optional).

The graph takes `images` (N, 3, H, W), float32, normalised as in training (RGB in [0, 1], minus the
ImageNet mean, divided by its std; H x W the model's input size) and returns `maps` (N, H, W), the
smoothed score maps at input size, and `scores` (N,), their maxima. The batch size is dynamic. The
metadata (string key -> JSON) holds what a plain runtime needs beside the graph: the calibrated
thresholds and their calibration (its images' scores give p-values), the config, the normalisation.
A tiled model's graph (--tile) takes `tiles` (N, 3, S, S) of such
images and returns `tile_maps` (N, S, S), each tile's distances upsampled, unblurred; its metadata 'tiling'
says how a runtime puts them back together (ExportedScorer does, for onnxruntime here and OpenVINO in
openvino_model.py). onnx/onnxruntime/openvino are imported only where used, so the rest of the project runs
without them.
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
from pathlib import Path

import numpy as np
import torch

from common import UserError
from datasets.base import IMAGENET_MEAN, IMAGENET_STD
from models.config import Config
from models.model_file import config_from_state
from models.tiles import assemble, tile

FORMAT = "semiortho-onnx"
PROTOBUF_LIMIT = 2 * 1024 ** 3  # one ONNX protobuf cannot exceed 2 GB; beyond, weights go to <file>.data
INSTALL = "pip install -r requirements-export.txt"
# requirements-export.txt's floors: the oldest torch tested whose exporter writes our graph (2.6 fails on
# the dynamic batch), the oldest onnxruntime that loads what it writes (IR version 10, opset 20);
# tests/test_versions.py keeps them equal
TORCH_FLOOR = (2, 14)
ONNXRUNTIME_FLOOR = (1, 18)


def metadata(model) -> dict[str, str]:
    """The ONNX metadata_props of an exported SemiOrthogonal model."""
    # every Config field, as model.pt stores them: fields added later travel without a change here
    config = model.config.stored()
    return {
        "format": FORMAT,
        "config": json.dumps(config),
        "thresholds": json.dumps(dict(model.thresholds)),  # {} when fitted without validation images
        # rule, alpha, n and the n calibration scores: predict.py's p-values; {} for a model without them
        "calibration": json.dumps({key: value.tolist() if isinstance(value, torch.Tensor) else value
                                   for key, value in getattr(model, "calibration", {}).items()}),
        "meta": json.dumps(dict(model.meta)),
        "normalisation": json.dumps({"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "range": [0, 1],
                                     "channels": "RGB", "layout": "NCHW"}),
        "mahalanobis": "inverse Cholesky factor L^-1 (P, k, k): distance = |L^-1 (z - mu)|",
        **({"tiling": json.dumps(tiling(model.config))} if model.config.tile else {}),
    }


def tiling(config: Config) -> dict:
    """What a runtime does with a tiled model's tile_maps (models/tiles.py's `tile` and `stitch`)."""
    return {"tile": list(config.tile), "stride": list(config.stride), "input_size": list(config.input_size),
            "sigma": config.sigma, "truncate": 4.0,
            "steps": "cut each image into tiles at 0, stride, 2 stride, ... and one flush with the far edge; "
                     "average the tile_maps where tiles overlap; blur the map (Gaussian sigma, truncate, "
                     "reflected at the edges); the image score is its maximum"}


def export(model_path: str | Path, out: str | Path, external_data: bool = False, batch: int = 2) -> Path:
    """Writes model.pt as ONNX at `out` (and `out`.data when the weights go to external data)."""
    try:
        import onnxscript  # noqa: F401  # torch.onnx's exporter needs it; fail with the install line first
    except ImportError:
        raise UserError(f"exporting to ONNX needs onnx and onnxscript: {INSTALL}") from None
    check_torch_exports()
    from models.blocks import BlockedStats
    from models.semi_ortho import SemiOrthogonal
    from pipeline import outputs

    out = Path(out)
    if out.suffix != ".onnx":
        raise UserError(f"--out {out}: name the file *.onnx")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; pass a file name such as model.onnx")
    model = SemiOrthogonal.load(model_path, finalize=False, sums_in_memory=False)
    if isinstance(model.stats, BlockedStats):
        h, w = model.feature_size
        size = h * w * model.config.k ** 2 * 4 / 1e9
        raise UserError(f"{model_path} was fitted in blocks: its graph would hold L^-1 of {h * w} positions "
                        f"({size:.1f} GB); score it with predict.py, or fit shared tiles (--tile) to export")
    out.parent.mkdir(parents=True, exist_ok=True)
    for note in outputs.clean_stale(out):  # what killed exports left: their .data can be gigabytes
        print(f"warning: {note}", file=sys.stderr)
    # written in a staging folder beside `out` (named by host and process, as train.py's), then renamed:
    # a failure removes it, and a kill leaves it for the next export to recognise and remove
    staging = outputs.stage(out)  # before the minutes of export: a read-only folder fails now
    try:
        _write_graph(model, out, staging, external_data, batch)
    except OSError as error:
        if error.filename is None:  # onnx writes through file objects: name the folder
            error.filename = str(out.parent)
        raise
    finally:
        outputs.discard(staging)
    return out


class QuietAmbiguousAttributes(logging.Filter):
    """onnx_ir logs this once per empty attribute list of the graph (33 for ResNet-18): noise, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Attribute type is ambiguous because it is an empty sequence")


def _write_graph(model, out: Path, staging: Path, external_data: bool, batch: int) -> None:
    from models.export import ScoringGraph, TileGraph

    model.finalize(inverse=True)  # the graph scores by GEMM with L^-1
    model.stats = None  # 0.75 GB for WRN-50-2, k = 300: not needed by the graph
    tiled = model.config.tile is not None
    graph = (TileGraph if tiled else ScoringGraph)(model).eval()
    example = torch.zeros(batch, 3, *model.config.model_size)
    inputs, outputs = (["tiles"], ["tile_maps"]) if tiled else (["images"], ["maps", "scores"])
    quiet, ir_logger = QuietAmbiguousAttributes(), logging.getLogger("onnx_ir._convenience")
    ir_logger.addFilter(quiet)
    try:
        with torch.no_grad():
            program = torch.onnx.export(graph, (example,), dynamo=True, input_names=inputs,
                                        output_names=outputs, verbose=False,
                                        dynamic_shapes=({0: torch.export.Dim("batch")},))
        program.model.metadata_props.update(metadata(model))
        size = sum(t.numel() * t.element_size() for t in graph.state_dict().values())
        external = external_data or size > PROTOBUF_LIMIT * 0.9  # margin for the graph itself
        program.save(staging / out.name, external_data=external)
    finally:
        ir_logger.removeFilter(quiet)
    data = Path(f"{out}.data")
    # the graph and its weights are one result: no SIGTERM or Ctrl-C between their two renames
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        if (staging / data.name).exists():
            os.replace(staging / data.name, data)
        elif data.exists():
            data.unlink()  # a stale weights file from an earlier external-data export
        os.replace(staging / out.name, out)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def metadata_json(path: Path, props: dict[str, str], key: str, default: object = None) -> dict:
    """One metadata entry, a JSON object; a missing or unreadable one is a one-line error."""
    if key not in props:
        if default is not None:  # optional (meta: files exported before it existed)
            return default
        raise UserError(f"{path} has no '{key}' metadata; export it again with tools/export.py")
    try:
        value = json.loads(props[key])
    except ValueError:
        raise UserError(f"{path}: its metadata '{key}' is not JSON; export it again with tools/export.py") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: its metadata '{key}' is not a JSON object; export it again with tools/export.py")
    return value


def version_of(text: str) -> tuple[int, ...]:
    """(major, minor) of a version string: 2.14.1+cpu -> (2, 14), 2024.0.0-14509-34caeefd078 -> (2024, 0)."""
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def check_torch_exports(version: str = torch.__version__) -> None:
    """UserError unless this torch has the exporter tools/export.py uses (torch.onnx dynamo, Dim)."""
    if version_of(version) < TORCH_FLOOR:
        floor = ".".join(map(str, TORCH_FLOOR))
        raise UserError(f"exporting to ONNX needs torch >= {floor} (this is {version}): {INSTALL}")


def load_error(path: Path, error: Exception, runtime: str) -> UserError:
    """The one line for a model onnxruntime `runtime` would not open: which onnxruntime it needs when
    the installed one is older than what tools/export.py writes, else an unreadable file."""
    floor = ".".join(map(str, ONNXRUNTIME_FLOOR))
    if version_of(runtime) < ONNXRUNTIME_FLOOR:
        return UserError(f"{path}: onnxruntime {runtime} cannot load the models tools/export.py writes; "
                         f"they need onnxruntime >= {floor}: pip install -U 'onnxruntime>={floor}'")
    if re.search(r"IR version|opset", str(error), re.IGNORECASE):  # written by a newer exporter
        return UserError(f"{path} needs a newer onnxruntime than {runtime} (its IR version or opset is newer): "
                         f"pip install -U onnxruntime")
    return UserError(f"{path} is not a readable ONNX model ({type(error).__name__}); export it again")


class ExportedScorer:
    """The part of SemiOrthogonal predict.py uses (config, thresholds, meta, predict) for a graph tools/export.py
    wrote, whatever runtime runs it: a subclass opens the file, hands its metadata here and runs the graph."""

    def __init__(self, path: Path, props: dict[str, str], input_shape: list) -> None:
        if props.get("format") != FORMAT:
            raise UserError(f"{path} is not a semi-orthogonal model written by tools/export.py")
        self.config: Config = config_from_state({"config": metadata_json(path, props, "config")}, path)
        self.thresholds: dict[str, float] = metadata_json(path, props, "thresholds")
        self.meta: dict = metadata_json(path, props, "meta", {})
        self.calibration: dict = metadata_json(path, props, "calibration", {})  # exports before it have none
        if not all(isinstance(v, (int, float)) for v in self.calibration.get("scores", [])):
            raise UserError(f"{path}: its metadata 'calibration' is damaged; export it again with tools/export.py")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.thresholds.values()):
            raise UserError(f"{path}: its metadata 'thresholds' are not numbers; export it again with tools/export.py")
        size = self.config.model_size  # (batch, 3, H, W), the batch symbolic; a tiled model's graph takes tiles
        if list(input_shape[2:]) != list(size):
            raise UserError(f"{path}: its graph takes {' x '.join(map(str, input_shape[2:]))} images, its metadata "
                            f"says {size[0]} x {size[1]}; export it again with tools/export.py")

    def run(self, outputs: list[str], name: str, array: np.ndarray) -> list[np.ndarray]:
        """The graph's `outputs` for `array` fed to its input `name`."""
        raise NotImplementedError

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> score maps (B, H, W) and image scores (B,), as SemiOrthogonal.predict."""
        c = self.config
        if c.tile is None or c.stride is None:
            array = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
            maps, scores = self.run(["maps", "scores"], "images", array)
            return torch.from_numpy(maps), torch.from_numpy(scores)
        # the tiles of a batch at most as many at a time as it has images, as SemiOrthogonal fits and scores
        parts = [self.run(["tile_maps"], "tiles", np.ascontiguousarray(chunk.numpy(), dtype=np.float32))[0]
                 for chunk in tile(images.detach().cpu().float(), c.tile, c.stride).split(images.shape[0])]
        stitched = assemble(torch.from_numpy(np.concatenate(parts)), c)
        return stitched, stitched.flatten(1).amax(dim=1)


def check_file(path: Path) -> None:
    if not path.is_file():
        raise UserError(f"no model file {path}; pass the model.onnx that tools/export.py wrote")


class OnnxScorer(ExportedScorer):
    """An exported model run by onnxruntime (on CUDA where the device is and onnxruntime has it)."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu"):
        try:
            import onnxruntime
        except ImportError:
            raise UserError(f"--model {path}: running an ONNX model needs onnxruntime: pip install onnxruntime") \
                from None
        path = Path(path)
        check_file(path)
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=providers)
        except Exception as e:
            raise load_error(path, e, onnxruntime.__version__) from None
        super().__init__(path, self.session.get_modelmeta().custom_metadata_map, self.session.get_inputs()[0].shape)

    def run(self, outputs: list[str], name: str, array: np.ndarray) -> list[np.ndarray]:
        return self.session.run(outputs, {name: array})


def scorer(path: str | Path, device: torch.device | str = "cpu", runtime: str | None = None) -> ExportedScorer:
    """The exported model at `path` run by `runtime`: onnxruntime (the default) or openvino (on the CPU)."""
    if runtime == "openvino":
        from openvino_model import OpenVinoScorer

        return OpenVinoScorer(path)
    return OnnxScorer(path, device)
