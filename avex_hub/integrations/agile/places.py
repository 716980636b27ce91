"""When and where each recording of an archive was made (schema version 3), and so each window's absolute time.

A recording's start is stored in hoplite's own ``recordings.datetime`` column (ISO 8601 with the offset the recorder
used, which hoplite reads with ``datetime.fromisoformat``; NULL when it is unknown, never a guess), its site and
position in the ``site``, ``latitude`` and ``longitude`` columns of ours. They are read by the monitoring commands'
own reading of recording starts (:func:`avex_hub.monitoring.recordings.describe_recordings`: GUANO, the AudioMoth
comment, file names, a ``time_pattern``, a ``timezone`` for local clocks, a deployments table), by ``avex-hub
index`` for the files it indexes and by the upgrade to version 3 for the files that are still there.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
from typing import Mapping

from ...monitoring.recordings import PLACE_COLUMNS, Recording, describe_recordings, place_window
from ...monitoring.times import iso

__all__ = ["audio_path", "read_places", "store_places", "fill_places", "window_places", "PLACE_COLUMNS"]

_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


def audio_path(name: str) -> str:
    """The file a recording name stands for (the reverse of
    :func:`avex_hub.integrations.agile.store.recording_name`)."""
    if "\\x" not in name or os.path.exists(name):
        return name
    return _ESCAPE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), name)  # os.fsdecode's surrogate escapes


def read_places(names: Mapping[str, float], *, deployments=None, time_pattern: str | None = None,
                timezone: str | None = None) -> dict[str, Recording]:
    """``{name: Recording}`` for the recording names of ``names`` (``{name: duration_s}``), read from their files
    (a file that is gone is read by its name only). ``deployments``: a
    :class:`~avex_hub.monitoring.deployments.Deployments`, or the path of its CSV."""
    from ...monitoring.deployments import Deployments

    if deployments is not None and not isinstance(deployments, Deployments):
        deployments = Deployments.read(deployments)
    paths = {audio_path(name): name for name in names}
    found = describe_recordings({p: names[n] for p, n in paths.items()}, deployments=deployments,
                                time_pattern=time_pattern, timezone=timezone)
    return {paths[r.file]: r for r in found}


def store_places(cursor: sqlite3.Cursor, recording_id: int, recording: Recording) -> None:
    """Write ``recording``'s start (NULL when unknown), site and position onto its row."""
    cursor.execute("UPDATE recordings SET datetime = ?, site = ?, latitude = ?, longitude = ? WHERE id = ?",
                   (iso(recording.start) or None, recording.site, recording.latitude, recording.longitude,
                    int(recording_id)))


def fill_places(cursor: sqlite3.Cursor) -> list[str]:
    """The upgrade to version 3: the start (and a GUANO position) of every recording without one, read from its file
    where it is still there. Returns what a user should know, one line each."""
    cursor.execute("SELECT id, filename, duration_s FROM recordings WHERE datetime IS NULL ORDER BY id")
    rows = cursor.fetchall()
    present = [(rid, name, duration) for rid, name, duration in rows if os.path.isfile(audio_path(name))]
    known, failed = 0, []
    for rid, name, duration in present:
        try:
            recording = read_places({name: duration or 0.0})[name]
        except (OSError, ValueError) as error:  # e.g. a name that parses to an impossible date: unknown, said
            failed.append(f"{name}: {str(error).splitlines()[0]}")
            continue
        store_places(cursor, rid, recording)
        known += recording.start is not None
    said = [f"{known} of {len(rows)} recordings got their start time from their files"] if rows else []
    if len(present) < len(rows):
        said.append(f"{len(rows) - len(present)} recordings' audio is not where it was indexed: their start stays "
                    "unknown until `avex-hub index` sees them again")
    if failed:
        said.append(f"{len(failed)} recordings' start could not be read, it stays unknown (first: {failed[0]})")
    return said


def window_places(rows: list[tuple]) -> list[tuple]:
    """Per ``(recording start text or None, site, latitude, longitude, start_s, end_s)``: the window's
    :data:`PLACE_COLUMNS` (``start_time``, ``end_time``, ISO 8601 with the offset or ``""``; ``site``,
    ``latitude``, ``longitude`` or None)."""
    recordings: dict[tuple, Recording] = {}
    out = []
    for start, site, latitude, longitude, start_s, end_s in rows:
        key = (start, site, latitude, longitude)
        if key not in recordings:
            recordings[key] = Recording("", None if start is None else dt.datetime.fromisoformat(start), 0.0,
                                        site=site, latitude=latitude, longitude=longitude)
        out.append(place_window(recordings[key], start_s, end_s))
    return out
