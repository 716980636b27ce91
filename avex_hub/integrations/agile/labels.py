"""Labels: the user's verdicts on windows, stored as hoplite annotations (recording, offsets, channel, label, type).

A label row names its window by the archive's identity and the window's own coordinates (file, channel, start,
end), never by a bare window id: a hits CSV from another archive, or from before the windows were embedded
again, cannot put labels on the wrong windows. A file is stored whole or not at all: rows that do not match are
refused by line number with the reason. A row with a label but an empty ``label_type`` is no verdict (what
``search --label`` and ``detect --uncertain`` prefill): nothing is stored for it, and it is counted.

:func:`export_labels` writes every annotation of an archive to a CSV that :func:`import_labels` reads back into
this or another archive of the same recordings (a re-indexed copy, a new window length), so a user can always
take their work out.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from perch_hoplite.db import datatypes as hoplite_types

from ..._files import decode_text
from .archive import Archive
from .places import window_places
from .store import recording_name

LABEL_TYPES = {"positive": hoplite_types.LabelType.POSITIVE, "negative": hoplite_types.LabelType.NEGATIVE,
               "uncertain": hoplite_types.LabelType.UNCERTAIN}
TYPE_NAMES = {int(v): k for k, v in LABEL_TYPES.items()}
EXPORT_COLUMNS = ("file", "channel", "start_s", "end_s", "label", "label_type", "provenance", "archive_id",
                  "start_time", "end_time")  # the last two: absolute time, empty where the start is unknown
TOLERANCE_S = 1e-6  # CSVs write times with 6 decimals; windows of one file and channel are a hop (>= 1 ms) apart
MAX_FILE_BYTES = 1 << 30
LISTED = 10  # reasons named in an error, line numbers in a report


class LabelsFileError(ValueError):
    """A labels file refused whole: ``problems`` are ``(line, reason)``; nothing of it was stored."""

    def __init__(self, message: str, problems: list[tuple[int, str]]) -> None:
        super().__init__(message)
        self.problems = problems


@dataclasses.dataclass
class LabelsReport:
    """What a labels file gave: ``stored`` labels; ``no_verdict``: line numbers of rows with a label but no
    ``label_type`` (nothing stored for them); ``blank``: rows with neither."""

    stored: int
    no_verdict: list[int] = dataclasses.field(default_factory=list)
    blank: int = 0

    def summary(self) -> str:
        text = f"stored {self.stored} labels"
        if self.no_verdict:
            lines = ", ".join(map(str, self.no_verdict[:LISTED])) + (", ..." if len(self.no_verdict) > LISTED else "")
            text += (f"; {len(self.no_verdict)} rows name a label but no label_type (lines {lines}): nothing stored "
                     "for them, write positive, negative or uncertain there")
        if self.blank:
            text += f"; {self.blank} rows left blank"
        return text


@dataclasses.dataclass(frozen=True)
class LabelRow:
    """One row of a labels file that names a label: its line, the window's coordinates, the verdict."""

    line: int
    file: str
    channel: int | None
    start_s: float
    end_s: float
    label: str
    label_type: str
    archive_id: str = ""
    provenance: str = ""


# -- reading a labels file ----------------------------------------------------------------------------------------
def _read_csv(path: str | os.PathLike, needed: Sequence[str]) -> list[tuple[int, dict]]:
    """``(line, row)`` of a CSV read with its encoding detected; ValueError naming missing columns."""
    from ..._files import read_capped

    text = decode_text(read_capped(path, MAX_FILE_BYTES, what="a labels CSV"), path, what="the labels file")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise LabelsFileError(f"{path}: columns {missing} missing (found {columns}); label the CSV that `avex-hub "
                              "search` or `avex-hub detect --uncertain` wrote, or give an `avex-hub export-labels` "
                              "file to import-labels", [])
    reader.fieldnames = columns
    return [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None}) for row in reader]


