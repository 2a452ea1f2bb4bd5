"""Outputs written whole: atomic writes, and what a full disk or an unwritable folder says."""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

from common.errors import _NO_SPACE, _WRITE_ERRORS, OutputError, UserError, os_error_line

# Read once, at import: reading the umask means setting it, and a thread creating a file meanwhile
# (the background writers, the cache) would get the temporary value.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[str], object], size: int | None = None) -> None:
    """Call write(tmp_path) on a temp file beside `path`, then rename it into place.

    A crash leaves either the old file or none, never a half-written one. A full disk or a folder that
    cannot be written becomes an OutputError naming the folder (`size`: the bytes the file will take, if
    known).
    """
    path = Path(path)
    tmp, written, refused = None, 0, None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp made it owner-only; results are meant to be shared
        os.replace(tmp, path)
    except BaseException as error:
        written = _size_of(tmp)
        full = isinstance(error, Exception) and _is_full(error, path.parent)  # judged before the temp file goes
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if full:
            refused = errno.ENOSPC
        elif isinstance(error, OSError) and not isinstance(error, UserError) and error.errno in _WRITE_ERRORS:
            refused = error.errno
        else:
            raise
    if refused is None:
        return
    # Raised out here, where the failed write's frames are gone: torch.save keeps its file open in them,
    # and the space of the removed temp file comes back only once it is closed. (refused: a _WRITE_ERRORS key)
    if refused == errno.ENOSPC:
        raise no_space(path, size, written)
    raise OutputError(cast(str, os_error_line(OSError(refused, os.strerror(refused), str(path)))), refused)


def _size_of(path: str | None) -> int:
    try:
        return os.path.getsize(path) if path is not None else 0
    except OSError:
        return 0


def _is_full(error: Exception, folder: Path) -> bool:
    """Whether a failed write ran out of space. torch.save reports a full disk as a RuntimeError with no
    errno ("unexpected pos"), so a failure on a device with (next to) nothing left counts as one too."""
    if isinstance(error, OSError):
        return error.errno in _NO_SPACE
    if not isinstance(error, RuntimeError):
        return False
    try:
        return shutil.disk_usage(_existing(folder)).free < _NEARLY_FULL
    except OSError:
        return False


_NEARLY_FULL = 1 << 20


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _shown_folder(folder: Path) -> Path:
    # A hidden folder is a staging folder that is removed on the way out: name the one the user chose.
    while folder.name.startswith(".") and folder != folder.parent:
        folder = folder.parent
    return folder


def no_space(path: str | Path, size: int | None, written: int = 0) -> OutputError:
    """The one line for a file that did not fit: the folder, what the file needs and what is free."""
    path = Path(path)
    folder = _shown_folder(path.parent)
    try:
        free = f"{shutil.disk_usage(_existing(folder)).free:,} free"
    except OSError:
        free = "free space unknown"
    needs = f"about {size:,} bytes" if size else f"more than {written:,} bytes"
    return OutputError(f"no space left in {folder}: writing {path.name} needs {needs}, {free}; "
                       "free space there or choose another output folder", errno.ENOSPC)


def write_problem(path: str | Path) -> str | None:
    """Why `path` (a file, or a folder to write into) could not be written, or None.

    Checked before any work is done; where the path does not exist yet, its nearest existing parent is
    checked. A read-only mount stops root too (access(2) answers EROFS), which is what a test can rely on.
    """
    path = Path(path)
    existing = _existing(path)
    if existing != path and not existing.is_dir():
        return f"{existing} is not a folder"
    mode = os.W_OK | os.X_OK if existing.is_dir() else os.W_OK
    if os.access(existing, mode):
        return None
    try:
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return f"{existing} is on a read-only file system" if read_only else f"{existing} is not writable for this user"


def write_json(path: str | Path, data: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, default=_json_default)
            f.write("\n")
    atomic_write(path, write)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            # uncompressed: float16 score maps barely compress, and zlib costs seconds
            np.savez(f, **arrays)  # type: ignore[arg-type]  # mypy matches **arrays against allow_pickle: bool
    atomic_write(path, write)
