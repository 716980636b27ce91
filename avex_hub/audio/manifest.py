"""Manifests: a CSV of ``path``, ``label`` (``;`` joins several), optional ``start_s``/``end_s`` and ``split``, and
any other columns, read as :class:`avex_hub.audio.items.AudioItem` rows (every row named by its line in errors).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from .._files import decode_text
from .items import AudioItem, labels_once, split_labels
from ..storage.locations import is_url

__all__ = ["manifest_items", "rows_of_split", "SPLIT_SPELLINGS", "canonical_split"]

# The spellings of the three split names a manifest may use, any case, blanks around them ignored: each is read as
# the name the package uses. Any other value is the user's own name, kept as written (stripped).
SPLIT_SPELLINGS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                   "dev": "val", "test": "test", "testing": "test"}

# A dataset item's own fields: a manifest column of one of these names comes back as ``meta_<name>``.
_RESERVED = {"audio", "padding_mask", "label", "target", "path", "index", "start_s", "channel", "flags"}

def _manifest_text(path: Path) -> str:
    """A manifest's text: UTF-8, or UTF-8/16/32 with a byte-order mark; anything else is a ValueError saying how
    to re-save it (:func:`avex_hub._files.decode_text`)."""
    return decode_text(path.read_bytes(), path, what="the manifest")


def canonical_split(value) -> str:
    """``train``, ``val`` or ``test`` for one of their spellings (:data:`SPLIT_SPELLINGS`); any other value stripped
    but as given (an empty cell is ``""``)."""
    text = str(value).strip()
    return SPLIT_SPELLINGS.get(text.casefold(), text)


def manifest_items(csv_path: Path, *, base: Path, label_column: str, split) -> list[AudioItem]:
    """Every row of a manifest as an item, in file order and before any split filter; ValueError naming the line
    for a row that does not parse, and naming the columns found when ``path`` (or ``split``, when asked
    for) is missing."""
    if not csv_path.is_file():
        raise FileNotFoundError(f"manifest not found: {csv_path}")
    columns, rows = _manifest_rows(csv_path)
    if "path" not in columns:
        raise ValueError(f"{csv_path}: needs a 'path' column (and usually '{label_column}'); found {columns}")
    if split is not None and "split" not in columns:
        raise ValueError(f"{csv_path}: split={split!r} asked for but there is no 'split' column; found {columns}")
    labelled = label_column in columns
    items = [_manifest_item(row, f"{csv_path.name} line {line}", base, label_column if labelled else None)
             for row, line in rows]
    if not items:
        raise ValueError(f"{csv_path} has no rows; expected a header with 'path,{label_column}' and one row per file")
    return labels_once(items, str(csv_path))


def _manifest_rows(csv_path: Path) -> tuple[list[str], list[tuple[dict[str, str], int]]]:
    """A manifest's column names and its rows as ``({column: value}, line number)``, names and values stripped."""
    with io.StringIO(_manifest_text(csv_path), newline="") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:  # csv would keep the last of them without a word
            raise ValueError(f"{csv_path.name} line 1: the header names {repeated} more than once ({columns}); "
                             "rename or remove the repeated columns")
        rows = []
        for row in reader:
            if None in row:  # csv puts fields beyond the header under None
                raise ValueError(f"{csv_path.name} line {reader.line_num}: more fields than the header's "
                                 f"{len(reader.fieldnames)} columns (quote values containing commas)")
            rows.append(({k.strip(): (v or "").strip() for k, v in row.items()}, reader.line_num))
    return columns, rows


def _manifest_item(row: dict[str, str], where: str, base: Path, label_column: str | None) -> AudioItem:
    """One manifest row: its path under ``base``, labels from ``label_column`` (None: unlabelled), the seconds
    ``start_s``/``end_s`` (empty: the whole file), and every other column as ``extra`` (a column named like an
    item field, e.g. ``index``, comes back as ``meta_index``). ``where`` names the row in errors."""
    if not row.get("path"):
        raise ValueError(f"{where}: empty path")
    times = []
    for key in ("start_s", "end_s"):
        try:
            times.append(float(row[key]) if row.get(key) else None)
        except ValueError:
            raise ValueError(f"{where}: {key}={row[key]!r} is not a number of seconds") from None
    if any(t is not None and not (math.isfinite(t) and t >= 0) for t in times):
        raise ValueError(f"{where}: start_s/end_s must be finite seconds >= 0, got {times}")
    if None not in times and times[1] <= times[0]:
        raise ValueError(f"{where}: end_s={times[1]} must be after start_s={times[0]}")
    extra = {(k if k not in _RESERVED else f"meta_{k}"): v for k, v in row.items()
             if k not in ("path", label_column, "start_s", "end_s")}
    if "split" in extra:
        extra["split"] = canonical_split(extra["split"])
    labels = split_labels(row.get(label_column)) if label_column is not None else ()
    path = row["path"] if is_url(row["path"]) else base / row["path"]  # a URL row is read where it points
    return AudioItem(path, labels, times[0], times[1], extra, where)


def rows_of_split(items: list[AudioItem], split: str | Sequence[str] | None, csv_path: Path) -> list[AudioItem]:
    """The items whose ``split`` is ``split`` (or one of several, each a spelling :func:`canonical_split` reads); all
    of them for None or an empty sequence. A split asked for that no row has is a ValueError naming the splits
    present (a misspelt name would otherwise be left out without a word)."""
    wanted = {canonical_split(split)} if isinstance(split, str) else {canonical_split(s) for s in split or ()}
    if not wanted:
        return items
    present = {item.extra.get("split", "") for item in items}
    if wanted - present:
        raise ValueError(f"no rows of {csv_path} have split {sorted(wanted - present)}; splits present: "
                         f"{sorted(present)} (train, val and test may be spelt {sorted(SPLIT_SPELLINGS)}, any case)")
    kept = [item for item in items if item.extra.get("split") in wanted]
    return kept
