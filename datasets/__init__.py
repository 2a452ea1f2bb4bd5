"""Dataset registry: each loader module has categories(root, args) and load(root, category, args) -> Splits."""
from __future__ import annotations

import importlib
from types import ModuleType

MODULES = {
    "mvtecad": "datasets.mvtec",
    "synthetic": "datasets.synthetic",
    "kolektor": "datasets.kolektor",
    "kolektor2": "datasets.kolektor2",
    "mstc": "datasets.stc",
}
NEEDS_ROOT = {"mvtecad", "kolektor", "kolektor2", "mstc"}  # synthetic generates into a cache folder


def loader(name: str) -> ModuleType:
    return importlib.import_module(MODULES[name])