def _parse(line: int, row: dict, problems: list) -> LabelRow | None:
    """A row as a label, None for a row without one; a bad row adds ``(line, reason)`` to ``problems``."""
    label, kind = row.get("label", ""), row.get("label_type", "").lower()
    if not label:
        if kind:
            problems.append((line, f"label_type {kind!r} but no label"))
        return None
    if kind and kind not in LABEL_TYPES:
        problems.append((line, f"label_type must be one of {sorted(LABEL_TYPES)} or empty, got {kind!r}"))
        return None
    try:
        channel = None if row.get("channel", "") == "" else int(row["channel"])
        start, end = float(row["start_s"]), float(row["end_s"])
    except (KeyError, ValueError):
        problems.append((line, f"channel {row.get('channel')!r}, start_s {row.get('start_s')!r}, end_s "
                               f"{row.get('end_s')!r} are not numbers"))
        return None
    return LabelRow(line, row.get("file", ""), channel, start, end, label, kind, row.get("archive_id", ""),
                row.get("provenance", ""))


def _refuse(path, problems: list[tuple[int, str]]) -> LabelsFileError:
    listed = "; ".join(f"line {line}: {reason}" for line, reason in problems[:LISTED])
    more = f"; and {len(problems) - LISTED} more" if len(problems) > LISTED else ""
    return LabelsFileError(f"{path}: {len(problems)} rows refused, nothing stored from this file: {listed}{more}",
                           problems)


# -- finding what a row names ---------------------------------------------------------------------------------------
def _recording_of(archive: Archive, recordings: dict[str, int], file: str) -> int | None:
    if file in recordings:
        return recordings[file]
    return recordings.get(recording_name(file)) if file else None


def _windows_of(archive: Archive, recording: int) -> list[tuple[int, int, float, float]]:
    cursor = archive.db.db.cursor()
    cursor.execute("SELECT id, channel, offsets FROM windows WHERE recording_id = ?", (recording,))
    return [(wid, ch, o[0], o[1]) for wid, ch, o in cursor.fetchall()]


def _match_windows(archive: Archive, rows: list[LabelRow], problems: list) -> list[tuple[LabelRow, int, list[float], int]]:
    """``(row, recording, offsets, channel)`` of the window each row names, by the archive identity and the
    window's coordinates; a row naming no window of this archive adds its reason to ``problems``."""
    recordings = archive.recordings()
    cache: dict[int, list] = {}
    out = []
    for row in rows:
        if row.archive_id and row.archive_id != archive.identity:
            problems.append((row.line, f"the row is from archive {row.archive_id}, this is {archive.identity} "
                                       f"({archive.path}): label hits of this archive"))
            continue
        recording = _recording_of(archive, recordings, row.file)
        if recording is None:
            problems.append((row.line, f"file {row.file!r} is not in {archive.path}"))
            continue
        windows = cache.setdefault(recording, _windows_of(archive, recording))
        match = [w for w in windows if w[1] == row.channel and abs(w[2] - row.start_s) <= TOLERANCE_S
                 and abs(w[3] - row.end_s) <= TOLERANCE_S]
        if not match:
            problems.append((row.line, f"no window {row.start_s:g}-{row.end_s:g} s, channel {row.channel} of "
                                       f"{row.file} in {archive.path} (its windows differ: another window length or "
                                       "hop, or another archive)"))
            continue
        _, channel, start, end = match[0]
        out.append((row, recording, [start, end], channel))
    return out


# -- storing ----------------------------------------------------------------------------------------------------------
def _store(archive: Archive, recording: int, offsets: list[float], channel: int | None, label: str, kind: str,
           provenance: str) -> None:
    """One annotation, replacing an earlier one of the same window, channel and label (relabelling)."""
    cursor = archive.db.db.cursor()
    cursor.execute("SELECT id, offsets FROM annotations WHERE recording_id = ? AND label = ? AND channel IS ?",
                   (recording, label, channel))
    for annotation_id, old in cursor.fetchall():
        if np.allclose(old, offsets, atol=TOLERANCE_S):
            cursor.execute("DELETE FROM annotations WHERE id = ?", (annotation_id,))
    archive.db.insert_annotation(recording, list(offsets), label, LABEL_TYPES[kind], provenance=provenance,
                                 handle_duplicates="allow", channel=channel)


