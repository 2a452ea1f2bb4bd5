"""Small pieces every entry point shares: the user-facing error type, atomic writes, safe CSV cells."""
from __future__ import annotations

import errno
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

# Read once, at import: reading the umask means setting it, and a thread creating a file meanwhile
# (the background writers, the cache) would get the temporary value.
_UMASK = os.umask(0)
os.umask(_UMASK)


class UserError(Exception):
    """Bad input the user can fix. Entry points print its one-line message and exit with 2."""


def one_line(error: BaseException) -> str:
    """The user-facing line of an error, also when a DataLoader worker re-raised it with a traceback."""
    text = str(error).strip()
    if "Original Traceback" in text:  # torch wraps worker exceptions; the original message is last
        text = text.splitlines()[-1]
        prefix = f"{UserError.__module__}.{UserError.__name__}: "
        text = text[len(prefix):] if text.startswith(prefix) else text.split(": ", 1)[-1]
    return text.splitlines()[0] if text else type(error).__name__


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call write(tmp_path) on a temp file beside `path`, then rename it into place.

    A crash leaves either the old file or none, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp made it owner-only; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
            np.savez(f, **arrays)  # uncompressed: float16 score maps barely compress, and zlib costs seconds
    atomic_write(path, write)


# A cell a spreadsheet would run as a formula: Excel, LibreOffice and Google Sheets evaluate these.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A value as a CSV cell that no spreadsheet evaluates (OWASP's rule: a leading quote).

    Numbers are written by the callers as plain digits, so a negative number ("-0.5") is kept as it is.
    """
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_START) and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() == text


def printable(path: str | Path) -> str:
    """A file name as text every writer accepts: bytes that are not UTF-8 (a Linux name such as b'\\xff.png',
    held by Python as lone surrogates) become \\xff escapes, so CSV cells and plot titles never fail on it."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")

# What the OS says when an output cannot be written, as the user-facing reason and what to do.
_WRITE_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENAMETOOLONG: "file name too long",
}


def os_error_line(error: OSError) -> str | None:
    """One line for an OSError the user can act on (full disk, read-only folder, name too long), else None."""
    reason = _WRITE_ERRORS.get(error.errno or 0)
    if reason is None:
        return None
    where = error.filename if error.filename is not None else "an output file"
    return f"cannot write {where}: {reason}; free space, fix the permissions or choose another output folder"


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_cli(main: Callable[[], int]) -> None:
    """Runs an entry point: a UserError becomes one line on stderr and exit status 2.

    SIGTERM (what schedulers and torchrun send) becomes SystemExit, so cleanup code runs and no
    staging or temp file outlives the process; Ctrl-C prints one line and exits 130.
    """
    signal.signal(signal.SIGTERM, _terminate)
    try:
        sys.exit(main())
    except UserError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        line = os_error_line(error)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
