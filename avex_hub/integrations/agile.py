"""Agile modelling on a perch-hoplite embedding database: index an archive, search by example, label, train, detect.

    from avex_hub.integrations import agile
    report = agile.index_files(model, ["recordings/"], "archive/")          # resumable; new files only on a re-run
    archive = agile.Archive.open("archive/")
    hits = agile.search(archive, model, [agile.Query("call.wav", 3.0, 5.5)], top=100)
    agile.write_hits_csv(hits, "hits.csv")          # fill the label / label_type columns, then
    agile.add_labels_csv(archive, "hits.csv")       # labels live in the database (hoplite annotations)
    agile.train_classifier(archive, "probe.safetensors")   # our probe format, with provenance
    detections = agile.detect(archive, "probe.safetensors")
    detections.uncertain(50)                        # margin sampling for the next round

The database is hoplite's own (``perch_hoplite.db.sqlite_usearch_impl``: SQLite tables + a usearch vector index,
cosine metric, float16 vectors: the only
vector type hoplite 1.0 stores), so hoplite's notebooks and search work on it. It stores the raw pooled
embeddings (as ``avex-hub embed`` writes them), one row per window and channel, and under the metadata key
``avex_hub`` the settings that made them (weights digest, layer, pooling, window, hop, channels, precision and
the :class:`~avex_hub.hub.provenance.Provenance` of the embeddings). Searching with another model or settings, and
detecting with a probe trained on other embeddings, are refused with a :class:`SettingsMismatchError` naming both.

:class:`AvexEmbeddingModel` implements hoplite's ``EmbeddingModel`` interface on our model (for hoplite's own
``EmbedWorker`` and notebooks); ``index_files`` is built on :func:`avex_hub.embed.inference.iter_file_results`, the code
behind ``avex-hub embed``, so both run at the same speed. Needs ``pip install 'avex-hub[agile]'``. Importing this
module imports perch-hoplite, which registers a SQLite adapter for Python lists (its own storage format).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

try:
    from ml_collections import config_dict
    from perch_hoplite.db import datatypes as hoplite_types
    from perch_hoplite.db import sqlite_usearch_impl
    from perch_hoplite.zoo import zoo_interface
except ImportError as _error:  # pragma: no cover - depends on the environment
    raise ImportError("avex_hub.integrations.agile needs perch-hoplite: pip install 'avex-hub[agile]'") from _error

from ..embed.inference import find_audio_files, inference_settings, iter_file_results
from ..hub.provenance import Provenance

__all__ = [
    "AvexEmbeddingModel", "Archive", "IndexReport", "Query", "Hit", "Detections", "SettingsMismatchError",
    "archive_settings", "index_files", "parse_query", "embed_queries", "search", "write_hits_csv",
    "write_hits_raven", "add_labels", "add_labels_csv", "read_labels_csv", "labelled_windows",
    "train_classifier", "detect", "label_widget", "METADATA_KEY", "LABEL_TYPES",
]

METADATA_KEY = "avex_hub"  # hoplite metadata key holding our settings (JSON)
DEPLOYMENT, PROJECT = "archive", "avex-hub"  # every recording of an archive sits in one hoplite deployment
LABEL_TYPES = {"positive": hoplite_types.LabelType.POSITIVE, "negative": hoplite_types.LabelType.NEGATIVE,
               "uncertain": hoplite_types.LabelType.UNCERTAIN}
# What must be equal for stored vectors to be comparable with new ones (search) or to be added to (index).
SEARCH_KEYS = ("weights_sha256", "embedding_dim", "layers", "pooling", "window_s", "hop_s", "sample_rate")
INDEX_KEYS = SEARCH_KEYS + ("model", "channels", "precision")
COMMIT_EVERY_S = 30.0  # index: commit (SQLite + the vector index file) at most this often, and at the end


class SettingsMismatchError(ValueError):
    """A database, query model or probe made with other weights or settings; ``differences`` lists them."""

    def __init__(self, message: str, differences: list[str]) -> None:
        super().__init__(message)
        self.differences = differences


# -- settings ---------------------------------------------------------------------------------------------------
def archive_settings(model, *, layer: int = -1, pooling: str = "mean", window_s: float | None = None,
                     hop_s: float | None = None, channels="mix", precision: str = "fp32") -> dict:
    """The settings an archive records: those of ``avex-hub embed`` (one layer) plus the embeddings' provenance."""
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise ValueError(f"an archive holds one layer's embeddings: layer must be an int (e.g. -1), got {layer!r}")
    settings = inference_settings(model, "embed", window_s=window_s, hop_s=hop_s, channels=channels, layers=layer,
                                  pooling=pooling, precision=precision)
    provenance = Provenance.from_model(model, layers=settings["layers"], pooling=pooling)
    return {**settings, "embedding_dim": model.embedding_dim, "provenance": provenance.to_dict()}