def add_labels(archive: Archive, labels: Sequence[tuple[int, str, str]], *, provenance: str = "avex-hub") -> int:
    """Store ``(window_id, label, label_type)`` (ids of this archive, as :class:`Hit` and ``window_table`` give
    them) as annotations on those windows and their channel; a window's earlier annotation with the same label
    is replaced (relabelling). All or nothing: ValueError for a bad row, before anything is stored."""
    checked = []
    for window_id, label, kind in labels:
        label, kind = str(label).strip(), str(kind).strip().lower()
        if kind not in LABEL_TYPES:
            raise ValueError(f"window {window_id}: label_type must be one of {sorted(LABEL_TYPES)}, got {kind!r}")
        if not label:
            raise ValueError(f"window {window_id}: empty label")
        checked.append((int(window_id), label, kind))
    with archive.writing("avex-hub label"):
        cursor = archive.db.db.cursor()
        for window_id, label, kind in checked:
            cursor.execute("SELECT recording_id, offsets, channel FROM windows WHERE id = ?", (window_id,))
            found = cursor.fetchone()
            if found is None:
                raise ValueError(f"window {window_id} is not in {archive.path} (labels from another database?)")
            _store(archive, found[0], found[1], found[2], label, kind, provenance)
    return len(checked)


def read_labels_csv(path: str | os.PathLike) -> tuple[list[LabelRow], LabelsReport, list[tuple[int, str]]]:
    """The rows of a labelled hits CSV: ``(verdicts, report of the rows without one, problems)``."""
    rows = _read_csv(path, ("file", "channel", "start_s", "end_s", "label", "label_type"))
    problems: list[tuple[int, str]] = []
    verdicts, report = [], LabelsReport(0)
    for line, row in rows:
        parsed = _parse(line, row, problems)
        if parsed is None:
            report.blank += not row.get("label") and not row.get("label_type")
        elif not parsed.label_type:
            report.no_verdict.append(line)
        else:
            verdicts.append(parsed)
    return verdicts, report, problems


def add_labels_csv(archive: Archive, path: str | os.PathLike) -> LabelsReport:
    """Store the verdicts of a labelled hits CSV (``label`` and ``label_type`` filled in) on the windows its rows
    name. LabelsFileError, with nothing stored, when a row names no window of this archive or is malformed."""
    verdicts, report, problems = read_labels_csv(path)
    with archive.writing("avex-hub label"):
        matched = _match_windows(archive, verdicts, problems)
        if problems:
            raise _refuse(path, sorted(problems))
        for row, recording, offsets, channel in matched:
            _store(archive, recording, offsets, channel, row.label, row.label_type, f"avex-hub csv {Path(path).name}")
    report.stored = len(matched)
    return report


# -- export and import ------------------------------------------------------------------------------------------------
def _annotations(archive: Archive, recordings: Sequence[int] | None = None) -> list[tuple]:
    cursor = archive.db.db.cursor()
    query = ("SELECT recordings.filename, annotations.channel, annotations.offsets, annotations.label, "
             "annotations.label_type, annotations.provenance, recordings.datetime, annotations.id FROM annotations "
             "JOIN recordings ON annotations.recording_id = recordings.id")
    if recordings is None:
        cursor.execute(query + " ORDER BY annotations.id")
        return cursor.fetchall()
    ids, rows = [int(r) for r in recordings], []
    for start in range(0, len(ids), 500):  # SQLite caps the number of parameters of one statement
        chunk = ids[start:start + 500]
        cursor.execute(query + f" WHERE recordings.id IN ({','.join('?' * len(chunk))})", chunk)
        rows += cursor.fetchall()
    return sorted(rows, key=lambda r: r[-1])


