"""The archive's schema version and the one path every schema change goes through.

An archive records ``{"version": N, "archive_id": "..."}`` under the hoplite metadata key ``avex_hub_schema``;
archives written before versions were recorded (avex-hub 0.1.0 before this module) are version 1. Opening an
archive of an older version upgrades it in place: the SQLite file is first copied beside itself
(``hoplite.sqlite.v1.backup``, with SQLite's backup API, so the copy is consistent), then each step runs in one
transaction that also records its version, so a stop mid-way leaves the archive at the last finished step.
A new archive is made by the same steps from hoplite's empty tables, so old and new archives cannot drift apart.

Adding a version (for example object-storage identities):

1. write ``def _vN(cursor, archive_path) -> list[str]`` below: the SQL that takes version N-1 to N (new columns
   with a default or NULL for the rows already there, never a rewrite of hoplite's own tables), returning one
   line per thing a user should know about (empty for a silent step);
2. add it to ``STEPS`` (``VERSION`` follows);
3. keep a tiny archive of version N-1 in ``tests/fixtures/`` (made by the script there) and test the upgrade on it,
   as ``tests/test_agile_archive.py`` does for version 1.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Callable

SCHEMA_KEY = "avex_hub_schema"  # hoplite metadata key: {"version": N, "archive_id": "..."}
SETTINGS_KEY = "avex_hub"  # hoplite metadata key holding the settings that made the vectors (JSON)
DEPLOYMENT, PROJECT = "archive", "avex-hub"  # every recording of an archive sits in one hoplite deployment


class SchemaError(RuntimeError):
    """An archive this version of avex-hub cannot read (written by a newer one), or an upgrade that failed."""


def read_metadata(cursor: sqlite3.Cursor, key: str) -> dict | None:
    cursor.execute("SELECT value FROM hoplite_metadata WHERE key = ?", (key,))
    row = cursor.fetchone()
    return None if row is None else json.loads(row[0])


def write_metadata(cursor: sqlite3.Cursor, key: str, value: dict) -> None:
    cursor.execute("INSERT INTO hoplite_metadata (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                   "value = excluded.value", (key, json.dumps(value)))


def version_of(cursor: sqlite3.Cursor) -> int:
    record = read_metadata(cursor, SCHEMA_KEY)
    return 1 if record is None else int(record["version"])


def _settings(cursor: sqlite3.Cursor) -> dict:
    return json.loads(read_metadata(cursor, SETTINGS_KEY)["json"])


# -- the steps ------------------------------------------------------------------------------------------------------
def _v1(cursor: sqlite3.Cursor, archive_path: Path) -> list[str]:
    """Version 1 (avex-hub 0.1.0's first archives): our columns on hoplite's tables and the one deployment."""
    for table, column, kind in (("recordings", "size", "INTEGER"), ("recordings", "mtime_ns", "INTEGER"),
                                ("recordings", "duration_s", "REAL"), ("windows", "channel", "INTEGER"),
                                ("windows", "flags", "INTEGER")):
        cursor.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    cursor.execute("INSERT INTO deployments (name, project) VALUES (?, ?)", (DEPLOYMENT, PROJECT))
    return []


def _v2(cursor: sqlite3.Cursor, archive_path: Path) -> list[str]:
    """Version 2: an identity for the archive, the channel of each annotation, recordings keyed by real path.

    Annotations of version 1 named no channel: in an archive of one channel (``mix`` or a channel index) they get
    that channel; in a ``channels="all"`` archive they stay NULL, which means every channel of the window (what
    version 1 did with them), and the upgrade says how many there are."""
    said = []
    cursor.execute("ALTER TABLE annotations ADD COLUMN channel INTEGER")
    channels = _settings(cursor).get("channels", "mix")
    if channels == "all":
        cursor.execute("SELECT COUNT(*) FROM annotations")
        (count,) = cursor.fetchone()
        if count:
            said.append(f"{count} labels were stored before labels named a channel: each still applies to every "
                        "channel of its window; label them again per channel where the channels differ")
    else:
        cursor.execute("UPDATE annotations SET channel = ?", (-1 if channels == "mix" else int(channels),))
    said += _real_paths(cursor)
    record = read_metadata(cursor, SCHEMA_KEY) or {}
    write_metadata(cursor, SCHEMA_KEY, {**record, "archive_id": record.get("archive_id") or uuid.uuid4().hex})
    return said


def _real_paths(cursor: sqlite3.Cursor) -> list[str]:
    """Recordings stored under a path through a symbolic link are renamed to the file's real path (where the file
    is there and no other recording already has that path)."""
    cursor.execute("SELECT id, filename FROM recordings")
    rows = cursor.fetchall()
    taken = {name for _, name in rows}
    same, renamed = [], 0
    for rid, name in rows:
        real = os.path.realpath(name)
        if real == name or not os.path.exists(name):
            continue
        if real in taken:
            same.append(f"{name} and {real}")
            continue
        cursor.execute("UPDATE recordings SET filename = ? WHERE id = ?", (real, rid))
        taken.add(real)
        renamed += 1
    said = [f"{renamed} recordings renamed to their real paths (they were stored under a path through a link)"] \
        if renamed else []
    if same:
        said.append(f"{len(same)} files are in the archive twice, under a link and under their real path ("
                    + "; ".join(same[:3]) + ("; ..." if len(same) > 3 else "") + "): their windows are found twice "
                    "by search until one copy is pruned")
    return said


def _v3(cursor: sqlite3.Cursor, archive_path: Path) -> list[str]:
    """Version 3: where and when each recording was made. The start goes in hoplite's own ``recordings.datetime``
    (ISO 8601 with the offset; NULL when unknown), read from each file that is still there as the monitoring
    commands read it; ``site``, ``latitude`` and ``longitude`` are new columns (NULL until ``avex-hub index
    --deployments`` gives them, or a GUANO position does). See :mod:`.places`."""
    from .places import fill_places

    for column, kind in (("site", "TEXT"), ("latitude", "REAL"), ("longitude", "REAL")):
        cursor.execute(f"ALTER TABLE recordings ADD COLUMN {column} {kind}")
    return fill_places(cursor)


STEPS: dict[int, Callable[[sqlite3.Cursor, Path], list[str]]] = {1: _v1, 2: _v2, 3: _v3}
VERSION = max(STEPS)


# -- running them ---------------------------------------------------------------------------------------------------
def _set_version(cursor: sqlite3.Cursor, version: int) -> None:
    record = read_metadata(cursor, SCHEMA_KEY) or {}
    write_metadata(cursor, SCHEMA_KEY, {**record, "version": version})


def run_steps(conn: sqlite3.Connection, archive_path: Path, start: int) -> list[str]:
    """Take the schema from version ``start`` (0: hoplite's empty tables) to :data:`VERSION`, each step in one
    transaction with its version. Returns what the steps had to say."""
    said = []
    for version in range(start + 1, VERSION + 1):
        cursor = conn.cursor()
        cursor.execute("BEGIN")
        try:
            said += STEPS[version](cursor, archive_path)
            _set_version(cursor, version)
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
    return said


def backup(conn: sqlite3.Connection, archive_path: Path, version: int) -> Path:
    """A consistent copy of the SQLite file beside it, ``hoplite.sqlite.v<version>.backup`` (numbered if taken)."""
    target = archive_path / f"hoplite.sqlite.v{version}.backup"
    n = 1
    while target.exists():
        n += 1
        target = archive_path / f"hoplite.sqlite.v{version}.backup{n}"
    tmp = target.with_name(target.name + ".tmp")
    copy = sqlite3.connect(tmp)
    try:
        conn.backup(copy)
        copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, whatever the original's mode
    finally:
        copy.close()
    os.replace(tmp, target)
    return target


def refuse_newer(archive_path: Path, found: int) -> None:
    """SchemaError for an archive written by a newer avex-hub (schema version ``found`` above :data:`VERSION`)."""
    if found > VERSION:
        raise SchemaError(f"{archive_path} is an archive of schema version {found}, written by a newer avex-hub; "
                          f"this one reads up to version {VERSION}: upgrade avex-hub (pip install -U avex-hub)")


def upgrade(conn: sqlite3.Connection, archive_path: Path) -> list[str]:
    """Upgrade an archive of an older version in place after a backup (the caller holds the writer lock).
    Returns what it did, one line each (empty when it was current). SchemaError for a newer version."""
    cursor = conn.cursor()
    found = version_of(cursor)
    refuse_newer(archive_path, found)
    if found == VERSION:
        return []
    copy = backup(conn, archive_path, found)
    said = run_steps(conn, archive_path, found)
    return [f"upgraded {archive_path} from schema version {found} to {VERSION} (the previous SQLite file is kept "
            f"as {copy.name})", *said]