def _differences(recorded: dict, given: dict, keys: Sequence[str]) -> list[str]:
    return [f"{k}: database {recorded.get(k, '(absent)')!r}, given {given.get(k, '(absent)')!r}"
            for k in keys if recorded.get(k, "(absent)") != given.get(k, "(absent)")]


def _mismatch(where: str, diffs: list[str], fix: str) -> SettingsMismatchError:
    return SettingsMismatchError(f"{where} ({len(diffs)} difference{'s' if len(diffs) > 1 else ''}):\n  - "
                                 + "\n  - ".join(diffs) + f"\nTo fix: {fix}", diffs)


# -- the database -----------------------------------------------------------------------------------------------
class Archive:
    """A hoplite database made by :func:`index_files`; ``db`` is the hoplite object, ``settings`` ours."""

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
            diffs = _differences(archive.settings, settings, INDEX_KEYS)
            if diffs:
                raise _mismatch(f"{path} was built with other settings", diffs,
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
        are re-embedded on the next run (``_repair``). Where hoplite's bookkeeping is not what this expects, its
        own commit does the writing."""
        from ..embed.outputs import atomic_path

        self.db.db.commit()
        if getattr(self.db, "_ui_updated", False) and getattr(self.db, "_ui_loaded", False):
            with atomic_path(self.path / sqlite_usearch_impl.UINDEX_FILENAME, ".index") as tmp:
                self.db.ui.save(str(tmp))
            self.db._ui_updated = False
        self.db.commit()  # closes hoplite's cursor; its index is saved already

    @property
    def provenance(self) -> Provenance:
        return Provenance.from_dict(self.settings["provenance"], source=f"{self.path} metadata")

    def check_model(self, model, *, what: str = "this model") -> None:
        """SettingsMismatchError unless ``model`` makes vectors comparable with the stored ones."""
        given = {**self.settings, "weights_sha256": model.weights_sha256, "embedding_dim": model.embedding_dim,
                 "sample_rate": model.sample_rate}
        diffs = _differences(self.settings, given, ("weights_sha256", "embedding_dim", "sample_rate"))
        if not diffs:
            diffs = self.provenance.differences(model)
        if diffs:
            raise _mismatch(f"{self.path} was built with other weights than {what} ({model.name})", diffs,
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


# -- hoplite's model interface ----------------------------------------------------------------------------------
@dataclasses.dataclass
class AvexEmbeddingModel(zoo_interface.EmbeddingModel):
    """Our model behind hoplite's ``EmbeddingModel``: ``embed(audio [samples] at 16 kHz)`` -> embeddings
    ``[windows, channels, dim]`` with our windowing (``window_size_s``/``hop_size_s``), layer, pooling, precision.

    Build it with :meth:`from_model` (or :meth:`from_config`, hoplite's way: ``model`` name, ``checkpoint``,
    ``layer``, ``pooling``, ``window_size_s``, ``hop_size_s``, ``precision``, ``device``, ``batch_size``).
    """

    model: Any = None
    window_size_s: float | None = None  # None: the model's preprocessing.window_s
    hop_size_s: float | None = None
    layer: int = -1
    pooling: str = "mean"
    precision: str = "fp32"
    device: Any = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        from ..encoder.precision import device_for, prepare_for_inference

        if self.model is None:
            raise ValueError("AvexEmbeddingModel needs model=<an AvexModel>; use AvexEmbeddingModel.from_model(model)")
        if self.sample_rate != self.model.sample_rate:
            raise ValueError(f"sample_rate={self.sample_rate} but {self.model.name} takes {self.model.sample_rate} Hz; "
                             "hoplite resamples to the model's rate, so pass the model's")
        if self.window_size_s is None:
            self.window_size_s = float(self.model.preprocessing.window_s)
        self.hop_size_s = float(self.window_size_s if self.hop_size_s is None else self.hop_size_s)
        self.settings = archive_settings(self.model, layer=self.layer, pooling=self.pooling,
                                         window_s=self.window_size_s, hop_s=self.hop_size_s, precision=self.precision)
        self._device = device_for(self.model, self.device)
        self._net = prepare_for_inference(self.model, self.precision, self._device)

    @classmethod
    def from_model(cls, model, **kwargs) -> "AvexEmbeddingModel":
        return cls(sample_rate=model.sample_rate, model=model, **kwargs)

    @classmethod
    def from_config(cls, model_config) -> "AvexEmbeddingModel":
        from ..hub.loading import build_model

        config = dict(model_config)
        model = build_model(config.pop("model", "esp_aves2_sl_beats_all"), checkpoint=config.pop("checkpoint", None))
        config.setdefault("device", "auto")  # the model is built here, on no device yet: as the command line does
        return cls.from_model(model, **config)

    def embed(self, audio_array: np.ndarray) -> zoo_interface.InferenceOutputs:
        """``audio_array`` ``[samples]`` (or ``[channels, samples]``) at ``sample_rate`` -> ``[windows, channels, dim]``."""
        from ..audio.windows import windows_from_array

        audio = np.asarray(audio_array, np.float32)
        windows = windows_from_array(audio, self.sample_rate, window_s=self.window_size_s, hop_s=self.hop_size_s,
                                     channels="all" if audio.ndim == 2 else "mix")
        vectors = self._vectors(torch.stack([w.audio for w in windows]), torch.stack([w.padding_mask for w in windows]))
        channels = 1 if audio.ndim == 1 else audio.shape[0]
        return zoo_interface.InferenceOutputs(embeddings=vectors.reshape(-1, channels, vectors.shape[-1]))

    def batch_embed(self, audio_batch: np.ndarray) -> zoo_interface.InferenceOutputs:
        return zoo_interface.batch_embed_from_embed_fn(self.embed, audio_batch)

    def _vectors(self, audio: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        from ..encoder.precision import inference_context

        out = []
        for i in range(0, len(audio), self.batch_size):
            with inference_context(self.precision, self._device):
                pooled = self._net.pooled_layers(audio[i:i + self.batch_size].to(self._device),
                                                 mask[i:i + self.batch_size].to(self._device),
                                                 layers=self.settings["layers"], pooling=self.pooling)
            out.append(pooled[:, 0].float().cpu().numpy())
        return np.concatenate(out)


# -- indexing ---------------------------------------------------------------------------------------------------
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


def _repair(archive: Archive) -> None:
    """Undo what a run stopped between the SQLite commit and the index save leaves behind: recordings whose
    windows lack vectors are dropped (and embedded again as new files), and vectors whose windows are gone (a
    replaced or removed file) are removed, so that a search never returns a window the tables do not hold."""
    cursor = archive.db.db.cursor()
    cursor.execute("SELECT id, recording_id FROM windows")
    rows = cursor.fetchall()
    ids = np.array([r[0] for r in rows], np.int64)
    stored = np.asarray(archive.db.ui.keys, np.int64) if len(archive) else np.zeros(0, np.int64)
    stale = np.setdiff1d(stored, ids)
    present = np.isin(ids, stored)
    broken = {rows[i][1] for i in np.flatnonzero(~present)}
    for recording_id in broken:  # re-embedded below, as new files
        _remove_recording(archive, recording_id)
    _remove_vectors(archive, stale)
    if broken or len(stale):
        archive.commit()


def _remove_vectors(archive: Archive, ids: np.ndarray) -> None:
    """Remove the vectors of window ``ids`` from the index (all of them present in it)."""
    if len(ids) == 0:
        return
    if not archive.db._ui_loaded:  # noqa: SLF001 - hoplite memory-maps the index until it is changed
        archive.db.ui.load()
        archive.db._ui_loaded = True  # noqa: SLF001
    archive.db.ui.remove(np.asarray(ids, np.int64))
    archive.db._ui_updated = True  # noqa: SLF001


def _remove_recording(archive: Archive, recording_id: int) -> None:
    cursor = archive.db.db.cursor()
    cursor.execute("SELECT id FROM windows WHERE recording_id = ?", (recording_id,))
    ids = [r[0] for r in cursor.fetchall()]
    if ids and len(archive):
        present = np.asarray(archive.db.ui.contains(np.array(ids, np.int64)))
        _remove_vectors(archive, np.array(ids, np.int64)[present])
    archive.db.remove_recording(recording_id)  # windows and annotations cascade


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
    _repair(archive)
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
            _remove_recording(archive, entry[0])
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


# -- queries and search -----------------------------------------------------------------------------------------
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
    """One vector ``[len(queries), dim]`` per query clip with the archive's ``settings`` (a clip longer than the
    window gives several windows, averaged). ValueError for a clip shorter than the model's minimum."""
    from ..audio.contract import load_audio
    from ..encoder.model import MIN_SAMPLES
    from ..audio.windows import windows_from_array

    adapter = AvexEmbeddingModel.from_model(model, window_size_s=settings["window_s"], hop_size_s=settings["hop_s"],
                                            layer=settings["layers"][0], pooling=settings["pooling"],
                                            precision=settings["precision"], device=device)
    out = []
    for q in queries:
        clip = load_audio(q.path, target_rate=model.sample_rate, start_s=q.start_s, end_s=q.end_s)
        samples = clip.waveform.shape[-1]
        if samples < MIN_SAMPLES:
            where = q.path if q.start_s is None else f"{q.path}:{q.start_s}-{q.end_s}"
            raise ValueError(f"query {where} is {samples / model.sample_rate:.3f} s long; the model needs at least "
                             f"{MIN_SAMPLES / model.sample_rate:.3f} s ({MIN_SAMPLES} samples at "
                             f"{model.sample_rate} Hz): select a longer stretch around the call")
        windows = windows_from_array(clip.waveform, model.sample_rate, window_s=settings["window_s"],
                                     hop_s=settings["hop_s"])
        vectors = adapter._vectors(torch.stack([w.audio for w in windows]),  # noqa: SLF001 - same module
                                   torch.stack([w.padding_mask for w in windows]))
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        out.append(vectors.mean(axis=0))
    return np.stack(out).astype(np.float32)