def export_labels(archive: Archive, path: str | os.PathLike, *, recordings: Sequence[int] | None = None) -> int:
    """Every annotation of the archive (or of ``recordings``, ids) as a CSV (``EXPORT_COLUMNS``; an empty channel
    means every channel of the window), written atomically. Returns the number of labels written."""
    from ...embed.outputs import atomic_path

    rows = _annotations(archive, recordings)
    with atomic_path(path, ".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(EXPORT_COLUMNS)
            times = window_places([(r[6], None, None, None, r[2][0], r[2][1]) for r in rows])
            for (file, channel, offsets, label, kind, provenance, _, _), place in zip(rows, times):
                writer.writerow([file, "" if channel is None else channel, _seconds(offsets[0]), _seconds(offsets[1]),
                                 label, TYPE_NAMES[int(kind)], provenance, archive.identity, *place[:2]])
    return len(rows)


def _seconds(value: float) -> str:
    """Plain decimal seconds that read back as the same float (no exponent, as every CSV of the package)."""
    return np.format_float_positional(float(value), trim="-")


def import_labels(archive: Archive, path: str | os.PathLike) -> LabelsReport:
    """Store the labels of an :func:`export_labels` file (from this archive or another one of the same recordings)
    with their own offsets, channel and provenance; one already there is replaced. LabelsFileError, with nothing
    stored, for a row whose file is not in this archive or that is malformed."""
    rows = _read_csv(path, EXPORT_COLUMNS[:6])
    problems: list[tuple[int, str]] = []
    parsed = []
    for line, row in rows:
        item = _parse(line, row, problems)
        if item is not None and not item.label_type:
            problems.append((line, "no label_type"))
        elif item is not None:
            parsed.append(item)
    with archive.writing("avex-hub import-labels"):
        recordings = archive.recordings()
        placed = []
        for row in parsed:
            recording = _recording_of(archive, recordings, row.file)
            if recording is None:
                problems.append((row.line, f"file {row.file!r} is not in {archive.path}"))
            else:
                placed.append((row, recording))
        if problems:
            raise _refuse(path, sorted(problems))
        for row, recording in placed:
            _store(archive, recording, [row.start_s, row.end_s], row.channel, row.label, row.label_type,
                   row.provenance or f"avex-hub import {Path(path).name}")
    return LabelsReport(len(placed))


def export_aside(archive: Archive, recordings: Sequence[int], why: str) -> Path | None:
    """The labels of ``recordings`` written to ``<archive>/<why>-labels-<time>.csv`` before they are removed
    (None when they have none)."""
    if not _annotations(archive, recordings):
        return None
    target = archive.path / f"{why}-labels-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.csv"
    export_labels(archive, target, recordings=recordings)
    return target


# -- training targets -------------------------------------------------------------------------------------------------
def labelled_windows(archive: Archive) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(window_ids, targets [n, classes], class names)``: 1 positive, 0 negative, nan unknown.

    An annotation labels the windows of its channel (every channel when it names none) with the same offsets,
    else those of its recording that hold its midpoint. A window positive for one class is a negative for the
    classes it is not labelled with.
    """
    cursor = archive.db.db.cursor()
    cursor.execute("SELECT recording_id, offsets, label, label_type, channel FROM annotations ORDER BY channel IS NOT "
                   "NULL, id")  # labels naming no channel first: a label of the channel itself overrides them
    annotations = [(r, o, lab, int(t), c) for r, o, lab, t, c in cursor.fetchall()
                   if int(t) != int(hoplite_types.LabelType.UNCERTAIN)]
    names = sorted({a[2] for a in annotations})
    marks: dict[int, dict[str, int]] = {}
    for wid, label, kind in _marked_windows(archive, annotations):
        marks.setdefault(wid, {})[label] = kind
    ids = np.array(sorted(marks), np.int64)
    targets = np.full((len(ids), len(names)), np.nan, np.float32)
    for row, w in enumerate(ids):
        positive = any(k == 1 for k in marks[w].values())
        for col, name in enumerate(names):
            kind = marks[w].get(name)
            targets[row, col] = kind if kind is not None else (0.0 if positive else np.nan)
    return ids, targets, names


def _marked_windows(archive: Archive, annotations: list[tuple]):
    """``(window_id, label, label_type)`` for each window an annotation applies to (see :func:`labelled_windows`)."""
    cursor = archive.db.db.cursor()
    cursor.execute("SELECT id, recording_id, offsets, channel FROM windows")
    by_recording: dict[int, list[tuple[int, list[float], int]]] = {}
    for wid, rid, offsets, channel in cursor.fetchall():
        by_recording.setdefault(rid, []).append((wid, offsets, channel))
    for rid, offsets, label, kind, channel in annotations:
        windows = [w for w in by_recording.get(rid, []) if channel is None or w[2] == channel]
        same = [w for w, o, _ in windows if np.allclose(o, offsets, atol=TOLERANCE_S)]
        middle = (offsets[0] + offsets[1]) / 2
        for w in same or [w for w, o, _ in windows if o[0] <= middle < o[1]]:
            yield w, label, kind


def labelled_window_ids(archive: Archive) -> np.ndarray:
    """Ids of the windows that carry any label (any class, any type): those a user has judged."""
    cursor = archive.db.db.cursor()
    cursor.execute("SELECT recording_id, offsets, label, label_type, channel FROM annotations")
    return np.array(sorted({w for w, _, _ in _marked_windows(archive, cursor.fetchall())}), np.int64)
