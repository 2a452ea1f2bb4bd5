"""What produced a result: the command, the library versions, the machine, the code and the images.

Recorded in metrics.json and model.pt (`provenance`); `tools/summarize.py --provenance A B` shows where
two runs differ. Every field is plain JSON; what cannot be known (no git checkout, no CUDA) is None.
"""
from __future__ import annotations

import hashlib
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

from datasets.samples import Sample
from pipeline.plan import file_digest

REPOSITORY = Path(__file__).resolve().parent.parent


def provenance(command: list[str], device: torch.device, fit: list[Sample], val: list[Sample],
               test: list[Sample]) -> dict[str, Any]:
    """This run's provenance; `command`: train.py's arguments."""
    cuda = torch.version.cuda  # type: ignore[attr-defined]  # None on CPU-only builds
    return {
        "command": shlex.join(["train.py", *command]),
        "python": platform.python_version(), "torch": str(torch.__version__),  # plain str: weights_only reads it
        "torchvision": str(torchvision.__version__),
        "numpy": str(np.__version__), "cuda": cuda,
        "cudnn": torch.backends.cudnn.version() if cuda and torch.backends.cudnn.is_available() else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": cpu_model(), "git": git_state(),
        "files": {"fit": files_digest(fit), "val": files_digest(val), "test": files_digest(test)},
    }


def files_digest(samples: list[Sample]) -> str:
    """sha256 over the images' and masks' paths, sizes and mtimes, sorted: a touched, moved or rewritten
    file changes it, the order of listing does not."""
    keys = sorted(str(file_digest(p)) for s in samples for p in (s.image, s.mask) if p is not None)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_state() -> dict[str, Any] | None:
    """The checkout's commit and whether its tracked files differ from it; None outside a checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPOSITORY), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(key, value in a, value in b) for every leaf that differs, nested keys joined by dots."""
    found = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            found += differences(x, y, f"{prefix}{key}.")
        elif x != y:
            found.append((f"{prefix}{key}", x, y))
    return found


def command_of(argv: list[str] | None) -> list[str]:
    return list(sys.argv[1:] if argv is None else argv)
