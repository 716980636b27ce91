"""A species list: one scientific name a line, checked against the labels at hand.

Blank lines and lines starting with ``#`` are skipped; names are matched exactly after trimming spaces, and a name
that differs only in case or spacing is matched with a note. A name not among the labels is an error that lists
the closest labels (typos such as "Strix alucco"; :func:`avex_hub.labels.match_species`, shared with
``classify --species``), so a misspelt species never silently drops out of a survey.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..labels import match_species

__all__ = ["read_species"]


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
