"""The archive: hoplite's database (SQLite tables + a usearch vector index) with our settings in its metadata.

Every change to the tables and the vector index goes through :class:`Archive`, and the two private fields of
hoplite's database object that this needs are written in one place (:func:`_load_index`, :func:`_index_saved`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from ml_collections import config_dict
from perch_hoplite.db import sqlite_usearch_impl

from ...hub.provenance import Provenance
from .settings import INDEX_KEYS, differences, mismatch

METADATA_KEY = "avex_hub"  # hoplite metadata key holding our settings (JSON)
DEPLOYMENT, PROJECT = "archive", "avex-hub"  # every recording of an archive sits in one hoplite deployment


# -- hoplite's vector-index bookkeeping ---------------------------------------------------------------------------
# hoplite 1.0 memory-maps usearch.index read-only until something changes it; its own write methods then load the
# index into memory and note that it must be saved, in two private fields of the database object (``_ui_loaded``,
# ``_ui_updated``) that have no public setter. Removing vectors of our own (without removing their rows, which
# hoplite's methods always do together) and saving the index atomically (hoplite writes it in place) need the same
# bookkeeping, so these two functions are the only code that touches those fields.
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


# -- the database -----------------------------------------------------------------------------------------------
class Archive:
    """A hoplite database made by :func:`~avex_hub.integrations.agile.index.index_files`; ``db`` is the hoplite
    object, ``settings`` ours."""

    def __init__(self, path: Path, db, settings: dict) -> None:
        self.path, self.db, self.settings = path, db, settings

    @classmethod
    def open(cls, path: str | os.PathLike, *, readonly: bool = False) -> "Archive":
        """Open an existing archive (FileNotFoundError when ``path`` holds none)."""
        path = Path(path)
        if not (path / sqlite_usearch_impl.HOPLITE_FILENAME).is_file():
            raise FileNotFoundError(f"no embedding database at {path} (expected {sqlite_usearch_impl.HOPLITE_FILENAME}"
                                    " there); build one with `avex-hub index RECORDINGS --db " + str(path) + "`")
        db = sqlite_usearch_impl.SQLiteUSearchDB.create(str(path), readonly=readonly)
        metadata = db.get_metadata(None)
        if METADATA_KEY not in metadata:
            raise ValueError(f"{path} is a hoplite database, but not one avex-hub built (no {METADATA_KEY!r} "
                             "metadata: which weights, layer and window made its vectors is unknown); index the "
                             "recordings again with `avex-hub index`")
        return cls(path, db, json.loads(metadata[METADATA_KEY].json))

    @classmethod
    def create_or_open(cls, path: str | os.PathLike, settings: dict) -> "Archive":
        """Open the archive at ``path`` if its settings equal ``settings`` (else SettingsMismatchError), or make it."""
        path = Path(path)
        if (path / sqlite_usearch_impl.HOPLITE_FILENAME).is_file():
            archive = cls.open(path)
            diffs = differences(archive.settings, settings, INDEX_KEYS)
            if diffs:
                raise mismatch(f"{path} was built with other settings", diffs,
                               "index with the database's settings, or into a new --db folder")
            return archive
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} is not empty and holds no embedding database; choose a new or empty folder")
        config = sqlite_usearch_impl.get_default_usearch_config(settings["embedding_dim"])
        config.metric_name = "Cos"  # cosine, so the stored vectors stay the raw embeddings (probes read them)
        db = sqlite_usearch_impl.SQLiteUSearchDB.create(str(path), usearch_cfg=config)
        for table, column, kind in (("recordings", "size", int), ("recordings", "mtime_ns", int),
                                    ("recordings", "duration_s", float), ("windows", "channel", int),
                                    ("windows", "flags", int)):
            db.add_extra_table_column(table, column, kind)
        db.insert_metadata(METADATA_KEY, config_dict.ConfigDict({"json": json.dumps(settings)}))
        db.insert_deployment(name=DEPLOYMENT, project=PROJECT)
        db.commit()
        return cls(path, db, settings)

    def commit(self) -> None:
        """Commit the SQLite rows, then write the vector index to a temporary file beside it and move it into place.

        hoplite's own commit writes the index file in place, so a run stopped during that write (seconds for
        a large archive) would leave a truncated index and lose every vector. Here the old index stays whole until
        the new one is complete; SQLite commits first, and windows left without vectors by a stop between the two
        are re-embedded on the next run (:meth:`repair`). Where hoplite's bookkeeping is not what this expects, its
        own commit does the writing."""
        from ...embed.outputs import atomic_path

        self.db.db.commit()
        if _index_unsaved(self.db):
            with atomic_path(self.path / sqlite_usearch_impl.UINDEX_FILENAME, ".index") as tmp:
                self.db.ui.save(str(tmp))
            _index_saved(self.db)
        self.db.commit()  # closes hoplite's cursor; its index is saved already

    @property
    def provenance(self) -> Provenance:
        return Provenance.from_dict(self.settings["provenance"], source=f"{self.path} metadata")

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

    def window_table(self, ids: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """``window_id``, ``file``, ``channel``, ``start_s``, ``end_s`` of ``ids`` (in that order; default: every
        window, by id). KeyError for an id that is not in the archive."""
        cursor = self.db.db.cursor()
        query = ("SELECT windows.id, recordings.filename, windows.channel, windows.offsets FROM windows "
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
            missing = [i for i in wanted if i not in found]
            if missing:
                raise KeyError(f"windows {missing[:5]} are not in {self.path}")
            rows = [found[i] for i in wanted]
        return {"window_id": np.array([r[0] for r in rows], np.int64), "file": np.array([r[1] for r in rows], object),
                "channel": np.array([r[2] for r in rows], np.int32),
                "start_s": np.array([r[3][0] for r in rows], np.float64),
                "end_s": np.array([r[3][1] for r in rows], np.float64)}

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """Stored embeddings ``[len(ids), dim]`` as float32."""
        return np.asarray(self.db.get_embeddings_batch(np.asarray(ids, np.int64)), np.float32)

    def __len__(self) -> int:
        return int(self.db.count_embeddings())

    # -- changes ------------------------------------------------------------------------------------------------
    def remove_vectors(self, ids: np.ndarray) -> None:
        """Remove the vectors of window ``ids`` from the index (all of them present in it)."""
        if len(ids) == 0:
            return
        _load_index(self.db)
        self.db.ui.remove(np.asarray(ids, np.int64))
        _index_changed(self.db)

    def remove_recording(self, recording_id: int) -> None:
        """Remove a recording, its windows' vectors, its windows and annotations."""
        cursor = self.db.db.cursor()
        cursor.execute("SELECT id FROM windows WHERE recording_id = ?", (recording_id,))
        ids = [r[0] for r in cursor.fetchall()]
        if ids and len(self):
            present = np.asarray(self.db.ui.contains(np.array(ids, np.int64)))
            self.remove_vectors(np.array(ids, np.int64)[present])
        self.db.remove_recording(recording_id)  # windows and annotations cascade

    def repair(self) -> None:
        """Undo what a run stopped between the SQLite commit and the index save leaves behind: recordings whose
        windows lack vectors are dropped (and embedded again as new files), and vectors whose windows are gone (a
        replaced or removed file) are removed, so that a search never returns a window the tables do not hold."""
        cursor = self.db.db.cursor()
        cursor.execute("SELECT id, recording_id FROM windows")
        rows = cursor.fetchall()
        ids = np.array([r[0] for r in rows], np.int64)
        stored = np.asarray(self.db.ui.keys, np.int64) if len(self) else np.zeros(0, np.int64)
        stale = np.setdiff1d(stored, ids)
        present = np.isin(ids, stored)
        broken = {rows[i][1] for i in np.flatnonzero(~present)}
        for recording_id in broken:  # re-embedded by the caller, as new files
            self.remove_recording(recording_id)
        self.remove_vectors(stale)
        if broken or len(stale):
            self.commit()
