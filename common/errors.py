"""The user-facing errors: bad input in one line (`UserError`, exit 2), settings worded by their names
(`SettingError`), outputs that could not be written (`OutputError`), and the one line of an OSError."""
from __future__ import annotations

import contextlib
import errno
import string
from collections.abc import Callable, Iterator


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
