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
    "folder": "datasets.folder",
    "visa": "datasets.visa",
    "mvtecad2": "datasets.mvtecad2",
    "btad": "datasets.btad",
    "mpdd": "datasets.mpdd",
}
# synthetic generates into a cache folder; folder takes --normal-dir (relative to --dataroot if given)
NEEDS_ROOT = {"mvtecad", "kolektor", "kolektor2", "mstc", "visa", "mvtecad2", "btad", "mpdd"}


def loader(name: str) -> ModuleType:
    return importlib.import_module(MODULES[name])
