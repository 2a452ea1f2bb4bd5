"""What script/run.sh asks a dataset module: `python -m datasets.sweep NAME` (run from the repository root).

Prints one value a line: `sweep NAME` (so the script can tell this answer from anything else), the
variable naming the root, the variable renaming its folder, the folder's default name, then the
train.py flags the sweep passes before the caller's, one a line. Only the light dataset modules are
imported (no torch), so the answer is quick.
"""
from __future__ import annotations

import sys

from common import UserError, run_cli
from datasets import find, specs


def settings(name: str) -> list[str]:
    found = find(name)
    if found is None or found.env_var is None or found.folder_name is None:
        sweeps = [s.name for s in specs() if s.env_var is not None and s.folder_name is not None]
        raise UserError(f"script/run.sh has no sweep for dataset {name!r}; pass one of {', '.join(sweeps)}")
    return [f"sweep {found.name}", found.env_var, found.name_var or "", found.folder_name, *found.sweep_args]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise UserError("usage: python -m datasets.sweep DATASET")
    print("\n".join(settings(args[0])))
    return 0


if __name__ == "__main__":
    run_cli(main)
