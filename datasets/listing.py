"""Files named by a glob pattern, as `glob.glob(pattern, recursive=True)` lists them, except that a `**`
never follows a directory link into a folder it is already inside.

glob follows every directory link under `**`: a link to a parent folder (common in data trees assembled
with `ln -s`) makes it walk the same folders again at every depth, and two such links make that
exponential, so the listing never ends. Here a link whose target is one of the folders being walked is
skipped; every other link is followed, as glob does. Hidden names (leading dot) match only a pattern
component that starts with a dot, as in glob; `**` matches zero or more folders.
"""
from __future__ import annotations

import fnmatch
import glob
import os
import re
from collections.abc import Iterator
from pathlib import Path

_MAGIC = re.compile(r"[*?[]")


def glob_files(pattern: str) -> list[Path]:
    """Sorted paths of the files (not folders) that `pattern` matches, written as glob writes them."""
    if "**" not in pattern:  # a fixed depth: glob ends however the links point
        return sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    parts = pattern.split("/")
    n_fixed = next(i for i, part in enumerate(parts) if _MAGIC.search(part))
    base, rest = "/".join(parts[:n_fixed]), parts[n_fixed:]
    if parts[:n_fixed] == [""]:  # "/**/...": the root folder
        base = "/"
    hidden = any(part.startswith(".") for part in rest)  # else hidden folders cannot match: not walked
    found = []
    for names in _walk(base or os.curdir, hidden):
        if _matches(rest, names):
            path = Path(base, *names) if base else Path(*names)
            if path.is_file():
                found.append(path)
    return sorted(found)


def _walk(top: str, hidden: bool) -> Iterator[list[str]]:
    """Every entry below `top` as its list of names, following directory links except into an ancestor."""
    def visit(folder: str, names: list[str], ancestors: frozenset[str]) -> Iterator[list[str]]:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return  # unreadable or vanished: glob skips it too
        for entry in entries:
            if entry.name.startswith(".") and not hidden:
                continue
            yield [*names, entry.name]
            try:
                is_dir = entry.is_dir()  # follows links, as glob does
            except OSError:
                continue
            if is_dir:
                real = os.path.realpath(entry.path)
                if real not in ancestors:  # a link back up would repeat the same folders forever
                    yield from visit(entry.path, [*names, entry.name], ancestors | {real})
    yield from visit(top, [], frozenset({os.path.realpath(top)}))


def _matches(pattern: list[str], names: list[str]) -> bool:
    """Whether a path (its names) matches a pattern (its components), with glob's rules for `**` and dots."""
    if not pattern:
        return not names
    head = pattern[0]
    if head == "**":  # zero or more folders, none hidden
        return _matches(pattern[1:], names) or (bool(names) and not names[0].startswith(".")
                                                 and _matches(pattern, names[1:]))
    if not names or (names[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatchcase(names[0], head) and _matches(pattern[1:], names[1:])
