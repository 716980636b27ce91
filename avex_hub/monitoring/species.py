"""A species list: one scientific name a line, checked against the labels at hand.

Blank lines and lines starting with ``#`` are skipped; names are matched exactly after trimming spaces, and a name
that differs only in case or spacing is matched with a note. A name not among the labels is an error that lists
the closest labels (typos such as "Strix alucco"), so a misspelt species never silently drops out of a survey.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

__all__ = ["read_species", "match_species"]


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


def match_species(names: list[str], labels: list[str], *, where: str = "species list",
                  lines: list[int] | None = None) -> list[str]:
    """``names`` as they are written in ``labels`` (same order, duplicates dropped); ValueError naming every name
    that is not a label (with its line in ``lines``), each with its closest matches."""
    by_key = {}
    for label in labels:
        by_key.setdefault(_key(label), label)
    out, unknown = [], []
    for line, name in zip(lines or range(1, len(names) + 1), names):
        label = by_key.get(_key(name))
        if label is None:
            close = difflib.get_close_matches(name, labels, n=3, cutoff=0.6)
            unknown.append(f"line {line}: {name!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close
                                                       else " (no similar label)"))
        elif label not in out:
            out.append(label)
    if unknown:
        raise ValueError(f"{where}: {len(unknown)} name(s) are not labels of these scores: {'; '.join(unknown)}; fix "
                         "the spelling (scientific names as in the label map)")
    if not out:
        raise ValueError(f"{where}: no species names in it; write one scientific name a line")
    return out


def read_species(path: str | os.PathLike, labels: list[str]) -> list[str]:
    """The species of the file at ``path`` checked against ``labels`` (see :func:`match_species`)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; save the species list as UTF-8") from None
    kept = [(i, line.strip()) for i, line in enumerate(lines, start=1)
            if line.strip() and not line.strip().startswith("#")]
    return match_species([name for _, name in kept], labels, where=str(path), lines=[i for i, _ in kept])
