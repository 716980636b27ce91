"""Every asked label's score per window, and what made them: the input of events, review and calibration.

A score table holds one score per window and label, never top-k rows (a species outside a window's top k still
has a score there). Read from

* a wide CSV (``avex-hub detect`` writes one): ``file, channel, start_s, end_s`` (``window_id`` and the time and
  site columns allowed) and one score column per label;
* a long CSV or Parquet file: ``file, channel, start_s, end_s, label, score`` with every window holding a row for
  every label (``classify --species``). A top-k classify output (a ``rank`` column) is refused with what to run.

What made the scores (:class:`ScoreSource`: the model's weights digest, and the probe file's digest when a probe
scored them) comes from the sidecar ``<table>.settings.json`` that ``classify`` and :func:`write_scores` write, or
from the probe file itself (``ScoreSource.of_probe``); thresholds are fitted to it and refused for any other.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .tables import read_table, write_table

__all__ = ["ScoreSource", "ScoreTable", "read_scores", "write_scores", "window_embeddings", "score_with_probe",
           "score_with_head", "embedding_chunks", "META_COLUMNS"]

META_COLUMNS = ("window_id", "file", "channel", "start_s", "end_s", "flags", "start_time", "end_time", "site",
                "latitude", "longitude", "deployment")
_PROBABILITY = "probability:"  # calibrated columns written beside raw scores; not scores themselves


@dataclass(frozen=True)
class ScoreSource:
    """What produced a score table: ``weights_sha256`` of the model, ``probe_sha256`` of the probe file (None for
    the model's own species head), and the model's name, window and hop for the record."""

    weights_sha256: str | None
    probe_sha256: str | None = None
    model: str | None = None
    window_s: float | None = None
    hop_s: float | None = None

    @classmethod
    def of_probe(cls, path: str | os.PathLike, *, window_s: float | None = None,
                 hop_s: float | None = None) -> "ScoreSource":
        """The source of scores made by the probe saved at ``path`` (its digest and its backbone's)."""
        from ..hub.loading import sha256_file
        from ..hub.provenance import read_probe_metadata

        provenance = read_probe_metadata(path)["provenance"]
        return cls(provenance.backbone_sha256, sha256_file(path), provenance.backbone_name, window_s, hop_s)

    @classmethod
    def from_settings(cls, settings: dict) -> "ScoreSource":
        return cls(settings.get("weights_sha256"), settings.get("probe_sha256"), settings.get("model"),
                   settings.get("window_s"), settings.get("hop_s"))

    def to_dict(self) -> dict:
        return asdict(self)

    def differences(self, other: "ScoreSource") -> list[str]:
        """The identity fields (weights and probe digests) in which ``other`` differs, as ``name: ours vs theirs``."""
        return [f"{k}: {getattr(self, k)} vs {getattr(other, k)}" for k in ("weights_sha256", "probe_sha256")
                if getattr(self, k) != getattr(other, k)]


@dataclass
class ScoreTable:
    """``scores`` float32 [windows, labels] with the window table (``file``, ``channel``, ``start_s``, ``end_s``);
    ``failures``: ``{recording: why}`` of recordings that could not be scored (none of their windows are here)."""

    file: np.ndarray
    channel: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    scores: np.ndarray
    labels: list[str]
    source: ScoreSource
    failures: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.file)
        shapes = [len(a) for a in (self.channel, self.start_s, self.end_s)]
        if shapes != [n] * 3 or self.scores.shape != (n, len(self.labels)):
            raise ValueError(f"score table: {n} windows but {self.scores.shape} scores for {len(self.labels)} labels")
        if n and not (np.isfinite(self.scores).all() and self.scores.min() >= 0 and self.scores.max() <= 1):
            raise ValueError("score table: scores must be probabilities in [0, 1] (sigmoid scores), found values "
                             f"from {np.nanmin(self.scores)} to {np.nanmax(self.scores)}")

    def __len__(self) -> int:
        return len(self.file)

    def index(self, label: str) -> int:
        """The column of ``label``; ValueError naming the table's labels when it has none."""
        if label not in self.labels:
            raise ValueError(f"label {label!r} is not in the score table (it has {len(self.labels)}: "
                             f"{', '.join(self.labels[:10])}{' ...' if len(self.labels) > 10 else ''})")
        return self.labels.index(label)

    def column(self, label: str) -> np.ndarray:
        return self.scores[:, self.index(label)]

    def select(self, labels: list[str]) -> "ScoreTable":
        """The same windows with only ``labels``' columns, in that order."""
        columns = [self.index(label) for label in labels]
        return ScoreTable(self.file, self.channel, self.start_s, self.end_s, self.scores[:, columns], list(labels),
                          self.source)

    def durations(self) -> dict[str, float]:
        """``{file: seconds of audio scored}`` (the end of each file's last window), in table order."""
        out: dict[str, float] = {}
        for f, end in zip(self.file.tolist(), self.end_s.tolist()):
            out[f] = max(out.get(f, 0.0), end)
        return out


def _settings_path(path: Path) -> Path:
    return Path(f"{path}.settings.json")


def _read_source(path: Path) -> ScoreSource | None:
    sidecar = _settings_path(path)
    if not sidecar.is_file():
        return None
    return ScoreSource.from_settings(json.loads(sidecar.read_text(encoding="utf-8")))


def read_scores(path: str | os.PathLike, *, source: ScoreSource | None = None) -> ScoreTable:
    """A score table from ``path`` (CSV, or Parquet with pyarrow); ``source`` overrides its sidecar's record."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"score table {path} not found; give a classify --species or detect output")
    header, rows = (_parquet_rows(path) if path.suffix.lower() == ".parquet" else read_table(path))
    if "rank" in header:
        raise ValueError(f"{path} holds top-k rows (a rank column): a label outside a window's top k has no score "
                         "there. Run classify with --species FILE (every asked label's score per window), or use a "
                         "detect output")
    missing = [c for c in ("file", "channel", "start_s", "end_s") if c not in header]
    if missing:
        raise ValueError(f"{path}: missing the column(s) {', '.join(missing)}; expected a classify --species or "
                         "detect output")
    long = "label" in header and "score" in header
    table = _from_long(rows, path) if long else _from_wide(header, rows, path)
    return ScoreTable(*table, source=source or _read_source(path) or ScoreSource(None))


def _parquet_rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"{path}: reading Parquet needs pyarrow (pip install 'avex-hub[cli]'), or give a "
                         "CSV") from None
    data = pq.read_table(path).to_pydict()
    header = list(data)
    n = len(data[header[0]]) if header else 0
    return header, [(i + 2, {k: str(data[k][i]) for k in header}) for i in range(n)]


def _window(row: dict, where: str) -> tuple[str, int, float, float]:
    try:
        return row["file"], int(row["channel"]), float(row["start_s"]), float(row["end_s"])
    except ValueError:
        raise ValueError(f"{where}: channel, start_s and end_s must be numbers") from None


def _score(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: score {text!r} is not a number") from None


def _from_long(rows, path):
    windows: dict[tuple, int] = {}
    labels: dict[str, int] = {}
    cells = []
    for line, row in rows:
        where = f"{path}, line {line}"
        w = windows.setdefault(_window(row, where), len(windows))
        j = labels.setdefault(row["label"], len(labels))
        cells.append((w, j, _score(row["score"], where)))
    scores = np.full((len(windows), len(labels)), np.nan, np.float32)
    for w, j, s in cells:
        scores[w, j] = s
    if np.isnan(scores).any():
        w, j = (int(v[0]) for v in np.nonzero(np.isnan(scores)))
        key = list(windows)[w]
        raise ValueError(f"{path}: window {key[0]} {key[2]}-{key[3]} s has no score for {list(labels)[j]!r}: every "
                         "window needs every label's score (classify --species writes them all)")
    return (*_window_arrays(list(windows)), scores, list(labels))


def _from_wide(header, rows, path):
    labels = [h for h in header if h not in META_COLUMNS and not h.startswith(_PROBABILITY)]
    if not labels:
        raise ValueError(f"{path}: no score columns (expected one column per label after file, channel, start_s, "
                         "end_s)")
    keys, scores = [], np.empty((len(rows), len(labels)), np.float32)
    for i, (line, row) in enumerate(rows):
        where = f"{path}, line {line}"
        keys.append(_window(row, where))
        scores[i] = [_score(row[label], where) for label in labels]
    return (*_window_arrays(keys), scores, labels)


def _window_arrays(keys: list[tuple]) -> tuple[np.ndarray, ...]:
    return (np.array([k[0] for k in keys], dtype=object), np.array([k[1] for k in keys], dtype=np.int32),
            np.array([k[2] for k in keys], dtype=np.float64), np.array([k[3] for k in keys], dtype=np.float64))


def write_scores(path: str | os.PathLike, table: ScoreTable, *, recordings=None, calibration=None) -> int:
    """A wide CSV of ``table`` and its sidecar ``<path>.settings.json`` (the source); returns the row count.

    ``recordings`` (``{file: Recording}``): ``start_time``/``end_time`` (ISO 8601 with the offset, empty where a
    recording's start is unknown), ``site``, ``latitude`` and ``longitude`` after the window columns.
    ``calibration`` (:class:`avex_hub.monitoring.calibration.Thresholds`, checked against the table's source): a
    ``probability:<label>`` column beside the raw scores for each label it has a fitted model of.
    """
    from ..embed.outputs import atomic_path

    header = ["file", "channel", "start_s", "end_s"]
    columns = [table.file, table.channel, table.start_s, table.end_s]
    if recordings is not None:
        header += ["start_time", "end_time", "site", "latitude", "longitude"]
        columns += _placed_columns(table, recordings)
    header += table.labels
    columns += list(table.scores.T)
    if calibration is not None:
        calibration.check(table.source)
        for label in table.labels:
            probability = calibration.probability(label, table.column(label))
            if probability is not None:
                header.append(_PROBABILITY + label)
                columns.append(np.asarray(probability, np.float32))
    with atomic_path(_settings_path(Path(path)), ".json") as tmp:
        tmp.write_text(json.dumps(table.source.to_dict(), indent=1) + "\n", encoding="utf-8")
    return write_table(path, header, zip(*columns))


def _placed_columns(table: ScoreTable, recordings) -> list[list]:
    """Per window: start and end time, site, latitude, longitude from ``recordings`` (``{file: Recording}``)."""
    from .times import iso

    out = [[], [], [], [], []]
    for f, start, end in zip(table.file.tolist(), table.start_s.tolist(), table.end_s.tolist()):
        r = recordings.get(f)
        values = ((iso(r.time_at(start)), iso(r.time_at(end)), r.site, r.latitude, r.longitude) if r is not None
                  else ("", "", None, None, None))
        for column, value in zip(out, values):
            column.append(value)
    return out


# -- scores from a probe: a user's own head on the file pipeline's embeddings ---------------------------------------
def window_embeddings(model, paths, *, layers, window_s: float, hop_s: float, progress: bool = False,
                      failures: dict | None = None) -> dict:
    """Pooled embeddings of every window of ``paths`` (:func:`avex_hub.embed.inference.embed_files`, mean pooling)
    as ``{"embeddings": [windows, layers, C], "file", "channel", "start_s", "end_s"}``. A recording that cannot be
    read is a ValueError, or goes into ``failures`` (``{path: why}``) when a dict is given."""
    import torch

    from ..embed.inference import embed_files

    result = embed_files(model, [str(p) for p in paths], window_s=window_s, hop_s=hop_s, layers=list(layers),
                         progress=progress)
    if failures is not None:
        failures.update(result.failures)
    elif result.failures:
        raise ValueError(f"{len(result.failures)} recording(s) could not be read: "
                         + "; ".join(f"{k}: {v}" for k, v in list(result.failures.items())[:3]))
    rows = slice(None, None, len(layers))  # one row per (window, layer), window-major
    return {"embeddings": torch.from_numpy(result.embeddings.reshape(-1, len(layers), result.embeddings.shape[1])),
            "file": result.file[rows].astype(object), "channel": result.channel[rows],
            "start_s": result.start_s[rows], "end_s": result.end_s[rows]}


def embedding_chunks(path: str | os.PathLike, model, layers: list[int]):
    """Window embeddings of an ``avex-hub embed`` Parquet file, a row group at a time, in the form of
    :func:`window_embeddings` (``embeddings`` [windows, len(layers), C] in the order of ``layers``); with the run's
    settings first: ``(settings, chunks)``. Refused unless the file was embedded by ``model`` (its weights digest)
    with mean pooling and holds every layer of ``layers``."""
    import pyarrow.parquet as pq
    import torch

    data = pq.ParquetFile(path)
    settings = json.loads((data.schema_arrow.metadata or {}).get(b"avex_hub", b"{}"))
    if settings.get("task") != "embed" or "embedding" not in data.schema_arrow.names:
        raise ValueError(f"{path} is not an avex-hub embed output (Parquet with its settings); give recordings or "
                         "the Parquet file avex-hub embed wrote")
    if settings.get("weights_sha256") != model.weights_sha256:
        raise ValueError(f"{path} holds embeddings of weights {settings.get('weights_sha256')}, the model is "
                         f"{model.weights_sha256}: score with the model that embedded them (--model/--checkpoint)")
    stored = list(settings.get("layers", []))
    missing = [layer for layer in layers if layer not in stored]
    if settings.get("pooling") != "mean" or missing:
        raise ValueError(f"{path} holds layers {stored} pooled by {settings.get('pooling')!r}; these scores need mean "
                         f"pooling of layer(s) {layers}: run avex-hub embed --layers {','.join(map(str, layers))} "
                         "--pooling mean")

    def chunks():
        buffers = {layer: [] for layer in layers}  # rows of a window's layers may lie in two row groups
        for group in range(data.num_row_groups):
            table = data.read_row_group(group, columns=["file", "channel", "start_s", "end_s", "layer", "embedding"])
            layer = table.column("layer").to_numpy()
            for wanted in layers:
                rows = np.flatnonzero(layer == wanted)
                vectors = np.stack(table.column("embedding").take(rows).to_numpy(zero_copy_only=False)) if len(rows) \
                    else np.zeros((0, 0), np.float32)
                buffers[wanted].append((table.take(rows).select(["file", "channel", "start_s", "end_s"]), vectors))
            ready = min(sum(len(v) for _, v in buffers[wanted]) for wanted in layers)
            if ready:
                yield _take(buffers, layers, ready, torch)
        if any(buffers.values()):
            raise ValueError(f"{path}: some windows lack one of the layers {layers}; the file is damaged, embed again")

    return settings, chunks()


def _take(buffers: dict, layers: list[int], count: int, torch) -> dict:
    """The first ``count`` windows of the per-layer buffers (removed from them) as a window-embeddings dict."""
    import pyarrow as pa

    vectors, meta = [], None
    for layer in layers:
        tables = pa.concat_tables([t for t, _ in buffers[layer]])
        stacked = np.concatenate([v for _, v in buffers[layer] if len(v)])
        buffers[layer] = [(tables.slice(count), stacked[count:])] if len(stacked) > count else []
        vectors.append(stacked[:count])
        meta = meta or tables.slice(0, count).to_pydict()
    return {"embeddings": torch.from_numpy(np.stack(vectors, axis=1).astype(np.float32)),
            "file": np.array(meta["file"], dtype=object), "channel": np.array(meta["channel"], np.int32),
            "start_s": np.array(meta["start_s"], np.float64), "end_s": np.array(meta["end_s"], np.float64)}


def _is_embeddings(paths) -> bool:
    return isinstance(paths, (str, os.PathLike)) and str(paths).lower().endswith(".parquet")


def _scored(model, paths, layers: list[int], score, *, window_s, hop_s, progress: bool):
    """``(columns of the table, window_s, hop_s, failures)``: ``score`` (embeddings [n, layers, C] -> scores [n, labels]) of
    every window of the recordings ``paths`` (those that cannot be read go into ``failures``), or of the embed
    Parquet file ``paths``."""
    failures: dict[str, str] = {}
    if not _is_embeddings(paths):
        windows = window_embeddings(model, paths, layers=layers, window_s=window_s, hop_s=hop_s, progress=progress,
                                    failures=failures)
        chunks = [windows]
    else:
        settings, chunks = embedding_chunks(paths, model, layers)
        given = {"window_s": window_s, "hop_s": hop_s}
        differ = [k for k, v in given.items() if v is not None and float(v) != settings[k]]
        if differ:
            raise ValueError(f"{paths} was embedded with window {settings['window_s']} s and hop {settings['hop_s']} "
                             f"s; leave out --window/--hop or give those")
        window_s, hop_s = settings["window_s"], settings["hop_s"]
    parts = [(w["file"], w["channel"], w["start_s"], w["end_s"], score(w["embeddings"])) for w in chunks]
    if not parts or not sum(len(p[0]) for p in parts):
        raise ValueError("no windows to score" + "".join(f"; {k}: {v}" for k, v in list(failures.items())[:3]))
    return [np.concatenate(column) for column in zip(*parts)], window_s, hop_s, failures


def score_with_probe(model, probe_path: str | os.PathLike, paths, *, window_s: float | None = None,
                     hop_s: float | None = None, progress: bool = False) -> ScoreTable:
    """Every label's score (sigmoid of a saved probe) for every window of ``paths``, with the probe as source.

    The probe is loaded onto ``model`` (which must be the backbone it was trained on) and reads the layers it was
    trained on, mean-pooled as the file pipeline pools them. ``paths``: recordings, or the Parquet file of an
    ``avex-hub embed`` run of this model with mean pooling and those layers (its window and hop are then the run's).
    """
    import torch

    from ..heads.probes import load_probe

    probe = load_probe(probe_path, model).eval()
    if probe.needs_frames or probe.pooling != "mean" or probe.provenance.kind != "probe":
        raise ValueError(f"{probe_path}: score tables come from the file pipeline's mean-pooled embeddings of a "
                         f"frozen backbone; this is a {probe.provenance.kind} pooling by {probe.pooling!r}: train a "
                         "linear or MLP probe with pooling='mean'")
    layers = list(probe.layer_indices)

    def score(x):
        with torch.no_grad():
            return torch.sigmoid(probe.forward_embeddings(x if len(layers) > 1 else x[:, 0])).numpy()

    if window_s is None and not _is_embeddings(paths):
        raise ValueError("score_with_probe: give window_s (the window the probe was trained on)")
    columns, window_s, hop_s, failures = _scored(model, paths, layers, score, window_s=window_s, hop_s=hop_s,
                                                 progress=progress)
    labels = list(probe.provenance.label_names or probe.label_names or [str(i) for i in range(columns[4].shape[1])])
    return ScoreTable(*columns, labels, ScoreSource.of_probe(probe_path, window_s=window_s, hop_s=hop_s), failures)


def score_with_head(model, labels, paths, *, window_s: float | None = None, hop_s: float | None = None,
                    progress: bool = False) -> ScoreTable:
    """Every window's score of every label in ``labels`` (scientific names, checked against the model's label map
    with close matches suggested) from the model's own species head, with the model as source.

    The head is a linear layer on the mean-pooled last layer, the same as ``classify`` (``logits``); only the asked
    labels' rows are applied, so a species outside a window's top k keeps its score there. ``paths``: recordings
    (``window_s`` defaults to the model's window, ``hop_s`` to the window), or the Parquet file of an ``avex-hub
    embed`` run of this model holding the last layer mean-pooled (embed once, resumably, then score any species
    and probes from it).
    """
    import torch

    from ..labels import match_species

    if getattr(model, "classifier", None) is None or model.label_map is None:
        raise ValueError(f"{model.name} has no species head; score with a probe (--probe) instead")
    names = list(model.labels)
    labels = match_species(list(labels), names, where="species")
    if not _is_embeddings(paths):
        window_s = float(model.preprocessing.window_s if window_s is None else window_s)
        hop_s = window_s if hop_s is None else float(hop_s)
    rows = torch.tensor([names.index(label) for label in labels])
    head = model.classifier

    def score(x):
        with torch.no_grad():
            logits = x[:, 0].to(head.weight) @ head.weight[rows].T + head.bias[rows]
            return torch.sigmoid(logits.float()).cpu().numpy()

    columns, window_s, hop_s, failures = _scored(model, paths, model.layer_indices(-1), score, window_s=window_s,
                                                 hop_s=hop_s, progress=progress)
    return ScoreTable(*columns, labels, ScoreSource(model.weights_sha256, None, model.name, window_s, hop_s), failures)
