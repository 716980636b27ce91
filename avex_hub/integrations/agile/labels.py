"""Labels: the user's verdicts on windows, stored as hoplite annotations; read from a labelled hits CSV."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from perch_hoplite.db import datatypes as hoplite_types

from .archive import Archive
from .search import HIT_COLUMNS

LABEL_TYPES = {"positive": hoplite_types.LabelType.POSITIVE, "negative": hoplite_types.LabelType.NEGATIVE,
               "uncertain": hoplite_types.LabelType.UNCERTAIN}


def add_labels(archive: Archive, labels: Sequence[tuple[int, str, str]], *, provenance: str = "avex-hub") -> int:
    """Store ``(window_id, label, label_type)`` as hoplite annotations on those windows; a window's earlier
    annotation with the same label is replaced (relabelling). Returns the number stored."""
    stored = 0
    for window_id, label, kind in labels:
        label, kind = str(label).strip(), (str(kind).strip().lower() or "positive")
        if kind not in LABEL_TYPES:
            raise ValueError(f"window {window_id}: label_type must be one of {sorted(LABEL_TYPES)}, got {kind!r}")
        if not label:
            raise ValueError(f"window {window_id}: empty label")
        try:
            window = archive.db.get_window(int(window_id))
        except Exception as error:  # noqa: BLE001 - hoplite raises KeyError/ValueError depending on the backend
            raise ValueError(f"window {window_id} is not in {archive.path} (labels from another database?)") from error
        cursor = archive.db.db.cursor()
        cursor.execute("SELECT id, offsets FROM annotations WHERE recording_id = ? AND label = ?",
                       (window.recording_id, label))
        for annotation_id, offsets in cursor.fetchall():
            if np.allclose(offsets, window.offsets, atol=1e-6):
                archive.db.remove_annotation(annotation_id)
        archive.db.insert_annotation(window.recording_id, list(window.offsets), label, LABEL_TYPES[kind],
                                     provenance=provenance, handle_duplicates="allow")
        stored += 1
    archive.commit()
    return stored


def read_labels_csv(path: str | os.PathLike) -> list[tuple[int, str, str]]:
    """``(window_id, label, label_type)`` of the rows of a hits CSV whose ``label`` is filled in."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"window_id", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: columns {sorted(missing)} missing; label the CSV that `avex-hub search` or "
                             f"`avex-hub detect --uncertain` wrote (columns {', '.join(HIT_COLUMNS)})")
        out = []
        for line, row in enumerate(reader, start=2):
            if (row.get("label") or "").strip():
                try:
                    out.append((int(row["window_id"]), row["label"], row.get("label_type") or "positive"))
                except ValueError:
                    raise ValueError(f"{path} line {line}: window_id {row['window_id']!r} is not an integer") from None
    return out


def add_labels_csv(archive: Archive, path: str | os.PathLike) -> int:
    """Read a labelled hits CSV back into the archive (see :func:`add_labels`)."""
    return add_labels(archive, read_labels_csv(path), provenance=f"avex-hub csv {Path(path).name}")


def labelled_windows(archive: Archive) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(window_ids, targets [n, classes], class names)``: 1 positive, 0 negative, nan unknown.

    An annotation labels the window with the same offsets, else the windows of its recording that hold its
    midpoint. A window positive for one class is a negative for the classes it is not labelled with.
    """
    cursor = archive.db.db.cursor()
    cursor.execute("SELECT recording_id, offsets, label, label_type FROM annotations")
    annotations = [(r, o, lab, int(t)) for r, o, lab, t in cursor.fetchall()
                   if int(t) != int(hoplite_types.LabelType.UNCERTAIN)]
    names = sorted({a[2] for a in annotations})
    cursor.execute("SELECT id, recording_id, offsets FROM windows")
    by_recording: dict[int, list[tuple[int, list[float]]]] = {}
    for wid, rid, offsets in cursor.fetchall():
        by_recording.setdefault(rid, []).append((wid, offsets))
    marks: dict[int, dict[str, int]] = {}
    for rid, offsets, label, kind in annotations:
        windows = by_recording.get(rid, [])
        same = [w for w, o in windows if np.allclose(o, offsets, atol=1e-6)]
        middle = (offsets[0] + offsets[1]) / 2
        for w in same or [w for w, o in windows if o[0] <= middle < o[1]]:
            marks.setdefault(w, {})[label] = kind
    ids = np.array(sorted(marks), np.int64)
    targets = np.full((len(ids), len(names)), np.nan, np.float32)
    for row, w in enumerate(ids):
        positive = any(k == 1 for k in marks[w].values())
        for col, name in enumerate(names):
            kind = marks[w].get(name)
            targets[row, col] = kind if kind is not None else (0.0 if positive else np.nan)
    return ids, targets, names
