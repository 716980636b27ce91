"""The recordings table: one row per recording with its start, length, site and flags.

It is what turns seconds within a file into absolute time (``start_time = start + start_s``) and what presence
tables count as effort. Every recording given is in it: those without a known start or deployment too, flagged.

Columns: ``file, start_time, end_time, duration_s, time_source, recorder, site, latitude, longitude, time_zone,
flag, note``; times ISO 8601 with the offset the recorder used (empty when unknown); ``time_zone`` the site's zone
from the deployments table (empty when it gives none); ``flag`` is empty, ``no deployment``,
``outside deployment dates`` or ``start unknown, deployment dates not checked``; ``note`` says why a start is
unknown.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Mapping

from .deployments import Deployments
from .tables import read_table, write_table
from .times import RecordingStart, TimePattern, fixed, iso, parse_time, parse_zone, recording_start

__all__ = ["Recording", "describe_recordings", "write_recordings", "read_recordings", "by_file", "place_table",
           "table_windows", "place_window", "WindowClock", "COLUMNS", "PLACE_COLUMNS"]

COLUMNS = ["file", "start_time", "end_time", "duration_s", "time_source", "recorder", "site", "latitude", "longitude",
           "time_zone", "flag", "note"]
PLACE_COLUMNS = ["start_time", "end_time", "site", "latitude", "longitude"]  # what place_table appends to a row
_PLACE_KINDS = (str, str, str, float, float)  # the cells' kinds: text ("" or None when unknown), or a number or None


@dataclass(frozen=True)
class Recording:
    """One recording: ``start`` aware or None; ``site`` None outside every deployment."""

    file: str
    start: dt.datetime | None
    duration_s: float
    time_source: str = ""
    recorder: str | None = None
    site: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    time_zone: str | None = None
    flag: str = ""
    note: str = ""

    @property
    def end(self) -> dt.datetime | None:
        return self.time_at(self.duration_s)

    def time_at(self, seconds: float) -> dt.datetime | None:
        """The absolute time ``seconds`` into the recording (None when its start is unknown), in the start's offset
        (elapsed time, also across a daylight-saving change)."""
        return None if self.start is None else fixed(self.start) + dt.timedelta(seconds=float(seconds))


def describe_recordings(durations: Mapping[str, float], *, deployments: Deployments | None = None,
                        time_pattern: str | None = None, timezone: str | None = None) -> list[Recording]:
    """A :class:`Recording` per file of ``durations`` (``{path: seconds of audio}``), in that order.

    Starts come from :func:`avex_hub.monitoring.times.recording_start`; sites from ``deployments``.
    """
    pattern = TimePattern(time_pattern) if time_pattern else None
    zone = parse_zone(timezone) if timezone else None
    out = []
    for path, duration in durations.items():
        start = recording_start(path, time_pattern=pattern, timezone=zone)
        row, flag = (None, "") if deployments is None else deployments.match(path, start)
        out.append(_recording(path, float(duration), start, row, flag))
    return out


def _recording(path: str, duration: float, start: RecordingStart, row, flag: str) -> Recording:
    latitude, longitude = (row.latitude, row.longitude) if row is not None else (None, None)
    if latitude is None and longitude is None and start.position is not None:
        latitude, longitude = start.position
    site, zone = (None, None) if row is None else (row.site, row.timezone)
    return Recording(path, start.start, duration, start.source, start.recorder, site, latitude, longitude, zone, flag,
                     start.note)


def write_recordings(path: str | os.PathLike, recordings: list[Recording]) -> int:
    """Write the recordings table (:data:`COLUMNS`) atomically; returns the number of rows."""
    return write_table(path, COLUMNS, ([r.file, iso(r.start), iso(r.end), r.duration_s, r.time_source, r.recorder,
                                        r.site, r.latitude, r.longitude, r.time_zone, r.flag, r.note]
                                       for r in recordings))


def read_recordings(path: str | os.PathLike) -> list[Recording]:
    """Read a table written by :func:`write_recordings` (``avex-hub events`` writes one beside its events)."""
    _, rows = read_table(path, required=("file", "start_time", "duration_s", "site", "flag"))
    out = []
    for line, row in rows:
        where = f"{path}, line {line}"
        try:
            duration = float(row["duration_s"])
        except ValueError:
            raise ValueError(f"{where}: duration_s {row['duration_s']!r} is not a number") from None
        start = parse_time(row["start_time"], what=f"{where}: start_time") if row["start_time"] else None
        if start is not None and start.tzinfo is None:
            raise ValueError(f"{where}: start_time {row['start_time']!r} has no offset; write it with one (+02:00)")
        lat, lon = (float(row[k]) if row.get(k) else None for k in ("latitude", "longitude"))
        out.append(Recording(row["file"], start, duration, row.get("time_source", ""), row.get("recorder") or None,
                             row["site"] or None, lat, lon, row.get("time_zone") or None, row["flag"],
                             row.get("note", "")))
    return out


def by_file(recordings: list[Recording]) -> dict[str, Recording]:
    """``{file: recording}``; the same file twice is a ValueError."""
    out: dict[str, Recording] = {}
    for r in recordings:
        if r.file in out:
            raise ValueError(f"{r.file} appears twice in the recordings table; keep one row per file")
        out[os.fspath(r.file)] = r
    return out


# -- absolute time and place on the rows of any window table ------------------------------------------------------
def table_windows(path: str | os.PathLike) -> dict[str, float]:
    """``{file: end of its last row's window}`` of a window table (CSV or Parquet with ``file``, ``start_s`` and
    ``end_s`` columns: a classify, detect, scores or embed output), in the order files first appear."""
    out: dict[str, float] = {}
    for file, _, end in _window_columns(path):
        out[file] = max(out.get(file, 0.0), end)
    return out


def _window_columns(path):
    """``(file, start_s, end_s)`` of every row of the table at ``path``."""
    from pathlib import Path

    path = Path(path)
    where = f"{path}: a window table needs file, start_s and end_s columns (a classify, detect, scores or embed output)"
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        names = pq.ParquetFile(path).schema_arrow.names
        if not {"file", "start_s", "end_s"} <= set(names):
            raise ValueError(where)
        for batch in pq.ParquetFile(path).iter_batches(columns=["file", "start_s", "end_s"]):
            yield from zip(*(batch.column(c).to_pylist() for c in ("file", "start_s", "end_s")))
        return
    _, rows = read_table(path, required=("file", "start_s", "end_s"))
    for line, row in rows:
        try:
            yield row["file"], float(row["start_s"]), float(row["end_s"])
        except ValueError:
            raise ValueError(f"{path}, line {line}: start_s and end_s must be numbers") from None


def place_window(recording: "Recording | None", start: float, end: float) -> tuple:
    """The :data:`PLACE_COLUMNS` of the window ``start``-``end`` s of ``recording`` (empty and None without one)."""
    if recording is None:
        return "", "", None, None, None
    return (iso(recording.time_at(start)), iso(recording.time_at(end)), recording.site, recording.latitude,
            recording.longitude)


@dataclass(frozen=True)
class WindowClock:
    """The absolute time and place of windows: ``clock(file, start_s, end_s)`` is the tuple of cells of
    ``clock.columns`` (the first two, or all, of :data:`PLACE_COLUMNS`, as :func:`place_window` gives them) for
    the window ``start_s``-``end_s`` s of ``file``; empty (and None) for a file not in ``recordings`` or whose start
    is unknown. ``clock.kinds``: ``str`` or ``float`` per column. The writers of ``avex-hub classify|embed --times``
    and of ``avex-hub times --table`` take one (``clock=``):

        recordings = describe_recordings({f.path: f.duration_s for f in result.files}, timezone="Europe/Berlin",
                                         deployments=Deployments.read("deployments.csv"))
        result.to_parquet("emb.parquet", clock=WindowClock(by_file(recordings)))
    """

    recordings: Mapping[str, Recording]
    columns: tuple[str, ...] = tuple(PLACE_COLUMNS)

    def __post_init__(self):
        if tuple(self.columns) not in (tuple(PLACE_COLUMNS[:2]), tuple(PLACE_COLUMNS)):
            raise ValueError(f"a window clock's columns are {PLACE_COLUMNS[:2]} or {PLACE_COLUMNS}, got "
                             f"{list(self.columns)}")
        object.__setattr__(self, "columns", tuple(self.columns))

    @property
    def kinds(self) -> tuple[type, ...]:
        return _PLACE_KINDS[:len(self.columns)]

    def __call__(self, file: str, start_s: float, end_s: float) -> tuple:
        return place_window(self.recordings.get(file), start_s, end_s)[:len(self.columns)]


def place_table(source: str | os.PathLike, target: str | os.PathLike, recordings: Mapping[str, Recording]) -> int:
    """Write the window table at ``source`` to ``target`` (same format: CSV or Parquet) with :data:`PLACE_COLUMNS`
    appended to every row from ``recordings`` (``{file: Recording}``): the window's absolute start and end (ISO 8601
    with the offset; empty where the recording's start is unknown), its site and position (the cells of a
    :class:`WindowClock`). The source's own cells are copied as they are. Returns the number of rows.

    A table that has any of these columns already (``classify|embed --times``, ``detect``) is refused rather than
    timed again: its times came from one reading of the recordings, and a second set beside or over them would
    leave two answers, or none that the run's other outputs share; time the table of a run without ``--times``."""
    from pathlib import Path

    source, target = Path(source), Path(target)
    if source.resolve() == target.resolve():
        raise ValueError(f"{target} is the table being read; write the timed table to another file")
    if source.suffix.lower() != target.suffix.lower():
        raise ValueError(f"{source} is {source.suffix or 'without a suffix'}, --out {target.suffix or 'has none'}: "
                         "write the timed table in the same format")
    write = _place_parquet if source.suffix.lower() == ".parquet" else _place_csv
    return write(source, target, WindowClock(recordings))


