"""An exported model (tools/export.py's .onnx) run by the OpenVINO runtime on the CPU: predict.py --runtime
openvino. OpenVINO reads the ONNX file itself (external data included) and its metadata (rt_info 'framework');
openvino is optional and imported only here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common import UserError
from onnx_model import ExportedScorer, check_file, version_of

# requirements-export.txt's floor (tests/test_versions.py keeps them equal): the oldest release that reads the
# graphs of every exporter requirements-export.txt allows (requirements-floor-export.txt says why)
OPENVINO_FLOOR = (2024, 1)
KEYS = ("format", "config", "thresholds", "meta", "tiling")


def install_line() -> str:
    return f"pip install -U 'openvino>={'.'.join(map(str, OPENVINO_FLOOR))}'"


class OpenVinoScorer(ExportedScorer):
    """config, thresholds, meta and predict() of SemiOrthogonal, the graph compiled by OpenVINO for the CPU."""

    def __init__(self, path: str | Path):
        try:
            import openvino
        except ImportError:
            raise UserError(f"--model {path} --runtime openvino needs OpenVINO: {install_line()}") from None
        path = Path(path)
        check_file(path)
        version = getattr(openvino, "__version__", "")  # 2026.4.1-22982-e213a147257-releases/2026/4
        if not hasattr(openvino, "Core") or version_of(version) < OPENVINO_FLOOR:
            floor = ".".join(map(str, OPENVINO_FLOOR))
            raise UserError(f"--runtime openvino needs OpenVINO >= {floor} (this is {version.split('-')[0] or 'older'}"
                            f"): {install_line()}")
        core = openvino.Core()
        try:
            model = core.read_model(str(path))
        except Exception as e:  # OpenVINO's messages run over many lines: name the file and the kind
            raise UserError(f"{path} is not an ONNX model OpenVINO {version.split('-')[0]} can read "
                            f"({type(e).__name__}); export it again, or pip install -U openvino") from None
        props = {key: str(model.get_rt_info(["framework", key]).astype(str)) for key in KEYS
                 if model.has_rt_info(["framework", key])}
        shape = [d.get_length() if d.is_static else None for d in model.inputs[0].get_partial_shape()]
        super().__init__(path, props, shape)
        # f32: on CPUs with bfloat16 units (AVX-512 BF16, AMX) OpenVINO computes in bfloat16 by default, which
        # moved the tests' maps by about 2% of their maximum; the exported graph is meant to score as the torch model
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        self.request = compiled.create_infer_request()
        self.ports = {output.get_any_name(): output for output in compiled.outputs}

    def run(self, outputs: list[str], name: str, array: np.ndarray) -> list[np.ndarray]:
        results = self.request.infer({name: array})  # copies: a tiled batch keeps each call's tile_maps
        return [np.asarray(results[self.ports[output]]) for output in outputs]
