"""How much memory this process may use, and sizes as people write them (--max-memory 8G)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from common import UserError

GiB = 1 << 30
MARGIN = GiB  # left to the rest of the machine by the default budget


def resident_bytes() -> int:
    """This process's resident memory now (Linux /proc; elsewhere the peak so far)."""
    try:
        text = Path("/proc/self/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) * 1024  # type: ignore[union-attr]
    except (OSError, AttributeError):
        import resource  # not on Windows; there the estimate starts from 0

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if os.name != "nt" else 0


def default_budget() -> int:
    """What this process may grow to: what it holds plus its share of the memory available (the machine's,
    or its container's limit), less a margin for the rest of the machine. Under torchrun the processes on
    one machine (LOCAL_WORLD_SIZE) each peak at once: each gets an equal share."""
    available = _meminfo("MemAvailable")
    limit = _cgroup_room()
    room = min(v for v in (available, limit) if v is not None) if (available or limit) else None
    if room is None:
        raise UserError("cannot tell this machine's available memory; pass --max-memory, e.g. --max-memory 16G")
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return resident_bytes() + (room - MARGIN) // local


def _meminfo(key: str) -> int | None:
    try:
        match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def _cgroup_room() -> int | None:
    """A container's memory limit less what it uses (cgroup v2), None without one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) - used


def parse_bytes(text: str) -> int:
    """--max-memory's value: bytes, or a number with K, M, G or T (powers of 1024), e.g. 8G, 1.5T."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.I)
    if not match or float(match.group(1)) <= 0:
        raise UserError(f"--max-memory {text}: pass a size such as 8G, 512M or 16000000000")
    scale = 1024 ** " KMGT".index(match.group(2).upper() or " ")
    return int(float(match.group(1)) * scale)


def shown(nbytes: int) -> str:
    return f"{nbytes / GiB:.2f} GiB" if nbytes >= GiB / 10 else f"{nbytes / (1 << 20):.0f} MiB"