@dataclasses.dataclass
class Hit:
    window_id: int
    file: str
    channel: int
    start_s: float
    end_s: float
    score: float


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
    order = np.lexsort((ids_arr, -combined))[:top]  # best first; equal scores: lower id first
    table = archive.window_table(ids_arr[order])
    return [Hit(int(table["window_id"][i]), str(table["file"][i]), int(table["channel"][i]),
                float(table["start_s"][i]), float(table["end_s"][i]), float(combined[order[i]]))
            for i in range(len(order))]


def search(archive: Archive, model, queries: Sequence[Query], *, top: int = 100, combine: str = "mean",
           exact: bool = False, device=None) -> list[Hit]:
    """Embed ``queries`` with the archive's settings (``model`` must be the one it was built with) and search."""
    archive.check_model(model, what="the query model")
    return search_vectors(archive, embed_queries(model, queries, archive.settings, device=device), top=top,
                          combine=combine, exact=exact)


HIT_COLUMNS = ("window_id", "file", "channel", "start_s", "end_s", "score", "label", "label_type")


def write_hits_csv(hits: Sequence[Hit], path: str | os.PathLike, *, label: str = "") -> Path:
    """Hits as a CSV to label: fill ``label`` (a class name) and ``label_type`` (positive/negative/uncertain)."""
    from ..embed.outputs import atomic_path

    with atomic_path(path, ".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(HIT_COLUMNS)
            for h in hits:
                writer.writerow([h.window_id, h.file, h.channel, f"{h.start_s:.6f}", f"{h.end_s:.6f}",
                                 f"{h.score:.6f}", label, ""])
    return Path(path)


def write_hits_raven(hits: Sequence[Hit], folder: str | os.PathLike, *, name: str = "query") -> list[Path]:
    """One Raven selection table per file with hits (Species = ``name``, Score = the similarity)."""
    from ..embed.outputs import raven_names, write_raven_tables

    files = list(dict.fromkeys(h.file for h in hits))

    def parts():
        for f in files:
            mine = sorted((h for h in hits if h.file == f), key=lambda h: (h.start_s, h.channel))
            yield f, {"start_s": np.array([h.start_s for h in mine]), "end_s": np.array([h.end_s for h in mine]),
                      "channel": np.array([h.channel for h in mine], np.int32),
                      "top_scores": np.array([[h.score] for h in mine], np.float32),
                      "top_indices": np.zeros((len(mine), 1), np.int32)}

    return write_raven_tables(folder, parts(), (name,), raven_names(files), min_score=-math.inf)


# -- labels -----------------------------------------------------------------------------------------------------
def add_labels(archive: Archive, labels: Sequence[tuple[int, str, str]], *, provenance: str = "avex-hub") -> int:
    """Store ``(window_id, label, label_type)`` as hoplite annotations on those windows; a window's earlier
    annotation with the same label is replaced (relabelling). Returns the number stored."""
    stored = 0
    for window_id, label, kind in labels:
        label, kind = str(label).strip(), (str(kind).strip().lower() or "positive")
        if kind not in LABEL_TYPES:
            raise ValueError(f"window {window_id}: label_type must be one of {sorted(LABEL_TYPES)}, got {kind!r}")
        if not label:
            raise ValueError(f"window {window_id}: empty label")
        try:
            window = archive.db.get_window(int(window_id))
        except Exception as error:  # noqa: BLE001 - hoplite raises KeyError/ValueError depending on the backend
            raise ValueError(f"window {window_id} is not in {archive.path} (labels from another database?)") from error
        cursor = archive.db.db.cursor()
        cursor.execute("SELECT id, offsets FROM annotations WHERE recording_id = ? AND label = ?",
                       (window.recording_id, label))
        for annotation_id, offsets in cursor.fetchall():
            if np.allclose(offsets, window.offsets, atol=1e-6):
                archive.db.remove_annotation(annotation_id)
        archive.db.insert_annotation(window.recording_id, list(window.offsets), label, LABEL_TYPES[kind],
                                     provenance=provenance, handle_duplicates="allow")
        stored += 1
    archive.commit()
    return stored


def read_labels_csv(path: str | os.PathLike) -> list[tuple[int, str, str]]:
    """``(window_id, label, label_type)`` of the rows of a hits CSV whose ``label`` is filled in."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"window_id", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: columns {sorted(missing)} missing; label the CSV that `avex-hub search` or "
                             f"`avex-hub detect --uncertain` wrote (columns {', '.join(HIT_COLUMNS)})")
        out = []
        for line, row in enumerate(reader, start=2):
            if (row.get("label") or "").strip():
                try:
                    out.append((int(row["window_id"]), row["label"], row.get("label_type") or "positive"))
                except ValueError:
                    raise ValueError(f"{path} line {line}: window_id {row['window_id']!r} is not an integer") from None
    return out


def add_labels_csv(archive: Archive, path: str | os.PathLike) -> int:
    """Read a labelled hits CSV back into the archive (see :func:`add_labels`)."""
    return add_labels(archive, read_labels_csv(path), provenance=f"avex-hub csv {Path(path).name}")


def labelled_windows(archive: Archive) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(window_ids, targets [n, classes], class names)``: 1 positive, 0 negative, nan unknown.

    An annotation labels the window with the same offsets, else the windows of its recording that hold its
    midpoint. A window positive for one class is a negative for the classes it is not labelled with.
    """
    cursor = archive.db.db.cursor()
    cursor.execute("SELECT recording_id, offsets, label, label_type FROM annotations")
    annotations = [(r, o, lab, int(t)) for r, o, lab, t in cursor.fetchall()
                   if int(t) != int(hoplite_types.LabelType.UNCERTAIN)]
    names = sorted({a[2] for a in annotations})
    cursor.execute("SELECT id, recording_id, offsets FROM windows")
    by_recording: dict[int, list[tuple[int, list[float]]]] = {}
    for wid, rid, offsets in cursor.fetchall():
        by_recording.setdefault(rid, []).append((wid, offsets))
    marks: dict[int, dict[str, int]] = {}
    for rid, offsets, label, kind in annotations:
        windows = by_recording.get(rid, [])
        same = [w for w, o in windows if np.allclose(o, offsets, atol=1e-6)]
        middle = (offsets[0] + offsets[1]) / 2
        for w in same or [w for w, o in windows if o[0] <= middle < o[1]]:
            marks.setdefault(w, {})[label] = kind
    ids = np.array(sorted(marks), np.int64)
    targets = np.full((len(ids), len(names)), np.nan, np.float32)
    for row, w in enumerate(ids):
        positive = any(k == 1 for k in marks[w].values())
        for col, name in enumerate(names):
            kind = marks[w].get(name)
            targets[row, col] = kind if kind is not None else (0.0 if positive else np.nan)
    return ids, targets, names


# -- classifier -------------------------------------------------------------------------------------------------
def train_classifier(archive: Archive, out: str | os.PathLike, *, epochs: int = 300, lr: float = 0.01,
                     weight_decay: float = 1e-3, seed: int = 0) -> Path:
    """A linear probe (one sigmoid per label) on the stored embeddings of the labelled windows, saved in our probe
    format with the archive's provenance (``load_probe`` and ``torch.hub`` load it). Positives and negatives of
    each class are weighted equally. ValueError when a class lacks positives or negatives."""
    from ..heads.probes import Probe, save_probe

    ids, targets, names = labelled_windows(archive)
    if not names:
        raise ValueError(f"{archive.path} has no labels yet; label search hits (CSV or widget) first")
    known = ~np.isnan(targets)
    positives, negatives = ((targets == 1) & known).sum(0), ((targets == 0) & known).sum(0)
    short = [f"{n} ({p} positive, {q} negative)" for n, p, q in zip(names, positives, negatives) if not (p and q)]
    if short:
        raise ValueError(f"each label needs at least one positive and one negative window; {', '.join(short)}: "
                         "label more windows (negatives: label_type 'negative')")
    x = torch.from_numpy(archive.vectors(ids))
    y = torch.from_numpy(np.nan_to_num(targets, nan=0.0))
    mask = torch.from_numpy(known.astype(np.float32))
    weight = mask * torch.where(y > 0, 0.5 / torch.from_numpy(positives).clamp(min=1).float(),
                                0.5 / torch.from_numpy(negatives).clamp(min=1).float())
    pooling = archive.settings["pooling"]
    probe = Probe(None, len(names), layers=archive.settings["layers"], embedding_dim=x.shape[1], pooling=pooling,
                  multilabel=True, label_names=names, seed=seed)
    mean, scale = x.mean(0), x.std(0).clamp(min=1e-6)  # standardised inputs train faster; folded in below
    head = torch.nn.Linear(x.shape[1], len(names))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head.reset_parameters()
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    xs = (x - mean) / scale
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(head(xs), y, reduction="none") * weight).sum()
        loss = loss / len(names)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        probe.head.weight.copy_(head.weight / scale)
        probe.head.bias.copy_(head.bias - (head.weight * mean / scale).sum(1))
    probe.provenance = dataclasses.replace(archive.provenance, label_names=tuple(names))
    metrics = {"train_windows": int(len(ids)), "train_loss": float(loss.detach()),
               **{f"positives/{n}": int(p) for n, p in zip(names, positives)},
               **{f"negatives/{n}": int(q) for n, q in zip(names, negatives)}}
    return save_probe(probe, out, metrics=metrics)


