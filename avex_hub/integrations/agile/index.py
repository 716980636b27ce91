"""Indexing: embed folders of recordings into an archive with the code of ``avex-hub embed``, resumably."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Sequence

import numpy as np
from ml_collections import config_dict

from ...embed.inference import find_audio_files, iter_file_results
from .archive import DEPLOYMENT, PROJECT, Archive
from .settings import archive_settings

COMMIT_EVERY_S = 30.0  # index: commit (SQLite + the vector index file) at most this often, and at the end


@dataclasses.dataclass
class IndexReport:
    """What :func:`index_files` did: files added, files already there, failures ``{path: error}``, windows added."""

    added: list[str]
    skipped: list[str]
    failures: dict[str, str]
    windows: int
    seconds: float


def _file_key(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def _known_recordings(archive: Archive) -> dict[str, tuple[int, tuple[int, int]]]:
    cursor = archive.db.db.cursor()
    cursor.execute("SELECT id, filename, size, mtime_ns FROM recordings")
    return {name: (rid, (size, mtime)) for rid, name, size, mtime in cursor.fetchall()}


def _deployment_id(archive: Archive) -> int:
    found = archive.db.get_all_deployments(config_dict.create(eq=dict(name=DEPLOYMENT, project=PROJECT)))
    return found[0].id


def _insert_file(archive: Archive, deployment: int, result) -> int:
    a = result.arrays
    size, mtime = _file_key(result.path)
    recording = archive.db.insert_recording(filename=os.path.abspath(result.path), deployment_id=deployment,
                                            size=size, mtime_ns=mtime, duration_s=float(result.duration_s))
    if not len(a.get("start_s", ())):
        return 0
    flags = (a["flags"].astype(np.int64) * (1 << np.arange(a["flags"].shape[1]))).sum(axis=1)
    batch = [{"recording_id": recording, "offsets": [float(s), float(e)], "channel": int(c), "flags": int(f)}
             for s, e, c, f in zip(a["start_s"], a["end_s"], a["channel"], flags)]
    archive.db.insert_windows_batch(batch, a["embeddings"].astype(np.float32), handle_duplicates="allow")
    return len(batch)


def index_files(model, paths: Sequence[str | os.PathLike], db_path: str | os.PathLike, *, layer: int = -1,
                pooling: str = "mean", window_s: float | None = None, hop_s: float | None = None, channels="mix",
                precision: str = "fp32", batch_size: int | None = None,
                num_workers: int | None = None, device=None, progress: bool = True) -> IndexReport:
    """Embed the audio files under ``paths`` into the archive at ``db_path`` (made if new).

    Resumable: files already in the archive with the same size and modification time are skipped; a changed file
    is replaced. Finished files are committed at least every ``COMMIT_EVERY_S`` seconds and when the run stops
    (also on KeyboardInterrupt), so an interrupted run keeps every file it finished before the last commit.
    """
    started = time.perf_counter()
    files = find_audio_files(paths)
    settings = archive_settings(model, layer=layer, pooling=pooling, window_s=window_s, hop_s=hop_s,
                                channels=channels, precision=precision)
    archive = Archive.create_or_open(db_path, settings)
    archive.repair()
    known = _known_recordings(archive)
    todo, skipped = [], []
    for f in files:
        entry = known.get(os.path.abspath(f))
        try:
            same = entry is not None and entry[1] == _file_key(f)
        except OSError:
            same = False
        if same:
            skipped.append(f)
            continue
        if entry is not None:  # changed since it was indexed
            archive.remove_recording(entry[0])
        todo.append(f)
    inference = {k: v for k, v in settings.items() if k not in ("embedding_dim", "provenance")}
    deployment = _deployment_id(archive)
    added, failures, windows, last_commit = [], {}, 0, time.monotonic()
    try:
        for result in iter_file_results(model, todo, inference, batch_size=batch_size, num_workers=num_workers,
                                        device=device, progress=progress):
            if result.error is not None:
                failures[result.path] = result.error
                continue
            windows += _insert_file(archive, deployment, result)
            added.append(result.path)
            if time.monotonic() - last_commit > COMMIT_EVERY_S:
                archive.commit()
                last_commit = time.monotonic()
    finally:
        archive.commit()
    return IndexReport(added, skipped, failures, windows, time.perf_counter() - started)
