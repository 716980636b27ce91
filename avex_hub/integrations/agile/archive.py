"""The archive: hoplite's database (SQLite tables + a usearch vector index) with our settings in its metadata.

What holds, for every archive this package opens:

- **Foreign keys on** for every connection (hoplite turns them on only in the connection that creates the
  tables), so removing a recording removes its windows and labels with it.
- **Checked on open** (:mod:`.store`). A file cut short, or a newer schema, is an error before any work; an older
  schema is upgraded in place after a backup copy (:mod:`.schema`); rows whose recording is gone, windows without
  vectors and vectors without windows are reported (readers) or repaired (writers), each with a line
  (:class:`~avex_hub.integrations.agile.store.ArchiveNotice`) saying what was found and done. Labels are never
  dropped by a repair: those of a recording that is gone are written to a CSV beside the archive first.
- **One writer at a time** (:mod:`.lock`): every change happens in ``with archive.writing(...)``, which takes the
  writer lock, reopens the database (so it starts from what the last writer committed), repairs, and commits
  at the end (or rolls back on an error). Readers take no lock.

Every change to the tables and the vector index goes through :class:`Archive`, and the two private fields of
hoplite's database object that this needs are written in one place (:func:`_load_index`, :func:`_index_changed`,
:func:`_index_saved`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ...hub.provenance import Provenance
from .lock import WriterLock
from .places import PLACE_COLUMNS, window_places
from .schema import SCHEMA_KEY, SETTINGS_KEY, read_metadata, write_metadata
from .settings import differences, index_keys, mismatch
from .store import CREATING, INDEX, OURS, SQLITE, SQLITE_FIX, audio_path, check_files, close_db, connect, create, \
    damaged, notice, upgrade_if_older

METADATA_KEY = SETTINGS_KEY  # hoplite metadata key holding our settings (JSON)
WEIGHTS_KEY = "avex_hub_weights"  # where the weights that made the vectors were: {"path": ..., "sha256": ...}


# -- hoplite's vector-index bookkeeping ---------------------------------------------------------------------------
# hoplite 1.0 memory-maps usearch.index read-only until something changes it; its own write methods then load the
# index into memory and note that it must be saved, in two private fields of the database object (``_ui_loaded``,
# ``_ui_updated``) that have no public setter. Removing vectors of our own (without removing their rows, which
# hoplite's methods always do together) and saving the index atomically (hoplite writes it in place) need the same
# bookkeeping, so these functions are the only code that touches those fields.
def _load_index(db) -> None:
    """Make hoplite's index writable: load it into memory unless it is there already."""
    if not db._ui_loaded:  # noqa: SLF001 - see the comment above
        db.ui.load()
        db._ui_loaded = True  # noqa: SLF001


def _index_changed(db) -> None:
    db._ui_updated = True  # noqa: SLF001 - see the comment above


def _index_unsaved(db) -> bool:
    """Whether the in-memory index holds changes that are not on disk yet."""
    return bool(getattr(db, "_ui_updated", False) and getattr(db, "_ui_loaded", False))


def _index_saved(db) -> None:
    db._ui_updated = False  # noqa: SLF001 - see the comment above