@dataclasses.dataclass
class Detections:
    """Scores ``[windows, labels]`` of every window (sigmoid of the probe), with the window table."""

    table: dict[str, np.ndarray]
    scores: np.ndarray
    labels: list[str]
    threshold: float

    def uncertain(self, count: int, label: str | None = None) -> list[Hit]:
        """Margin sampling: the ``count`` windows whose ``label`` score (default: the first) is nearest the threshold."""
        col = self.labels.index(label) if label is not None else 0
        order = np.lexsort((self.table["window_id"], np.abs(self.scores[:, col] - self.threshold)))[:count]
        return self._hits(order, col)

    def top(self, count: int, label: str | None = None) -> list[Hit]:
        col = self.labels.index(label) if label is not None else 0
        order = np.lexsort((self.table["window_id"], -self.scores[:, col]))[:count]
        return self._hits(order, col)

    def _hits(self, order, col) -> list[Hit]:
        t = self.table
        return [Hit(int(t["window_id"][i]), str(t["file"][i]), int(t["channel"][i]), float(t["start_s"][i]),
                    float(t["end_s"][i]), float(self.scores[i, col])) for i in order]

    def to_csv(self, path: str | os.PathLike) -> Path:
        """``window_id,file,channel,start_s,end_s`` and one score column per label, every window."""
        from ..embed.outputs import atomic_path

        with atomic_path(path, ".csv") as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["window_id", "file", "channel", "start_s", "end_s", *self.labels])
                t = self.table
                for i in range(len(self.scores)):
                    writer.writerow([int(t["window_id"][i]), t["file"][i], int(t["channel"][i]),
                                     f"{t['start_s'][i]:.6f}", f"{t['end_s'][i]:.6f}",
                                     *(f"{s:.6f}" for s in self.scores[i])])
        return Path(path)

    def to_raven(self, folder: str | os.PathLike) -> list[Path]:
        """One Raven table per file: windows whose best label reaches the threshold."""
        from ..embed.outputs import raven_names, write_raven_tables

        files = list(dict.fromkeys(self.table["file"].tolist()))
        best, score = self.scores.argmax(1).astype(np.int32), self.scores.max(1)

        def parts():
            for f in files:
                rows = np.flatnonzero(self.table["file"] == f)
                rows = rows[np.lexsort((self.table["channel"][rows], self.table["start_s"][rows]))]
                yield f, {"start_s": self.table["start_s"][rows], "end_s": self.table["end_s"][rows],
                          "channel": self.table["channel"][rows], "top_scores": score[rows, None],
                          "top_indices": best[rows, None]}

        return write_raven_tables(folder, parts(), tuple(self.labels), raven_names(files), self.threshold)


