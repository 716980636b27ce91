"""Search by example: embed query clips with the archive's settings and find the nearest windows (cosine);
write the hits as a CSV to label, or as Raven selection tables."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .archive import Archive
from .model import AvexEmbeddingModel
from .store import notice
from .versions import report_padded


@dataclasses.dataclass(frozen=True)
class Query:
    """A query clip: ``path`` and optionally the ``[start_s, end_s)`` seconds of it that hold the call."""

    path: str
    start_s: float | None = None
    end_s: float | None = None


_RANGE = re.compile(r"^(.*):([0-9.]+)-([0-9.]+)$")


def parse_query(text: str) -> Query:
    """``call.wav`` or ``call.wav:START-END`` (seconds) -> :class:`Query`."""
    if os.path.exists(text):
        return Query(text)
    match = _RANGE.match(text)
    if match is None:
        raise FileNotFoundError(f"query {text!r}: no such file; give FILE or FILE:START-END in seconds "
                                "(e.g. call.wav:3.5-6)")
    path, start, end = match.group(1), float(match.group(2)), float(match.group(3))
    if not os.path.exists(path):
        raise FileNotFoundError(f"query {text!r}: no such file {path!r}")
    if end <= start:
        raise ValueError(f"query {text!r}: the end ({end} s) must be after the start ({start} s)")
    return Query(path, start, end)


def embed_queries(model, queries: Sequence[Query], settings: dict, *, device=None) -> np.ndarray:
    """One vector ``[len(queries), dim]`` per query clip with the archive's ``settings``, its runtime and precision
    included (a clip longer than the window gives several windows, averaged). ValueError for a clip shorter than the
    model's minimum."""
    from ...audio.decoding import load_audio
    from ...encoder.model import MIN_SAMPLES
    from ...audio.windows import iter_array_windows

    adapter = AvexEmbeddingModel.from_model(model, window_size_s=settings["window_s"], hop_size_s=settings["hop_s"],
                                            layer=settings["layers"][0], pooling=settings["pooling"],
                                            precision=settings["precision"], device=device,
                                            runtime=settings.get("runtime", "torch"))
    out = []
    for q in queries:
        clip = load_audio(q.path, target_rate=model.sample_rate, start_s=q.start_s, end_s=q.end_s)
        samples = clip.waveform.shape[-1]
        if samples < MIN_SAMPLES:
            where = q.path if q.start_s is None else f"{q.path}:{q.start_s}-{q.end_s}"
            raise ValueError(f"query {where} is {samples / model.sample_rate:.3f} s long; the model needs at least "
                             f"{MIN_SAMPLES / model.sample_rate:.3f} s ({MIN_SAMPLES} samples at "
                             f"{model.sample_rate} Hz): select a longer stretch around the call")
        windows = iter_array_windows(clip.waveform, model.sample_rate, window_s=settings["window_s"],
                                     hop_s=settings["hop_s"])
        vectors = adapter.vectors(windows)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        out.append(vectors.mean(axis=0))
    return np.stack(out).astype(np.float32)


@dataclasses.dataclass
class Hit:
    """A window found by a search (or picked by detection), with the archive it is in."""

    window_id: int
    file: str
    channel: int
    start_s: float
    end_s: float
    score: float
    archive_id: str = ""
    start_time: str = ""  # ISO 8601 with the offset; "" where the recording's start is unknown
    end_time: str = ""


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def search_vectors(archive: Archive, vectors: np.ndarray, *, top: int = 100, combine: str = "mean",
                   exact: bool = False, candidates: int | None = None) -> list[Hit]:
    """Nearest windows by cosine to query ``vectors`` ``[q, dim]``; several queries' scores averaged or maxed.

    Each query's ``candidates`` (default ``8 * top``) nearest windows come from hoplite's search (usearch HNSW, or
    exact with ``exact=True``); the union is rescored exactly against every query and combined.
    """
    if combine not in ("mean", "max"):
        raise ValueError(f"combine must be 'mean' or 'max', got {combine!r}")
    if not (isinstance(top, int) and top >= 1):
        raise ValueError(f"top must be a positive int, got {top!r}")
    vectors = np.atleast_2d(np.asarray(vectors, np.float32))
    if vectors.shape[1] != archive.settings["embedding_dim"]:
        raise ValueError(f"query vectors are {vectors.shape[1]}-dim, the archive's {archive.settings['embedding_dim']}")
    if len(archive) == 0:
        return []
    count = min(len(archive), candidates or 8 * top)  # recall@100 0.79 at 1x, 0.93 at 4x, 0.98 at 8x (20 k vectors)
    ids: set[int] = set()
    for q in vectors:
        found = archive.db.ui.search(q, count=count, exact=exact)
        ids.update(int(k) for k in np.asarray(found.keys)[:count])
    ids_arr = np.array(sorted(ids), np.int64)
    scores = _unit(archive.vectors(ids_arr)) @ _unit(vectors).T  # [candidates, q]
    combined = scores.mean(axis=1) if combine == "mean" else scores.max(axis=1)
    order = np.lexsort((ids_arr, -combined))  # best first; equal scores: lower id first
    hits: list[Hit] = []
    # A reader may see a vector whose window a writer has just removed (the index file is replaced after the
    # tables commit): only windows in the tables are returned, the next candidates taking their places.
    taken = 0
    while len(hits) < top and taken < len(order):
        chunk = order[taken:taken + top - len(hits)]
        taken += len(chunk)
        table = archive.window_table(ids_arr[chunk], missing="skip")
        score = dict(zip(ids_arr[chunk].tolist(), combined[chunk].tolist()))
        hits += [Hit(int(w), str(f), int(c), float(s), float(e), score[int(w)], archive.identity, t0, t1)
                 for w, f, c, s, e, t0, t1 in zip(table["window_id"], table["file"], table["channel"],
                                                  table["start_s"], table["end_s"], table["start_time"],
                                                  table["end_time"])]
    return hits


