"""The declared versions: every lower bound pinned in requirements-floor.txt (which .ci/run installs and
tests), one source for the ONNX and OpenVINO floors, and the messages for a torch or onnxruntime below them."""
from __future__ import annotations

import importlib
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import metrics
import onnx_model
import openvino_model
from common import UserError

ROOT = Path(__file__).resolve().parents[1]
BOUND = re.compile(r"^([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^\s,;#]*)\s*(?:#.*)?$")
PIN = re.compile(r"^([A-Za-z0-9_.-]+)\s*==\s*([0-9][^\s,;#]*)\s*(?:#.*)?$")


def requirement_lines(name: str) -> list[str]:
    lines = (line.strip() for line in (ROOT / name).read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def parsed(name: str, pattern: re.Pattern) -> dict[str, str]:
    """{normalised name: version} of every requirement line that is not an -r include."""
    found = {}
    for line in requirement_lines(name):
        if line.startswith("-r "):
            continue
        match = pattern.match(line)
        assert match, f"{name}: {line!r} is not one name and version"
        found[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return found


def release(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in version.split("+")[0].split(".")]
    while len(parts) > 1 and parts[-1] == 0:  # 2.1 == 2.1.0
        parts.pop()
    return tuple(parts)


@pytest.mark.parametrize("floors, declaring", [
    ("requirements-floor.txt", ("requirements.txt", "requirements-dev.txt")),
    ("requirements-floor-export.txt", ("requirements-export.txt",)),
])
def test_floor_file_pins_each_declared_lower_bound(floors, declaring):
    declared = {name: bound for file in declaring for name, bound in parsed(file, BOUND).items()}
    pinned = parsed(floors, PIN)
    assert declared, "no lower bounds found"
    for name, bound in declared.items():
        assert name in pinned, f"{floors} does not pin {name} (declared >= {bound})"
        assert release(pinned[name]) == release(bound), f"{name}: declared >= {bound}, {floors} tests {pinned[name]}"


def test_one_source_for_the_export_requirements_and_no_install_of_the_package():
    dev = requirement_lines("requirements-dev.txt")
    assert "-r requirements.txt" in dev and "-r requirements-export.txt" in dev
    assert not {"onnx", "onnxscript", "onnxruntime", "openvino"} & set(parsed("requirements-dev.txt", BOUND))
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "optional-dependencies" not in pyproject  # `pip install .[export]` cannot work in a flat layout
    python = re.search(r'^requires-python = ">=(\d+)\.(\d+)"$', pyproject, re.MULTILINE)
    assert python and sys.version_info[:2] >= (int(python[1]), int(python[2]))
    readme = (ROOT / "README.md").read_text()
    assert not re.search(r"^pip install \.", readme, re.MULTILINE) and "export` extra" not in readme
    named = re.findall(r"pip install -r (\S+\.txt)", readme)
    assert "requirements-export.txt" in named and all((ROOT / name).is_file() for name in named)
    export = parsed("requirements-export.txt", BOUND)
    assert release(export["torch"])[:2] == onnx_model.TORCH_FLOOR
    assert release(export["onnxruntime"])[:2] == onnx_model.ONNXRUNTIME_FLOOR
    assert release(export["openvino"])[:2] == openvino_model.OPENVINO_FLOOR


def test_aupro_without_np_trapezoid_as_on_numpy_1():
    maps = np.random.default_rng(0).random((2, 16, 16))
    masks = np.zeros((2, 16, 16), bool)
    masks[0, 3:9, 4:10] = True
    expected = metrics.aupro(maps, masks, 0.3)
    calls = []

    def trapz(y, x):  # what numpy < 2 has instead of np.trapezoid
        calls.append(len(y))
        return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.delattr(np, "trapezoid", raising=False)  # numpy < 2 has none
            patch.setattr(np, "trapz", trapz, raising=False)
            importlib.reload(sys.modules["metrics.pro"])
            assert metrics.aupro(maps, masks, 0.3) == pytest.approx(expected, rel=1e-12)
    finally:
        importlib.reload(sys.modules["metrics.pro"])
    assert calls


def test_export_with_a_torch_older_than_the_floor_is_one_line():
    with pytest.raises(UserError, match=r"needs torch >= 2\.14 \(this is 2\.6\.0\+cu124\)"):
        onnx_model.check_torch_exports("2.6.0+cu124")
    onnx_model.check_torch_exports("2.14.1")


def fake_onnxruntime(version: str, message: str) -> types.ModuleType:
    module = types.ModuleType("onnxruntime")
    module.__version__ = version
    module.get_available_providers = lambda: ["CPUExecutionProvider"]

    def session(path, providers):
        raise RuntimeError(message)

    module.InferenceSession = session
    return module


@pytest.mark.parametrize("version, message, expected", [
    # what onnxruntime 1.17 says of a model tools/export.py wrote
    ("1.17.3", "[ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed: Unsupported model IR version: 10, "
     "max supported IR version: 9", r"onnxruntime 1\.17\.3 cannot load .* need onnxruntime >= 1\.18"),
    ("1.18.0", "Unsupported model IR version: 12, max supported IR version: 10",
     r"needs a newer onnxruntime than 1\.18"),
    ("1.18.0", "INVALID_PROTOBUF : Load model failed: Protobuf parsing failed.", r"not a readable ONNX model"),
])
def test_an_onnxruntime_too_old_for_the_model_says_which_it_needs(tmp_path, monkeypatch, version, message, expected):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x0a")
    monkeypatch.setitem(sys.modules, "onnxruntime", fake_onnxruntime(version, message))
    with pytest.raises(UserError, match=expected) as error:
        onnx_model.OnnxScorer(path)
    assert "\n" not in str(error.value)
