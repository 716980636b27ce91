"""The output version of an archive's vectors, and the upgrade that keeps them comparable.

The archive records the ``output_version`` (:data:`avex_hub.embed.settings.OUTPUT_VERSION`) of the code that made
its vectors. Version 3 changed the values of one case: a recording no longer than one window (all its windows start
at 0 and end before ``window_s``) runs at its own length, where version 2 and the archives that recorded no version
padded it to the window. Every other window's values are the same in both (as
:func:`avex_hub.embed.outputs.carry_over_shard` keeps their shards).

So an archive of an older version is added to after :func:`upgrade_vectors` (``avex-hub index`` runs it under the
writer lock): the short recordings whose audio is still there, unchanged, are embedded again and their vectors
replaced under the same window ids (usearch keys), so every label and id stays; then the current version is
recorded. The windows of short recordings whose audio is gone or changed keep their padded vectors; their ids are
recorded under the metadata key :data:`PADDED_KEY` (ids are never reused: AUTOINCREMENT), said in one line by the
upgrade and by every ``search`` and ``detect`` (:func:`report_padded`), and embedded again by the next ``index``
that finds their audio. An older archive without short recordings only gets the current version recorded.
"""

from __future__ import annotations

import json

import numpy as np

from ...embed.outputs import PADDED_VERSION
from ...embed.settings import OUTPUT_VERSION
from .archive import Archive
from .places import audio_path
from .schema import SETTINGS_KEY, read_metadata, write_metadata
from .settings import output_version
from .store import file_key, notice

PADDED_KEY = "avex_hub_padded"  # hoplite metadata key: {"output_version": N, "windows": [ids]} still padded
# The output version this module upgrades archives to. A release that raises OUTPUT_VERSION again must say here what
# changed for which windows (tests/test_agile_output_version.py stops it until it does).
UPGRADES_TO = 3


def padded_windows(archive: Archive) -> dict[int, list[int]]:
    """``{recording id: window ids}`` of the windows whose vectors were padded to the window by an older version."""
    cursor = archive.db.db.cursor()
    if output_version(archive.settings) <= PADDED_VERSION:
        # hoplite's connection defines GET_OFFSET_START/END (a window's offsets are a blob of two float64s)
        cursor.execute("SELECT recording_id, id FROM windows WHERE recording_id IN (SELECT recording_id FROM windows "
                       "GROUP BY recording_id HAVING MAX(GET_OFFSET_START(offsets)) = 0 AND "
                       "MAX(GET_OFFSET_END(offsets)) < ?) ORDER BY id", (float(archive.settings["window_s"]),))
    else:
        ids = (read_metadata(cursor, PADDED_KEY) or {}).get("windows", [])
        if not ids:
            return {}
        cursor.execute("SELECT recording_id, id FROM windows WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
                       (json.dumps(ids),))
    found: dict[int, list[int]] = {}
    for recording, window in cursor.fetchall():
        found.setdefault(recording, []).append(window)
    return found


def _how_to_fix(archive: Archive) -> str:
    return (f"`avex-hub index` into it embeds again those whose audio is where it was indexed (put it back "
            f"first); `avex-hub prune --db {archive.path}` removes those whose audio is gone (their labels exported "
            "first)")


def report_padded(archive: Archive) -> int:
    """One :class:`~avex_hub.integrations.agile.store.ArchiveNotice` line when some of the archive's vectors were
    padded by an older output version (their scores are not comparable with the rest); returns how many windows."""
    padded = padded_windows(archive)
    windows = sum(map(len, padded.values()))
    if windows:
        notice(f"{archive.path}: {windows} windows of {len(padded)} recordings no longer than one window hold vectors "
               f"of output version {PADDED_VERSION} (padded to the window; this version runs them at their own length), "
               f"so their scores are not comparable with the rest: {_how_to_fix(archive)}")
    return windows


def upgrade_vectors(archive: Archive, model, inference, **run) -> list[str]:
    """Inside ``archive.writing()``: embed the padded windows' recordings again with ``model`` and ``inference``
    (the archive's settings at :data:`OUTPUT_VERSION`; ``run`` as for
    :func:`~avex_hub.embed.inference.iter_file_results`), replace their vectors under the same window ids, record
    the current version and the windows still padded, and commit (the vector index first: a stop between the two
    leaves the older version recorded, so the next run does it again). Returns what a user should know."""
    from ...embed.inference import iter_file_results

    old = output_version(archive.settings)
    padded = padded_windows(archive)
    if old >= OUTPUT_VERSION and not padded:
        return []
    todo, kept = _still_there(archive, padded)
    done = []
    for result in iter_file_results(model, list(todo), inference, **run):
        recording = todo[result.path]
        if result.error is None and _replace(archive, padded[recording], result.arrays):
            done.append(recording)
        else:
            kept.append(recording)
    still = sorted(w for r in kept for w in padded[r])
    cursor = archive.db.db.cursor()
    write_metadata(cursor, SETTINGS_KEY, {"json": json.dumps({**archive.settings, "output_version": OUTPUT_VERSION})})
    if still:
        write_metadata(cursor, PADDED_KEY, {"output_version": PADDED_VERSION, "windows": still})
    else:
        cursor.execute("DELETE FROM hoplite_metadata WHERE key = ?", (PADDED_KEY,))
    archive.commit(vectors_first=True)
    archive.settings = {**archive.settings, "output_version": OUTPUT_VERSION}
    said = []
    if done:
        made = f"output version {min(old, PADDED_VERSION)}" if old else "an avex-hub before output versions"
        said.append(f"{archive.path}: {len(done)} recordings no longer than one window embedded again at their own "
                    f"length ({made} padded them to the window); their window ids and labels are unchanged")
    if kept:
        said.append(f"{archive.path}: {len(kept)} recordings no longer than one window keep vectors padded by output "
                    f"version {PADDED_VERSION} (their audio is gone or changed since it was indexed), not comparable "
                    f"with the rest: {_how_to_fix(archive)}")
    return said


def _still_there(archive: Archive, padded: dict[int, list[int]]) -> tuple[dict[str, int], list[int]]:
    """``({path: recording id} of the recordings whose audio is where and as it was indexed, [the others])``."""
    cursor = archive.db.db.cursor()
    todo, kept = {}, []
    for recording in padded:
        cursor.execute("SELECT filename, size, mtime_ns FROM recordings WHERE id = ?", (recording,))
        name, size, mtime = cursor.fetchone()
        path = audio_path(name)
        try:
            same = file_key(path) == (size, mtime)
        except OSError:
            same = False
        if same:
            todo[path] = recording
        else:
            kept.append(recording)
    return todo, kept


def _replace(archive: Archive, windows: list[int], arrays: dict) -> bool:
    """Replace the vectors of ``windows`` by the new ones of the same channel, start and end; False (nothing
    replaced) unless every window has exactly one."""
    cursor = archive.db.db.cursor()
    rows = []
    for window in windows:
        cursor.execute("SELECT channel, offsets FROM windows WHERE id = ?", (window,))
        channel, offsets = cursor.fetchone()
        start, end = offsets  # hoplite reads FLOAT_LIST columns as lists
        match = np.flatnonzero((arrays["channel"] == channel) & np.isclose(arrays["start_s"], start, atol=1e-6) &
                               np.isclose(arrays["end_s"], end, atol=1e-6))
        if len(match) != 1:
            return False
        rows.append(int(match[0]))
    if len(rows) != len(arrays["start_s"]):
        return False
    archive.replace_vectors(np.array(windows, np.int64), arrays["embeddings"][rows])
    return True