def search(archive: Archive, model, queries: Sequence[Query], *, top: int = 100, combine: str = "mean",
           exact: bool = False, device=None) -> list[Hit]:
    """Embed ``queries`` with the archive's settings (``model`` must be the one it was built with) and search."""
    archive.check_model(model, what="the query model")
    report_padded(archive)
    hits = search_vectors(archive, embed_queries(model, queries, archive.settings, device=device), top=top,
                          combine=combine, exact=exact)
    report_missing_audio(archive, [h.file for h in hits], "hits")
    return hits


def report_missing_audio(archive: Archive, files: Sequence[str], what: str) -> list[str]:
    """An :class:`~avex_hub.integrations.agile.archive.ArchiveNotice` when some of ``files`` (the files of
    ``what``) are no longer where they were indexed; returns those files."""
    missing = archive.missing_files(files)
    if missing:
        notice(f"{len(missing)} files of the {what} are no longer where they were indexed (e.g. {missing[0]}); "
               f"`avex-hub prune --db {archive.path}` removes them from the archive, their labels exported first")
    return missing


HIT_COLUMNS = ("window_id", "file", "channel", "start_s", "end_s", "score", "label", "label_type", "archive_id",
               "start_time", "end_time")


def write_hits_csv(hits: Sequence[Hit], path: str | os.PathLike, *, label: str = "") -> Path:
    """Hits as a CSV to label: fill ``label`` (a class name) and ``label_type`` (positive/negative/uncertain).
    ``label`` prefills the label column; ``label_type`` is left empty, and a row without one stores nothing.
    Each row names its window by ``archive_id`` and ``file``, ``channel``, ``start_s``, ``end_s``; ``start_time``
    and ``end_time`` give it in absolute time (ISO 8601 with the offset; empty where the recording's start is
    unknown)."""
    from ...embed.outputs import atomic_path

    with atomic_path(path, ".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(HIT_COLUMNS)
            for h in hits:
                writer.writerow([h.window_id, h.file, h.channel, f"{h.start_s:.6f}", f"{h.end_s:.6f}",
                                 f"{h.score:.6f}", label, "", h.archive_id, h.start_time, h.end_time])
    return Path(path)


def write_hits_raven(hits: Sequence[Hit], folder: str | os.PathLike, *, name: str = "query") -> list[Path]:
    """One Raven selection table per file with hits (Species = ``name``, Score = the similarity)."""
    from ...embed.outputs import raven_names, write_raven_tables

    files = list(dict.fromkeys(h.file for h in hits))

    def parts():
        for f in files:
            mine = sorted((h for h in hits if h.file == f), key=lambda h: (h.start_s, h.channel))
            yield f, {"start_s": np.array([h.start_s for h in mine]), "end_s": np.array([h.end_s for h in mine]),
                      "channel": np.array([h.channel for h in mine], np.int32),
                      "top_scores": np.array([[h.score] for h in mine], np.float32),
                      "top_indices": np.zeros((len(mine), 1), np.int32)}

    return write_raven_tables(folder, parts(), (name,), raven_names(files), min_score=-math.inf)
