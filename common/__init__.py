"""Small pieces every entry point shares: the user-facing error types (errors.py), atomic writes (files.py),
safe text and CSV cells (text.py), and run_cli, which turns them into one line and an exit status."""
from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from common.errors import OutputError, SettingError, UserError, flag_of, flags_named, literal, one_line, os_error_line
from common.files import atomic_write, no_space, save_npz, write_json, write_problem
from common.text import csv_cell, csv_text, printable, utf8_problem

__all__ = ["OutputError", "SettingError", "UserError", "atomic_write", "csv_cell", "csv_text", "flag_of",
           "flags_named", "literal", "no_space", "one_line", "os_error_line", "printable", "run_cli", "save_npz",
           "utf8_problem", "write_json", "write_problem"]


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
