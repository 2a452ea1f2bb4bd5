"""Where a run's files go, committed whole or not at all.

A category's files (model.pt, scores.npz, metrics.json) are written into a hidden staging folder
beside the category folder and renamed into place only when all of them are complete, so a failed,
killed or concurrent run never leaves partial results and never touches the previous ones. The
staging folder's name carries host and process id: a later run recognises a dead run's leftovers
and removes them (or restores the previous results, if the kill fell between the two renames of a
replacement). A replacement (--overwrite) replaces only the files a run writes: anything else in the
folder (the user's notes, the visualizer's report.pdf) is carried into the new one, hard-linked where
the file system allows. Folders a failed run created and left empty are removed (`remove_empty`).
"""
from __future__ import annotations

import errno
import os
import shutil
import socket
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from common import UserError, no_space
from results import RESULT_FILES

STAGING, OLD = "staging", "old"


def _tag() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _sibling(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{_tag()}"


def _owner_is_dead(path: Path, target: Path) -> bool | None:
    """True for a leftover of a dead process on this host; None when its owner cannot be judged here."""
    for kind in (STAGING, OLD):
        prefix = f".{target.name}.{kind}-"
        if not path.name.startswith(prefix):
            continue
        parts = path.name[len(prefix):].rsplit("-", 2)  # host-pid-token; a host name may hold dashes
        if len(parts) != 3 or not parts[1].isdigit() or parts[0] != socket.gethostname():
            return None
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False
    return None


def clean_stale(target: Path) -> list[str]:
    """Removes what dead runs left around `target`; returns notes on leftovers it could not judge."""
    notes: list[str] = []
    if not target.parent.is_dir():
        return notes
    for kind in (OLD, STAGING):  # restore before deleting: an OLD without its target is the only copy
        for path in sorted(target.parent.glob(f".{target.name}.{kind}-*")):
            dead = _owner_is_dead(path, target)
            if dead is None:
                notes.append(f"{path} was left by a run on another host; remove it once that run has ended")
            elif dead and kind == OLD and not target.exists():
                os.replace(path, target)
            elif dead:
                shutil.rmtree(path, ignore_errors=True)
    if target.is_dir():  # temp files of a killed atomic write inside the folder itself (older versions)
        for tmp in target.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    return notes


def holds_results(target: Path) -> bool:
    return target.is_dir() and any(not p.name.startswith(".") for p in target.iterdir())


def stage(target: Path) -> Path:
    """A new, empty staging folder beside `target`."""
    for attempt in range(3):
        staging = _sibling(target, STAGING)
        try:
            staging.mkdir(parents=True)
            return staging
        except FileNotFoundError:  # a failed run sharing the experiment removed the empty parent meanwhile
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def foreign_files(target: Path, owned: Iterable[str] = RESULT_FILES) -> list[str]:
    """What `target` holds that no run writes (the user's files, the visualizer's report.pdf)."""
    if not target.is_dir():
        return []
    owned = set(owned)
    return sorted(p.name for p in target.iterdir()
                  if p.name not in owned and not (p.name.startswith(".") and p.name.endswith(".tmp")))


def _carry(source: Path, dest: Path) -> None:
    """`source` at `dest` too: hard links (instant, no space) where the file system has them, else copies.
    The original stays where it is until the commit's rename, so a kill at any point loses none of it."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError:
            shutil.copy2(src, dst, follow_symlinks=False)

    try:
        if source.is_dir() and not source.is_symlink():
            shutil.copytree(source, dest, symlinks=True, copy_function=link)
        elif source.is_symlink():
            os.symlink(os.readlink(source), dest)
        else:
            link(str(source), str(dest))
    except shutil.Error as e:  # copytree gathers its errors into one, without an errno
        reason = e.args[0][0][2] if e.args and isinstance(e.args[0], list) and e.args[0] else e
        raise UserError(f"cannot keep {source} beside the new results ({reason}); move it away and run again") \
            from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise no_space(dest, source.stat().st_size) from None
        raise


def discard(staging: Path | None) -> None:
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)


def check_free(target: Path, overwrite: bool, elsewhere: str = "another --experiment") -> None:
    """Refuses to replace results another run committed meanwhile (checked again by `commit`)."""
    if holds_results(target) and not overwrite:
        raise UserError(f"{target} was written by another run meanwhile; pass --overwrite or {elsewhere}")


def commit(staging: Path, target: Path, overwrite: bool, elsewhere: str = "another --experiment",
           owned: Iterable[str] | None = RESULT_FILES) -> None:
    """Moves the complete staging folder to `target`; the previous results go only once it is in place.

    Without `overwrite` the rename itself is the claim: rename() replaces only an empty folder, so of
    two runs committing at once exactly one wins and the other is told (`elsewhere`: what to pass instead).
    With it, what the old folder holds beyond the `owned` names (the files a run writes) comes along;
    `owned=None`: the folder is the run's alone and is replaced whole.
    """
    taken = UserError(f"{target} was written by another run meanwhile; pass --overwrite or {elsewhere}")
    if not overwrite:
        try:
            os.rename(staging, target)
            return
        except OSError as error:
            occupied = error.errno in (errno.ENOTEMPTY, errno.EEXIST)
            if not occupied or holds_results(target):
                discard(staging)
                if occupied:
                    raise taken from None
                raise
        # only hidden files there (no results of any run): set them aside as a replacement would
    elif owned is not None:
        for name in foreign_files(target, owned):
            _carry(target / name, staging / name)
    old = None
    if target.exists():
        old = _sibling(target, OLD)
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        if old is not None and not target.exists():
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def new_experiment(base: Path = Path("runs")) -> Path:
    """base/<date-time>, created exclusively: two runs started in the same second get different folders."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        folder = base / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise UserError(f"could not create a new experiment folder under {base}; pass --experiment")


def absent(folder: Path) -> list[Path]:
    """`folder` and its parents that do not exist yet: what a run writing there will have created."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_empty(folders: Iterable[Path]) -> None:
    """Removes the folders a failed run created, deepest first, where they are still empty."""
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:  # not empty (another run's results, a file the user put there) or gone: kept
            pass