# -- what a check finds ---------------------------------------------------------------------------------------------
def _findings(db) -> dict[str, list]:
    """Rows whose recording is gone, windows without vectors, vectors without windows."""
    cursor = db.db.cursor()
    cursor.execute("SELECT id FROM windows WHERE recording_id NOT IN (SELECT id FROM recordings)")
    orphan_windows = [r[0] for r in cursor.fetchall()]
    cursor.execute("SELECT id FROM annotations WHERE recording_id NOT IN (SELECT id FROM recordings)")
    orphan_labels = [r[0] for r in cursor.fetchall()]
    cursor.execute("SELECT id FROM windows ORDER BY id")
    ids = np.fromiter((r[0] for r in cursor), np.int64)
    stored = np.sort(np.asarray(db.ui.keys, np.int64)) if db.ui.size else np.zeros(0, np.int64)
    found = {"orphan_windows": orphan_windows, "orphan_labels": orphan_labels, "unembedded": [], "stale_vectors": []}
    if np.array_equal(ids, stored):  # the usual case, in one comparison
        return found
    lacking = np.setdiff1d(ids, stored).tolist()
    recordings = set()
    for start in range(0, len(lacking), 500):  # SQLite caps the number of parameters of one statement
        chunk = lacking[start:start + 500]
        cursor.execute(f"SELECT DISTINCT recording_id FROM windows WHERE id IN ({','.join('?' * len(chunk))}) AND "
                       "recording_id IN (SELECT id FROM recordings)", chunk)
        recordings.update(r[0] for r in cursor.fetchall())
    return {**found, "unembedded": sorted(recordings), "stale_vectors": np.setdiff1d(stored, ids).tolist()}


def _problems(found: dict[str, list]) -> list[str]:
    said = []
    if found["orphan_labels"]:
        said.append(f"{len(found['orphan_labels'])} labels belong to a recording that is no longer in the archive")
    if found["orphan_windows"]:
        said.append(f"{len(found['orphan_windows'])} windows belong to a recording that is no longer in the archive")
    if found["unembedded"]:
        said.append(f"{len(found['unembedded'])} recordings have windows without vectors (a run stopped between "
                    "saving the tables and the vector index)")
    if found["stale_vectors"]:
        said.append(f"{len(found['stale_vectors'])} vectors belong to no window")
    return said