def detect(archive: Archive, probe_path: str | os.PathLike, *, threshold: float = 0.5,
           batch_size: int = 65536) -> Detections:
    """Score every window of the archive with a probe from :func:`train_classifier` (or any linear probe saved on
    the same weights, layer and pooling; SettingsMismatchError otherwise)."""
    from ..heads.probes import load_probe

    probe = load_probe(probe_path)
    recorded, ours = probe.provenance, archive.provenance
    diffs = [f"{k}: probe {getattr(recorded, k)!r}, database {getattr(ours, k)!r}"
             for k in ("backbone_sha256", "backbone_config_sha256", "preprocessing", "layers", "pooling")
             if getattr(recorded, k) != getattr(ours, k)]
    if diffs:
        raise _mismatch(f"{probe_path} was trained on other embeddings than those in {archive.path}", diffs,
                        "train a probe on this database (`avex-hub train-classifier`), or detect on a database "
                        "built with the probe's weights, layer and pooling")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    table = archive.window_table()
    scores = []
    with torch.no_grad():
        for i in range(0, len(table["window_id"]), batch_size):
            x = torch.from_numpy(archive.vectors(table["window_id"][i:i + batch_size]))
            scores.append(torch.sigmoid(probe.forward_embeddings(x)).numpy())
    labels = list(recorded.label_names or probe.label_names or [str(i) for i in range(probe.num_classes)])
    matrix = np.concatenate(scores) if scores else np.zeros((0, probe.num_classes), np.float32)
    return Detections(table, matrix, labels, threshold)


