"""Dataset registry: every module (or package) of datasets/ that declares `DATASET = DatasetSpec(...)`.

Adding a dataset is adding such a module; nothing here lists them. Modules that declare none (readers,
transforms, the cache...) are not imported by the search.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from pathlib import Path

from datasets.spec import DatasetSpec

_DECLARES = re.compile(r"^DATASET\s*[:=]", re.MULTILINE)


@functools.cache
def specs() -> tuple[DatasetSpec, ...]:
    """Every dataset, in the order of their `order` (then name)."""
    found: dict[str, DatasetSpec] = {}
    for info in pkgutil.iter_modules(__path__):
        folder = Path(getattr(info.module_finder, "path", __path__[0]))
        source = folder / info.name / "__init__.py" if info.ispkg else folder / f"{info.name}.py"
        if not source.is_file() or not _DECLARES.search(source.read_text(encoding="utf-8")):
            continue
        declared = importlib.import_module(f"{__name__}.{info.name}").DATASET
        if declared.name in found:  # two modules claiming one --dataset name: a mistake to see at once
            raise RuntimeError(f"datasets/{info.name} and another module both declare dataset {declared.name!r}")
        found[declared.name] = declared
    return tuple(sorted(found.values(), key=lambda s: (s.order, s.name)))


def names() -> list[str]:
    return [s.name for s in specs()]


def find(name: str) -> DatasetSpec | None:
    """The dataset called `name`, or None (e.g. a name a model file recorded that this version lacks)."""
    return next((s for s in specs() if s.name == name), None)


def spec(name: str) -> DatasetSpec:
    found = find(name)
    if found is None:
        raise KeyError(f"no dataset {name!r} (known: {', '.join(names())})")
    return found