# -- the database -----------------------------------------------------------------------------------------------
class Archive:
    """An archive made by :func:`~avex_hub.integrations.agile.index.index_files`: ``db`` is the hoplite object,
    ``settings`` ours, ``identity`` the archive's own id (written into every hits CSV and label export)."""

    def __init__(self, path: Path, db, settings: dict, identity: str, readonly: bool) -> None:
        self.path, self.db, self.settings, self.identity, self.readonly = path, db, settings, identity, readonly

    @classmethod
    def open(cls, path: str | os.PathLike, *, readonly: bool = False, report: bool = True) -> "Archive":
        """Open an existing archive (FileNotFoundError when ``path`` holds none): its files checked, an older
        schema upgraded (after a backup copy), what the check finds reported as ``ArchiveNotice`` warnings (unless
        ``report=False``: for a writer that repairs it at once)."""
        path = Path(path)
        if not (path / SQLITE).is_file():
            raise FileNotFoundError(f"no embedding database at {path} (expected {SQLITE} there); build one with "
                                    f"`avex-hub index RECORDINGS --db {path}`")
        check_files(path)
        upgrade_if_older(path)
        db = connect(path, readonly)
        try:
            archive = cls._from_db(path, db, readonly)
            problems = _problems(_findings(db)) if report else []
            if problems:
                notice(f"{path}: {'; '.join(problems)}; the next command that writes to it (index, label, prune) "
                       "repairs it")
        except BaseException:
            close_db(db)
            raise
        return archive

    @classmethod
    def _from_db(cls, path: Path, db, readonly: bool) -> "Archive":
        cursor = db.db.cursor()
        try:
            settings = read_metadata(cursor, SETTINGS_KEY)
            schema = read_metadata(cursor, SCHEMA_KEY) or {}
        except sqlite3.DatabaseError as error:
            raise damaged(path, SQLITE, error, SQLITE_FIX) from None
        if settings is None:
            raise ValueError(f"{path} is a hoplite database, but not one avex-hub built (no {SETTINGS_KEY!r} "
                             "metadata: which weights, layer and window made its vectors is unknown); index the "
                             "recordings again with `avex-hub index`")
        return cls(path, db, json.loads(settings["json"]), schema.get("archive_id", ""), readonly)

    @classmethod
    def create_or_open(cls, path: str | os.PathLike, settings: dict) -> "Archive":
        """Open the archive at ``path`` if its settings equal ``settings`` (else SettingsMismatchError), or make it.
        Two processes making the same new archive at once make it once (the writer lock)."""
        path = Path(path)
        if not (path / SQLITE).is_file():
            if path.exists() and not path.is_dir():
                raise FileExistsError(f"--db {path} is a file; give a folder for the archive")
            if path.exists() and any(p.name not in OURS and not p.name.startswith(CREATING) for p in path.iterdir()):
                raise FileExistsError(f"{path} is not empty and holds no embedding database; choose a new or empty "
                                      "folder")
            path.mkdir(parents=True, exist_ok=True)
            with WriterLock(path, "create the archive"):
                if not (path / SQLITE).is_file():
                    create(path, settings)
        archive = cls.open(path, report=False)
        diffs = differences(archive.settings, settings, index_keys(archive.settings, settings))
        if diffs:
            archive.close()
            raise mismatch(f"{path} was built with other settings", diffs,
                           "index with the database's settings, or into a new --db folder")
        return archive

    def close(self) -> None:
        close_db(self.db)

    # -- writing ----------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self, command: str = "avex-hub") -> Iterator["Archive"]:
        """Hold the writer lock (ArchiveLockedError naming the holder if another process has it), start from the
        last committed state, repair what a check finds, and commit at the end; an error rolls back what was not
        committed yet. ``command`` names the writer in the lock file."""
        if self.readonly:
            raise ValueError(f"{self.path} was opened read-only; open it with Archive.open(path) to write")
        with WriterLock(self.path, command) as lock:
            if lock.took_over:
                notice(f"{self.path}: {lock.took_over}")
            self._reopen()
            self._repair()
            try:
                yield self
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.db.db.rollback()
                self._reopen()  # drops vector-index changes made since the last commit with their rows
                raise
            self.commit()

    def _reopen(self) -> None:
        close_db(self.db)
        self.db = None
        check_files(self.path)
        self.db = connect(self.path, self.readonly)
        self.settings = Archive._from_db(self.path, self.db, self.readonly).settings

    def _repair(self) -> None:
        """Fix what :func:`_findings` finds, saying what was done (the caller holds the writer lock)."""
        found = _findings(self.db)
        said = []
        if found["orphan_labels"]:
            kept = self._export_orphan_labels()
            said.append(f"{len(found['orphan_labels'])} labels belonged to recordings no longer in the archive (left "
                        f"by an earlier avex-hub that ran without foreign keys): written to {kept} and removed")
        cursor = self.db.db.cursor()
        if found["orphan_windows"]:
            self.remove_vectors(self._present(found["orphan_windows"]))
            cursor.execute("DELETE FROM windows WHERE recording_id NOT IN (SELECT id FROM recordings)")
            said.append(f"{len(found['orphan_windows'])} windows of recordings no longer in the archive removed")
        for recording_id in found["unembedded"]:
            self.forget_windows(recording_id)
        if found["unembedded"]:
            said.append(f"{len(found['unembedded'])} recordings had windows without vectors (a run stopped between "
                        "saving the tables and the vector index): their windows were removed, their labels kept; "
                        "the next `avex-hub index` of them embeds them again")
        if found["stale_vectors"]:
            self.remove_vectors(np.array(found["stale_vectors"], np.int64))
            said.append(f"{len(found['stale_vectors'])} vectors that belonged to no window removed")
        if said:
            self.commit()
            for line in said:
                notice(f"{self.path}: repaired: {line}")

    def _export_orphan_labels(self) -> Path:
        """The labels whose recording is gone, as they are stored (its file is unknown), written to a CSV beside
        the archive and then removed."""
        cursor = self.db.db.cursor()
        orphans = "FROM annotations WHERE recording_id NOT IN (SELECT id FROM recordings)"
        cursor.execute(f"SELECT * {orphans}")
        columns = [c[0] for c in cursor.description]
        rows = cursor.fetchall()
        target = self.path / f"orphaned-labels-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.csv"
        with open(target, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows(rows)
            handle.flush()
            os.fsync(handle.fileno())
        cursor.execute(f"DELETE {orphans}")
        return target

    def commit(self, *, vectors_first: bool = False) -> None:
        """Commit the SQLite rows, then write the vector index to a temporary file beside it and move it into place.

        hoplite's own commit writes the index file in place, so a run stopped during that write (seconds for
        a large archive) would leave a truncated index and lose every vector, and a reader could map half a file.
        Here the old index stays whole until the new one is complete; SQLite commits first, and windows left
        without vectors by a stop between the two are repaired by the next writer. ``vectors_first``: the index
        first, for a change of vectors only (:meth:`replace_vectors`) whose rows record that it is done."""
        from ...embed.outputs import atomic_path

        if not vectors_first:
            self.db.db.commit()
        if _index_unsaved(self.db):
            with atomic_path(self.path / INDEX, ".index") as tmp:
                self.db.ui.save(str(tmp))
            _index_saved(self.db)
        self.db.db.commit()  # the rows that record a change of vectors (nothing left to commit otherwise)
        self.db.commit()  # closes hoplite's cursor; its index is saved already

    # -- reading ----------------------------------------------------------------------------------------------------
    @property
    def provenance(self) -> Provenance:
        return Provenance.from_dict(self.settings["provenance"], source=f"{self.path} metadata")

    @property
    def weights(self) -> dict:
        """Where the weights that made the vectors were when the archive was last indexed: ``{"path", "sha256"}``
        (empty when they came from the Hub or were not given as a path)."""
        return read_metadata(self.db.db.cursor(), WEIGHTS_KEY) or {}

    def check_model(self, model, *, what: str = "this model") -> None:
        """SettingsMismatchError unless ``model`` makes vectors comparable with the stored ones."""
        given = {**self.settings, "weights_sha256": model.weights_sha256, "embedding_dim": model.embedding_dim,
                 "sample_rate": model.sample_rate}
        diffs = differences(self.settings, given, ("weights_sha256", "embedding_dim", "sample_rate"))
        if not diffs:
            diffs = self.provenance.differences(model)
        if diffs:
            raise mismatch(f"{self.path} was built with other weights than {what} ({model.name})", diffs,
                           f"load the model the database was built with ({self.settings['model']}, sha256 "
                           f"{self.settings['weights_sha256']}), or index the recordings again with this one")

    def window_table(self, ids: Sequence[int] | None = None, *, missing: str = "raise") -> dict[str, np.ndarray]:
        """``window_id``, ``file``, ``channel``, ``start_s``, ``end_s`` of ``ids`` (in that order; default: every
        window, by id), and the window's :data:`~avex_hub.integrations.agile.places.PLACE_COLUMNS` (``start_time``,
        ``end_time``: ISO 8601 with the offset, ``""`` where the recording's start is unknown; ``site``,
        ``latitude``, ``longitude``). An id that is not in the archive is a KeyError, or left out with
        ``missing="skip"``."""
        cursor = self.db.db.cursor()
        query = ("SELECT windows.id, recordings.filename, windows.channel, windows.offsets, recordings.datetime, "
                 "recordings.site, recordings.latitude, recordings.longitude FROM windows "
                 "JOIN recordings ON windows.recording_id = recordings.id")
        if ids is None:
            cursor.execute(query + " ORDER BY windows.id")
            rows = cursor.fetchall()
        else:
            wanted = [int(i) for i in ids]
            found = {}
            for start in range(0, len(wanted), 500):  # SQLite caps the number of parameters of one statement
                chunk = wanted[start:start + 500]
                cursor.execute(query + f" WHERE windows.id IN ({','.join('?' * len(chunk))})", chunk)
                found.update((r[0], r) for r in cursor.fetchall())
            absent = [i for i in wanted if i not in found]
            if absent and missing == "raise":
                raise KeyError(f"windows {absent[:5]} are not in {self.path}")
            rows = [found[i] for i in wanted if i in found]
        places = list(zip(*window_places([(*r[4:], r[3][0], r[3][1]) for r in rows]))) or [()] * len(PLACE_COLUMNS)
        return {"window_id": np.array([r[0] for r in rows], np.int64), "file": np.array([r[1] for r in rows], object),
                "channel": np.array([r[2] for r in rows], np.int32),
                "start_s": np.array([r[3][0] for r in rows], np.float64),
                "end_s": np.array([r[3][1] for r in rows], np.float64),
                **{name: np.array(values, object) for name, values in zip(PLACE_COLUMNS, places)}}

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """Stored embeddings ``[len(ids), dim]`` as float32."""
        return np.asarray(self.db.get_embeddings_batch(np.asarray(ids, np.int64)), np.float32)

    def recordings(self) -> dict[str, int]:
        """``{file: recording id}`` of every recording."""
        cursor = self.db.db.cursor()
        cursor.execute("SELECT filename, id FROM recordings")
        return dict(cursor.fetchall())

    def missing_files(self, files: Sequence[str] | None = None) -> list[str]:
        """The recordings (of ``files``, default all) whose audio is no longer where it was indexed."""
        names = sorted(self.recordings()) if files is None else sorted(set(files))
        return [f for f in names if not os.path.exists(audio_path(f))]

    def __len__(self) -> int:
        return int(self.db.count_embeddings())

    # -- changes (inside ``writing``) ---------------------------------------------------------------------------------
    def remember_weights(self, path: str | os.PathLike, sha256: str) -> None:
        """Record where the weights that made the vectors are (searched again without ``--checkpoint``)."""
        write_metadata(self.db.db.cursor(), WEIGHTS_KEY, {"path": os.path.realpath(path), "sha256": sha256})

    def remove_vectors(self, ids: np.ndarray) -> None:
        """Remove the vectors of window ``ids`` from the index (all of them present in it)."""
        if len(ids) == 0:
            return
        _load_index(self.db)
        self.db.ui.remove(np.asarray(ids, np.int64))
        _index_changed(self.db)

    def replace_vectors(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Store ``vectors`` ``[len(ids), dim]`` as the vectors of window ``ids`` (all present in the index), under
        the same ids: labels and every other row stay as they are. hoplite has no method for this (its windows get
        new ids), so the usearch keys are removed and added again, in hoplite's vector type (as it adds them)."""
        ids = np.asarray(ids, np.int64)
        self.remove_vectors(ids)
        self.db.ui.add(ids, np.asarray(vectors, np.float32).astype(self.db.get_embedding_dtype()))

    def _present(self, ids: list[int]) -> np.ndarray:
        ids_arr = np.array(ids, np.int64)
        if not len(ids_arr) or not self.db.ui.size:
            return ids_arr[:0]
        return ids_arr[np.asarray(self.db.ui.contains(ids_arr), bool)]

    def _window_ids(self, recording_id: int) -> list[int]:
        cursor = self.db.db.cursor()
        cursor.execute("SELECT id FROM windows WHERE recording_id = ?", (int(recording_id),))
        return [r[0] for r in cursor.fetchall()]

    def forget_windows(self, recording_id: int) -> None:
        """Remove a recording's windows and their vectors and mark it to be embedded again; its labels stay."""
        self.remove_vectors(self._present(self._window_ids(recording_id)))
        cursor = self.db.db.cursor()
        cursor.execute("DELETE FROM windows WHERE recording_id = ?", (int(recording_id),))
        cursor.execute("UPDATE recordings SET size = NULL, mtime_ns = NULL WHERE id = ?", (int(recording_id),))

    def remove_recording(self, recording_id: int) -> None:
        """Remove a recording with its windows' vectors, its windows and its labels (foreign keys cascade)."""
        self.remove_vectors(self._present(self._window_ids(recording_id)))
        self.db.db.execute("DELETE FROM recordings WHERE id = ?", (int(recording_id),))