# -- notebook labelling -----------------------------------------------------------------------------------------
def label_widget(archive: Archive, hits: Sequence[Hit], label: str, *, audio: bool = True):
    """An ipywidgets form: one row per hit (file, time, score, a player) with positive/negative/skip buttons and a
    "Save labels" button that stores the choices in the archive. Returns the widget; ``widget.choices`` holds
    the toggles (set their ``value`` from code to label without clicking) and ``widget.save()`` saves."""
    import ipywidgets as widgets

    rows, choices = [], []
    for h in hits:
        toggle = widgets.ToggleButtons(options=["skip", "positive", "negative"], value="skip",
                                       style={"button_width": "70px"})
        parts = [widgets.HTML(f"<code>{Path(h.file).name}</code> {h.start_s:.1f}-{h.end_s:.1f} s "
                              f"ch {h.channel} score {h.score:.3f}"), toggle]
        if audio:
            parts.insert(1, widgets.Audio(value=_wav_bytes(h), format="wav", autoplay=False, loop=False))
        rows.append(widgets.HBox(parts))
        choices.append(toggle)
    status = widgets.HTML("")
    button = widgets.Button(description="Save labels", button_style="primary")
    box = widgets.VBox([widgets.HTML(f"<b>Label: {label}</b>"), *rows, widgets.HBox([button, status])])

    def save(_=None) -> int:
        picked = [(h.window_id, label, t.value) for h, t in zip(hits, choices) if t.value != "skip"]
        count = add_labels(archive, picked, provenance="avex-hub widget")
        status.value = f"saved {count} labels"
        return count

    button.on_click(save)
    box.choices, box.save = choices, save
    return box


def _wav_bytes(hit: Hit) -> bytes:
    import io

    import soundfile as sf

    from ..audio.contract import load_audio

    clip = load_audio(hit.file, channels="mix" if hit.channel < 0 else hit.channel, start_s=hit.start_s,
                      end_s=hit.end_s)
    wave = clip.waveform[0].numpy()
    buffer = io.BytesIO()
    sf.write(buffer, wave, clip.sample_rate, format="WAV")
    return buffer.getvalue()
