"""The archive's files: how they are checked before use, connected to (foreign keys on), made and upgraded, and
how the archive names recordings. :mod:`.archive` builds on these."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import warnings
from pathlib import Path

from perch_hoplite.db import sqlite_usearch_impl

from .lock import LOCK_NAME, WriterLock
from .places import audio_path  # noqa: F401 - re-exported: the archive names recordings here
from .schema import SETTINGS_KEY, VERSION, refuse_newer, run_steps, upgrade, version_of, write_metadata

SQLITE, INDEX = sqlite_usearch_impl.HOPLITE_FILENAME, sqlite_usearch_impl.UINDEX_FILENAME
OURS = (LOCK_NAME, "failures.csv")  # files of ours that may sit in a folder before it holds an archive
CREATING = ".creating-"  # the folder a new archive is made in, inside its own folder


class ArchiveError(RuntimeError):
    """An archive that cannot be used as it is: a file cut short or damaged, a newer schema, a read-only folder
    that an upgrade needs to write; the message says what to do."""


class ArchiveNotice(UserWarning):
    """What opening or writing an archive found and did: an upgrade, a repair, a lock taken over."""


def notice(message: str) -> None:
    warnings.warn(message, ArchiveNotice, stacklevel=3)


# -- file names ---------------------------------------------------------------------------------------------------
def recording_name(path: str | os.PathLike) -> str:
    """How the archive names a file: its real path (links resolved, so a folder reached through a link is the
    same folder), as text (bytes of the name that are not UTF-8 become ``\\xNN``, as ``avex-hub embed`` writes
    them)."""
    from ...embed.outputs import text_cell

    return text_cell(os.path.realpath(os.fsdecode(path)))


def file_key(path: str | os.PathLike) -> tuple[int, int]:
    """``(size, mtime_ns)`` of a recording's file: what the archive keeps to tell that it changed (OSError when it
    is not there)."""
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


# -- opening ------------------------------------------------------------------------------------------------------
def damaged(path: Path, what: str, error: BaseException, fix: str) -> ArchiveError:
    return ArchiveError(f"{path / what} cannot be read ({type(error).__name__}: {error}); {fix}")


SQLITE_FIX = ("the file is damaged or cut short: restore it from a backup (an upgrade leaves hoplite.sqlite.v*.backup "
              "beside it), or index the recordings into a new --db")
INDEX_FIX = (f"the vectors are lost, the labels are not (they are in {SQLITE}): move it away (mv {INDEX} "
             f"{INDEX}.damaged) and run `avex-hub index` on the recordings again; every file is embedded again and "
             "keeps its labels")


def check_files(path: Path) -> None:
    """ArchiveError for an SQLite file that is empty or shorter than its own header says (cut short)."""
    sqlite_path = path / SQLITE
    size = sqlite_path.stat().st_size
    wal = path / (SQLITE + "-wal")
    if size == 0:
        raise ArchiveError(f"{sqlite_path} is empty; {SQLITE_FIX}")
    with open(sqlite_path, "rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        raise ArchiveError(f"{sqlite_path} is not an SQLite database; {SQLITE_FIX}")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if size < pages * page_size and not (wal.exists() and wal.stat().st_size):
        raise ArchiveError(f"{sqlite_path} is {size} bytes, its header says {pages * page_size}: it was cut short; "
                           + SQLITE_FIX)


def _raw(path: Path, readonly: bool) -> sqlite3.Connection:
    uri = f"file:{(path / SQLITE).as_posix()}?mode={'ro' if readonly else 'rw'}"
    conn = sqlite3.connect(uri, uri=True, timeout=30.0)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def connect(path: Path, readonly: bool, usearch_cfg=None):
    """hoplite's database object with foreign keys on, or ArchiveError naming the damaged file."""
    try:
        db = sqlite_usearch_impl.SQLiteUSearchDB.create(str(path), usearch_cfg=usearch_cfg, readonly=readonly)
    except sqlite3.DatabaseError as error:
        raise damaged(path, SQLITE, error, SQLITE_FIX) from None
    except FileNotFoundError as error:  # hoplite: a read-only open of an archive without its vector index
        raise damaged(path, INDEX, error, INDEX_FIX) from None
    except RuntimeError as error:  # usearch: "File is corrupted ..."
        raise damaged(path, INDEX, error, INDEX_FIX) from None
    db.db.execute("PRAGMA foreign_keys = ON")  # hoplite sets it only when it creates the tables
    return db


def close_db(db) -> None:
    if db is not None:
        with contextlib.suppress(sqlite3.Error):
            db.db.close()


def upgrade_if_older(path: Path) -> None:
    """Upgrade an archive of an older schema in place (under the writer lock), saying what was done."""
    conn = _raw(path, readonly=True)
    try:
        found = version_of(conn.cursor())
    except sqlite3.DatabaseError as error:
        raise damaged(path, SQLITE, error, SQLITE_FIX) from None
    finally:
        conn.close()
    refuse_newer(path, found)
    if found == VERSION:
        return
    if not os.access(path, os.W_OK):
        raise ArchiveError(f"{path} is an archive of schema version {found}; this avex-hub upgrades it to {VERSION} in "
                           "place (after a backup copy), but the folder is read-only: open it once where it can be "
                           "written, or copy it")
    with WriterLock(path, "upgrade the archive schema"):
        conn = _raw(path, readonly=False)
        try:
            said = upgrade(conn, path)
        finally:
            conn.close()
    for line in said:
        notice(line)


def create(path: Path, settings: dict) -> None:
    """A new archive at ``path`` (the caller holds the writer lock): hoplite's tables, our settings, the schema
    steps from version 0, an empty vector index. Made in a folder of its own inside ``path`` and moved into place,
    the SQLite file last, so that another process finds either no archive or a whole one."""
    for left in path.glob(f"{CREATING}*"):  # a creation that was stopped
        shutil.rmtree(left, ignore_errors=True)
    work = path / f"{CREATING}{os.getpid()}"
    config = sqlite_usearch_impl.get_default_usearch_config(settings["embedding_dim"])
    config.metric_name = "Cos"  # cosine, so the stored vectors stay the raw embeddings (probes read them)
    db = connect(work, False, usearch_cfg=config)
    try:
        write_metadata(db.db.cursor(), SETTINGS_KEY, {"json": json.dumps(settings)})
        db.db.commit()
        run_steps(db.db, path, 0)
        db.commit()  # hoplite writes the empty index file
    finally:
        close_db(db)  # the last connection: SQLite folds its write-ahead log into the file
    os.replace(work / INDEX, path / INDEX)
    os.replace(work / SQLITE, path / SQLITE)
    shutil.rmtree(work)