def _refuse_timed(source, header: list[str]) -> None:
    taken = [c for c in PLACE_COLUMNS if c in header]
    if taken:
        raise ValueError(f"{source} already has the column(s) {', '.join(taken)}; it holds times already: time the "
                         "output of a run without --times, or run embed or classify again with --times and these "
                         "options (it resumes from <out>.parts/ and writes only --out)")


def _place_csv(source, target, clock: WindowClock) -> int:
    import csv

    from ..embed.outputs import atomic_path
    from .tables import cell

    places = (clock(f, s, e) for f, s, e in _window_columns(source))
    count = 0
    with open(source, newline="", encoding="utf-8-sig") as handle, atomic_path(target, ".csv") as tmp:
        reader = csv.reader(handle)
        header = next(reader, [])
        _refuse_timed(source, header)
        with open(tmp, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(header + list(clock.columns))
            for row, place in zip(reader, places):
                writer.writerow(row + [cell(v) for v in place])
                count += 1
    return count


def _place_parquet(source, target, clock: WindowClock) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..embed.outputs import atomic_path, clock_arrays, clock_fields

    data = pq.ParquetFile(source)
    _refuse_timed(source, data.schema_arrow.names)
    schema = data.schema_arrow
    for field in clock_fields(clock):
        schema = schema.append(field)
    count = 0
    with atomic_path(target, ".parquet") as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for batch in data.iter_batches():
            windows = (batch.column(c).to_pylist() for c in ("file", "start_s", "end_s"))
            writer.write_batch(pa.RecordBatch.from_arrays(batch.columns + clock_arrays(clock, *windows),
                                                          schema=schema))
            count += batch.num_rows
    return count
