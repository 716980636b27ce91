"""CSV files of the monitoring steps: written atomically and read with their line numbers.

Cells read as meant in spreadsheets and R: numbers in plain decimal notation, as short as reads back the same
(``1234567.5``, never ``1.23457e+06``), missing values as ``NA`` where a table has them (presence), text that would
start a formula (``=``, ``+``, ``-``, ``@``) behind a ``'``, file names that are not valid UTF-8 with their odd bytes
as ``\\xNN``.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from ..embed.outputs import atomic_path, text_cell

__all__ = ["cell", "write_table", "read_table"]

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value) -> str:
    """One CSV cell: text guarded, numbers plain, None (and NaN) empty."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        # the shortest text that reads back as the same number (float32 values by their own precision)
        return "" if math.isnan(value) else np.format_float_positional(value, trim="-")
    text = text_cell(str(value))
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_table(path: str | os.PathLike, header: list[str], rows: Iterable[Iterable]) -> int:
    """Write ``rows`` under ``header`` to ``path`` atomically; returns the number of rows."""
    count = 0
    with atomic_path(path, ".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for row in rows:
                writer.writerow([cell(value) for value in row])
                count += 1
    return count


def read_table(path: str | os.PathLike, required: tuple[str, ...] = ()) -> tuple[list[str], list[tuple[int, dict]]]:
    """``(header, [(line number, {column: text})])`` of a CSV (UTF-8, a byte-order mark allowed); a missing
    ``required`` column is a ValueError naming the file. A leading ``'`` our writers put before text is removed."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = [(reader.line_num, {k.strip(): _unguard(v) for k, v in raw.items() if k is not None})
                    for raw in reader]
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start}); save it as CSV UTF-8") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}: missing the column(s) {', '.join(missing)} (found {', '.join(header) or 'none'}); "
                         "was it written by avex-hub, or were columns renamed?")
    return header, rows


def _unguard(value) -> str:
    text = "" if value is None else str(value)
    return text[1:] if text.startswith("'") and text[1:2] in _FORMULA_START else text
