"""Text every writer accepts: UTF-8 checks, file names with undecodable bytes, CSV cells no spreadsheet runs."""
from __future__ import annotations

import os
from pathlib import Path


def utf8_problem(text: str) -> str | None:
    """None for text a UTF-8 file can hold; else the text as shown (a file name in another encoding)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return None


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
