"""Events, not windows: windows of one label above its threshold merged into timed events.

Merging: per file, channel and label, positive windows (score >= the label's threshold) that overlap or lie at most
``gap_s`` apart form one run (:func:`avex_hub.audio.intervals.merge_intervals`); a run is one event with its
``windows`` count and the ``max_score``/``mean_score`` of its positive windows.

Boundary rule: an event spans its positive windows, from the first one's start to the last one's end. Tolerance,
for a detector that fires when a window holds at least half of a call (what a reviewer listening to the window
says; the benchmark's ideal detector): the starts of one call's positive windows lie within one window length of
each other, so its event is at most two windows long (one hop less unless a window edge meets the call's middle
exactly), which is at most the call plus one window and one hop when the hop is half the window; the event contains
the call when the call is at most ``2 * (window - hop)`` long, and a longer one sticks out by less than a hop at
each end. A detector that fires on any overlap gives events that contain the call and are up to the call plus two
windows. Tighter rules (the span where the positive windows overlap most) suit only that second kind of detector:
on the benchmark's probe scores they left part of most calls outside their events (README, "Monitoring
programmes").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

import numpy as np

from ..audio.intervals import merge_intervals
from .scores import ScoreTable

__all__ = ["Event", "find_events", "placed", "write_events", "read_events", "events_settings", "write_event_tables",
           "EVENT_COLUMNS"]

EVENT_COLUMNS = ["file", "channel", "label", "start_s", "end_s", "windows", "max_score", "mean_score",
                 "max_probability", "start_time", "end_time", "site", "latitude", "longitude", "flag"]
RAVEN_HIGH_FREQ_HZ = 8000.0  # the model hears 0-8 kHz


@dataclass(frozen=True)
class Event:
    """One event; ``max_probability`` is the calibrated probability of ``max_score`` (None uncalibrated), the
    time and site fields are filled from the recordings table (:func:`avex_hub.monitoring.events.placed`)."""

    file: str
    channel: int
    label: str
    start_s: float
    end_s: float
    windows: int
    max_score: float
    mean_score: float
    max_probability: float | None = None
    start_time: str = ""
    end_time: str = ""
    site: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    flag: str = ""


def _group_events(table: ScoreTable, rows: np.ndarray, label: str, column: int, threshold: float,
                  gap_s: float) -> list[Event]:
    starts, ends = table.start_s[rows], table.end_s[rows]
    scores = table.scores[rows, column]
    positive = scores >= threshold
    if not positive.any():
        return []
    runs = merge_intervals(starts[positive], ends[positive], gap=gap_s)
    pos_index = np.flatnonzero(positive)
    out = []
    for run in range(int(runs.max()) + 1):
        members = pos_index[runs == run]
        start, end = float(starts[members].min()), float(ends[members].max())
        out.append(Event(str(table.file[rows[0]]), int(table.channel[rows[0]]), label, start, end, len(members),
                         float(scores[members].max()), float(scores[members].mean())))
    return out


def _groups(table: ScoreTable) -> list[np.ndarray]:
    """Row indices of each (file, channel), sorted by start time."""
    codes: dict[tuple, int] = {}
    group = np.array([codes.setdefault(key, len(codes)) for key in zip(table.file.tolist(), table.channel.tolist())],
                     dtype=np.int64)
    order = np.lexsort((table.start_s, group))
    return np.split(order, np.flatnonzero(np.diff(group[order])) + 1) if len(order) else []


def find_events(table: ScoreTable, thresholds: Mapping[str, float], *, gap_s: float = 0.0,
                calibration=None) -> list[Event]:
    """Events of every label in ``thresholds`` (``{label: score threshold}``), sorted by file, channel, start.

    ``gap_s``: positive windows at most this far apart join one event. ``calibration``: a
    :class:`avex_hub.monitoring.calibration.Thresholds` whose models give ``max_probability``.
    """
    if not (np.isfinite(gap_s) and gap_s >= 0):
        raise ValueError(f"gap must be a number of seconds >= 0, got {gap_s}")
    for label, value in thresholds.items():
        table.index(label)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"threshold of {label!r} must be a score in [0, 1], got {value}")
    events = []
    for rows in _groups(table):
        for label, value in thresholds.items():
            events += _group_events(table, rows, label, table.index(label), value, gap_s)
    if calibration is not None:
        events = [replace(e, max_probability=calibration.probability(e.label, e.max_score)) for e in events]
    return sorted(events, key=lambda e: (e.file, e.channel, e.start_s, e.label))


def placed(events: list[Event], recordings: Mapping[str, "object"]) -> list[Event]:
    """``events`` with absolute times, site and position from ``recordings`` (``{file: Recording}``)."""
    from .times import iso

    out = []
    for e in events:
        r = recordings.get(e.file)
        if r is None:
            out.append(e)
            continue
        out.append(replace(e, start_time=iso(r.time_at(e.start_s)), end_time=iso(r.time_at(e.end_s)), site=r.site,
                           latitude=r.latitude, longitude=r.longitude, flag=r.flag))
    return out


def _settings_path(path) -> Path:
    return Path(f"{path}.settings.json")


def write_events(path: str | os.PathLike, events: list[Event], *, settings: dict | None = None) -> int:
    """The events CSV (:data:`EVENT_COLUMNS`); ``settings`` (the labels searched, thresholds, gap, the scores'
    source) go to the sidecar ``<path>.settings.json``, so presence tables know the species never detected."""
    import json

    from ..embed.outputs import atomic_path
    from .tables import write_table

    if settings is not None:
        with atomic_path(_settings_path(path), ".json") as tmp:
            tmp.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
    return write_table(path, EVENT_COLUMNS, ([getattr(e, c) for c in EVENT_COLUMNS] for e in events))


def events_settings(path: str | os.PathLike) -> dict:
    """The sidecar settings of an events CSV (``{}`` when it has none)."""
    import json

    sidecar = _settings_path(path)
    return json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}


def read_events(path: str | os.PathLike) -> list[Event]:
    """Events written by :func:`write_events`."""
    from .tables import read_table
    from .times import parse_time

    _, rows = read_table(path, required=tuple(EVENT_COLUMNS[:8]))
    out = []
    for line, row in rows:
        try:
            numbers = {k: float(row[k]) for k in ("start_s", "end_s", "max_score", "mean_score")}
            count, channel = int(row["windows"]), int(row["channel"])
            probability = float(row["max_probability"]) if row.get("max_probability") else None
            position = [float(row[k]) if row.get(k) else None for k in ("latitude", "longitude")]
        except ValueError:
            raise ValueError(f"{path}, line {line}: a number column holds text; was the file edited?") from None
        if row.get("start_time"):
            parse_time(row["start_time"], what=f"{path}, line {line}: start_time")
        out.append(Event(row["file"], channel, row["label"], numbers["start_s"], numbers["end_s"], count,
                         numbers["max_score"], numbers["mean_score"], probability, row.get("start_time", ""),
                         row.get("end_time", ""), row.get("site") or None, *position, row.get("flag", "")))
    return out


def _raven_text(value) -> str:
    from ..embed.outputs import text_cell

    return text_cell("" if value is None else str(value)).replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def write_event_tables(folder: str | os.PathLike, events: list[Event], files: list[str]) -> list[Path]:
    """One Raven Pro selection table per file of ``files`` (header only where it has no event): one selection per
    event, the label in the ``Species`` annotation column, then scores, window count, times and site."""
    from ..embed.outputs import atomic_path, raven_names

    names = raven_names(files)
    header = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
              "Species", "Max Score", "Mean Score", "Windows", "Max Probability", "start_time", "end_time", "site"]
    written = []
    for file in files:
        target = Path(folder) / names[file]
        rows = [e for e in events if e.file == file]
        with atomic_path(target, ".txt") as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                handle.write("\t".join(header) + "\n")
                for number, e in enumerate(rows, start=1):
                    fields = [number, "Spectrogram 1", 1 if e.channel < 0 else e.channel + 1, f"{e.start_s:.6f}",
                              f"{e.end_s:.6f}", "0.0", f"{RAVEN_HIGH_FREQ_HZ:.1f}", _raven_text(e.label),
                              f"{e.max_score:.6f}", f"{e.mean_score:.6f}", e.windows,
                              "" if e.max_probability is None else f"{e.max_probability:.6f}", e.start_time,
                              e.end_time, _raven_text(e.site)]
                    handle.write("\t".join(str(f) for f in fields) + "\n")
        written.append(target)
    return written
