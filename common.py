"""Small pieces every entry point shares: the user-facing error type, atomic writes, safe CSV cells."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import string
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, cast

import numpy as np

# Read once, at import: reading the umask means setting it, and a thread creating a file meanwhile
# (the background writers, the cache) would get the temporary value.
_UMASK = os.umask(0)
os.umask(_UMASK)


class UserError(Exception):
    """Bad input the user can fix. Entry points print its one-line message and exit with 2."""


class SettingError(UserError):
    """A setting that cannot work, worded without the command line: `$layers` in the message stands for
    the setting, shown as `layers` to Python callers and as its flag (`--layers`) on the command line
    (`flags_named`, run_cli). A path or other free text goes into the message through `literal()`."""

    def __init__(self, template: str):
        self.template = template
        super().__init__(self.worded(lambda name: name))

    def worded(self, name: Callable[[str], str]) -> str:
        return _Settings(self.template).safe_substitute(_Named(name))


class _Settings(string.Template):
    # lowercase names only: "$HOME" stays as it is
    idpattern, flags = r"[a-z][a-z_]*", 0  # type: ignore[assignment]  # typeshed wants a RegexFlag; 0 is none


class _Named(dict):
    def __init__(self, name: Callable[[str], str]):
        super().__init__()
        self.name = name

    def __missing__(self, key: str) -> str:
        return self.name(key)


def literal(text: object) -> str:
    """Free text (a path, a URL) inside a SettingError's message, its `$` kept as it is."""
    return str(text).replace("$", "$$")


@contextlib.contextmanager
def flags_named() -> Iterator[None]:
    """The command line's side of SettingError: inside, its message names the flags."""
    try:
        yield
    except SettingError as error:
        raise UserError(error.worded(flag_of)) from None


def flag_of(setting: str) -> str:
    """The command-line flag of a setting: `pre_relu` is --pre-relu; the backbone is --model."""
    return "--model" if setting == "backbone" else "--" + setting.replace("_", "-")


class OutputError(UserError, OSError):
    """An output that could not be written (a full disk, a read-only folder), in one line. Still an OSError
    with its errno, for callers that go on without the file (the decode cache)."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code  # type: ignore[assignment]  # mypy 1.13's typeshed: errno is int, not int | None


def one_line(error: BaseException) -> str:
    """The user-facing line of an error, also when a DataLoader worker re-raised it with a traceback."""
    text = str(error).strip()
    if "Original Traceback" in text:  # torch wraps worker exceptions; the original message is last
        text = text.splitlines()[-1]
        prefix = f"{UserError.__module__}.{UserError.__name__}: "
        text = text[len(prefix):] if text.startswith(prefix) else text.split(": ", 1)[-1]
    return text.splitlines()[0] if text else type(error).__name__


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


def utf8_problem(text: str) -> str | None:
    """None for text a UTF-8 file can hold; else the text as shown (a file name in another encoding)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return None


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


# A cell a spreadsheet would run as a formula: Excel, LibreOffice and Google Sheets evaluate these.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A value as a CSV cell that no spreadsheet evaluates (OWASP's rule: a leading quote).

    Numbers are written by the callers as plain digits, so a negative number ("-0.5") is kept as it is.
    Text that already starts with quotes before such a character gets one more, so `csv_text` can
    give back exactly what was written.
    """
    text = "" if value is None else str(value)
    return "'" + text if _is_formula(text.lstrip("'")) else text


def csv_text(cell: str) -> str:
    """The value a `csv_cell` cell was made from."""
    return cell[1:] if cell.startswith("'") and _is_formula(cell.lstrip("'")) else cell


def _is_formula(text: str) -> bool:
    return text.startswith(_FORMULA_START) and not _is_number(text)


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
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


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
    except SettingError as error:
        print(f"error: {error.worded(flag_of)}", file=sys.stderr)
        sys.exit(2)
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
