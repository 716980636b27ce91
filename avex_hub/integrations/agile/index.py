"""Indexing: embed folders of recordings into an archive with the code of ``avex-hub embed``, resumably."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ...embed.inference import find_audio_files, iter_file_results
from ...storage.locations import is_url
from ...embed.settings import InferenceSettings
from .archive import Archive
from .labels import export_aside
from .places import read_places, store_places
from .schema import DEPLOYMENT, PROJECT
from .settings import archive_settings
from .store import file_key, notice, recording_name
from .versions import upgrade_vectors

COMMIT_EVERY_S = 30.0  # index: commit (SQLite + the vector index file) at most this often, and at the end


@dataclasses.dataclass
class IndexReport:
    """What :func:`index_files` did: files added (``changed``: those of them indexed before, embedded again with
    their labels kept), files already there, failures ``{path: error}``, windows added."""

    added: list[str]
    skipped: list[str]
    failures: dict[str, str]
    windows: int
    seconds: float
    changed: list[str] = dataclasses.field(default_factory=list)
    unknown_starts: dict[str, str] = dataclasses.field(default_factory=dict)  # {file: why its start is unknown}


def _refuse_urls(paths) -> None:
    """The archive identifies a recording by its file's size and modification time, which an object in a store does
    not have: URLs are refused before any work (embed and classify read them)."""
    urls = [os.fspath(p) for p in paths if is_url(os.fspath(p))]
    if urls:
        raise ValueError(f"{urls[0]}: avex-hub index reads local files only (the archive identifies a recording by "
                         "its size and modification time); copy or mount the recordings locally, or run avex-hub "
                         "embed on the URLs")


def _known_recordings(archive: Archive) -> dict[str, tuple[int, tuple[int | None, int | None]]]:
    cursor = archive.db.db.cursor()
    cursor.execute("SELECT id, filename, size, mtime_ns FROM recordings")
    return {name: (rid, (size, mtime)) for rid, name, size, mtime in cursor.fetchall()}


def _deployment_id(archive: Archive) -> int:
    cursor = archive.db.db.cursor()
    cursor.execute("SELECT id FROM deployments WHERE name = ? AND project = ?", (DEPLOYMENT, PROJECT))
    return cursor.fetchone()[0]


def _insert_file(archive: Archive, deployment: int, result, recording: int | None, place) -> int:
    """The windows and vectors of one embedded file, under its recording (new, or one whose windows were
    forgotten because the file changed: its row and labels stay), with its start and site (``place``)."""
    a = result.arrays
    size, mtime = file_key(result.path)
    if recording is None:
        recording = archive.db.insert_recording(filename=recording_name(result.path), deployment_id=deployment,
                                                size=size, mtime_ns=mtime, duration_s=float(result.duration_s))
    else:
        archive.db.db.execute("UPDATE recordings SET size = ?, mtime_ns = ?, duration_s = ? WHERE id = ?",
                              (size, mtime, float(result.duration_s), recording))
    store_places(archive.db.db.cursor(), recording, place)
    if not len(a.get("start_s", ())):
        return 0
    flags = (a["flags"].astype(np.int64) * (1 << np.arange(a["flags"].shape[1]))).sum(axis=1)
    batch = [{"recording_id": recording, "offsets": [float(s), float(e)], "channel": int(c), "flags": int(f)}
             for s, e, c, f in zip(a["start_s"], a["end_s"], a["channel"], flags)]
    archive.db.insert_windows_batch(batch, a["embeddings"].astype(np.float32), handle_duplicates="allow")
    return len(batch)


def _remember_weights(archive: Archive, model, checkpoint) -> None:
    from ...hub.loading import resolve_checkpoint
    from ...hub.weights import get_weights

    weights = resolve_checkpoint(checkpoint, get_weights(archive.settings["model"]))["weights"]
    archive.remember_weights(weights, model.weights_sha256)


def index_files(model, paths: Sequence[str | os.PathLike], db_path: str | os.PathLike, *, layer: int = -1,
                pooling: str = "mean", window_s: float | None = None, hop_s: float | None = None, channels="mix",
                precision: str = "fp32", batch_size: int | None = None,
                num_workers: int | None = None, device=None, progress: bool = True,
                checkpoint: str | os.PathLike | None = None, time_pattern: str | None = None,
                timezone: str | None = None, deployments=None, runtime: str = "torch",
                threads: int | None = None) -> IndexReport:
    """Embed the audio files under ``paths`` into the archive at ``db_path`` (made if new).

    Resumable: files already in the archive (by real path) with the same size and modification time are skipped;
    a changed file is embedded again under the same recording, so its labels stay. Finished files are committed at
    least every ``COMMIT_EVERY_S`` seconds and when the run stops (also on KeyboardInterrupt), so an interrupted
    run keeps every file it finished before the last commit. ``checkpoint``: the local weights ``model`` was built
    from (as given to ``build_model``), remembered so that ``avex-hub search`` finds them again.
    Holds the archive's writer lock throughout (ArchiveLockedError if another process writes it). ``runtime`` and
    ``threads``: as for :func:`avex_hub.embed.inference.embed_files` (an archive holds one runtime's vectors). An
    archive of an older output version is upgraded first
    (:func:`~avex_hub.integrations.agile.versions.upgrade_vectors`; each line it says is an ``ArchiveNotice``).

    Each file's start time, site and position are stored with it (:mod:`.places`), read as ``avex-hub times``
    reads them: ``time_pattern``, ``timezone`` and ``deployments`` (a deployments CSV or
    :class:`~avex_hub.monitoring.deployments.Deployments`) as there. Given any of them, the files already in the
    archive get theirs again too. The report's ``unknown_starts`` names the files whose start is unknown, and why.
    """
    started = time.perf_counter()
    _refuse_urls(paths)
    files = find_audio_files(paths)
    places = read_places(dict.fromkeys(map(recording_name, files), 0.0), deployments=deployments,
                         time_pattern=time_pattern, timezone=timezone)  # bad options fail before any work
    again = any(v is not None for v in (time_pattern, timezone, deployments))
    settings = archive_settings(model, layer=layer, pooling=pooling, window_s=window_s, hop_s=hop_s,
                                channels=channels, precision=precision, runtime=runtime)
    archive = Archive.create_or_open(db_path, settings)
    try:
        with archive.writing("avex-hub index"):
            if checkpoint is not None:
                _remember_weights(archive, model, checkpoint)
            run = dict(batch_size=batch_size, num_workers=num_workers, device=device, progress=progress,
                       threads=threads)
            for line in upgrade_vectors(archive, model, InferenceSettings.from_dict(settings), **run):
                notice(line)
            report = _index(archive, model, files, settings, started, places, again, **run)
    finally:
        archive.close()
    report.unknown_starts = {f: place.note for f, place in ((f, places[recording_name(f)]) for f in files)
                             if place.start is None}
    return report


def _index(archive: Archive, model, files: list[str], settings: dict, started: float, places: dict, again: bool,
           **run) -> IndexReport:
    known = _known_recordings(archive)
    todo, skipped, changed, recording_of = [], [], [], {}
    for f in files:
        entry = known.get(recording_name(f))
        try:
            same = entry is not None and entry[1] == file_key(f)
        except OSError:
            same = False
        if same:
            skipped.append(f)
            if again:  # times or sites asked for again: the files already there get them too
                store_places(archive.db.db.cursor(), entry[0], places[recording_name(f)])
            continue
        if entry is not None:  # changed since it was indexed, or its windows were lost: embedded again
            archive.forget_windows(entry[0])
            recording_of[f] = entry[0]
            if entry[1] != (None, None):
                changed.append(f)
        todo.append(f)
    inference = InferenceSettings.from_dict(settings)  # the archive's own keys (embedding_dim, provenance) left out
    deployment = _deployment_id(archive)
    added, failures, windows, last_commit = [], {}, 0, time.monotonic()
    try:
        for result in iter_file_results(model, todo, inference, **run):
            if result.error is not None:
                failures[result.path] = result.error
                continue
            windows += _insert_file(archive, deployment, result, recording_of.get(result.path),
                                    places[recording_name(result.path)])
            added.append(result.path)
            if time.monotonic() - last_commit > COMMIT_EVERY_S:
                archive.commit()
                last_commit = time.monotonic()
    finally:
        archive.commit()
    return IndexReport(added, skipped, failures, windows, time.perf_counter() - started, changed)


@dataclasses.dataclass
class PruneReport:
    """What :func:`prune` did: the recordings removed (their audio was gone), windows removed with them, and the
    CSV their labels were written to first (None when they had none)."""

    removed: list[str]
    windows: int
    labels_file: Path | None


def prune(archive: Archive, *, dry_run: bool = False) -> PruneReport:
    """Remove the recordings whose audio is no longer where it was indexed, with their windows, vectors and labels;
    their labels are first written to ``<archive>/pruned-labels-<time>.csv`` (``avex-hub import-labels`` brings
    them back). ``dry_run``: only say what would be removed."""
    with archive.writing("avex-hub prune"):
        recordings = archive.recordings()
        gone = archive.missing_files()
        ids = [recordings[f] for f in gone]
        cursor = archive.db.db.cursor()
        windows = 0
        for rid in ids:
            cursor.execute("SELECT COUNT(*) FROM windows WHERE recording_id = ?", (rid,))
            windows += cursor.fetchone()[0]
        if dry_run or not ids:
            return PruneReport(gone, windows, None)
        kept = export_aside(archive, ids, "pruned")
        for rid in ids:
            archive.remove_recording(rid)
    return PruneReport(gone, windows, kept)
