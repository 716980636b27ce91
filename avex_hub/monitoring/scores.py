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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .tables import read_table, write_table

__all__ = ["ScoreSource", "ScoreTable", "read_scores", "write_scores", "window_embeddings", "score_with_probe",
           "score_with_head", "META_COLUMNS"]

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
    """``scores`` float32 [windows, labels] with the window table (``file``, ``channel``, ``start_s``, ``end_s``)."""

    file: np.ndarray
    channel: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    scores: np.ndarray
    labels: list[str]
    source: ScoreSource

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
def window_embeddings(model, paths, *, layers, window_s: float, hop_s: float, progress: bool = False) -> dict:
    """Pooled embeddings of every window of ``paths`` (:func:`avex_hub.embed.inference.embed_files`, mean pooling)
    as ``{"embeddings": [windows, layers, C], "file", "channel", "start_s", "end_s"}``."""
    import torch

    from ..embed.inference import embed_files

    result = embed_files(model, [str(p) for p in paths], window_s=window_s, hop_s=hop_s, layers=list(layers),
                         progress=progress)
    if result.failures:
        raise ValueError(f"{len(result.failures)} recording(s) could not be read: "
                         + "; ".join(f"{k}: {v}" for k, v in list(result.failures.items())[:3]))
    rows = slice(None, None, len(layers))  # one row per (window, layer), window-major
    return {"embeddings": torch.from_numpy(result.embeddings.reshape(-1, len(layers), result.embeddings.shape[1])),
            "file": result.file[rows].astype(object), "channel": result.channel[rows],
            "start_s": result.start_s[rows], "end_s": result.end_s[rows]}


def score_with_probe(model, probe_path: str | os.PathLike, paths, *, window_s: float, hop_s: float,
                     progress: bool = False) -> ScoreTable:
    """Every label's score (sigmoid of a saved probe) for every window of ``paths``, with the probe as source.

    The probe is loaded onto ``model`` (which must be the backbone it was trained on) and reads the layers it was
    trained on, mean-pooled as the file pipeline pools them.
    """
    import torch

    from ..heads.probes import load_probe

    probe = load_probe(probe_path, model).eval()
    if probe.needs_frames or probe.pooling != "mean" or probe.provenance.kind != "probe":
        raise ValueError(f"{probe_path}: score tables come from the file pipeline's mean-pooled embeddings of a "
                         f"frozen backbone; this is a {probe.provenance.kind} pooling by {probe.pooling!r}: train a "
                         "linear or MLP probe with pooling='mean'")
    windows = window_embeddings(model, paths, layers=probe.layer_indices, window_s=window_s, hop_s=hop_s,
                                progress=progress)
    x = windows["embeddings"] if len(probe.layer_indices) > 1 else windows["embeddings"][:, 0]
    with torch.no_grad():
        scores = torch.sigmoid(probe.forward_embeddings(x)).numpy()
    labels = list(probe.provenance.label_names or probe.label_names or [str(i) for i in range(scores.shape[1])])
    return ScoreTable(windows["file"], windows["channel"], windows["start_s"], windows["end_s"], scores, labels,
                      ScoreSource.of_probe(probe_path, window_s=window_s, hop_s=hop_s))


def score_with_head(model, labels, paths, *, window_s: float | None = None, hop_s: float | None = None,
                    progress: bool = False) -> ScoreTable:
    """Every window's score of every label in ``labels`` (scientific names, checked against the model's label map
    with close matches suggested) from the model's own species head, with the model as source.

    The head is a linear layer on the mean-pooled last layer, the same as ``classify`` (``logits``); only the asked
    labels' rows are applied, so a species outside a window's top k keeps its score there. ``window_s`` defaults
    to the model's window, ``hop_s`` to the window.
    """
    import torch

    from .species import match_species

    if getattr(model, "classifier", None) is None or model.label_map is None:
        raise ValueError(f"{model.name} has no species head; score with a probe (--probe) instead")
    names = list(model.labels)
    labels = match_species(list(labels), names, where="species")
    window_s = float(model.preprocessing.window_s if window_s is None else window_s)
    hop_s = window_s if hop_s is None else float(hop_s)
    windows = window_embeddings(model, paths, layers=[-1], window_s=window_s, hop_s=hop_s, progress=progress)
    rows = torch.tensor([names.index(label) for label in labels])
    head = model.classifier
    with torch.no_grad():
        logits = windows["embeddings"][:, 0].to(head.weight) @ head.weight[rows].T + head.bias[rows]
        scores = torch.sigmoid(logits.float()).cpu().numpy()
    return ScoreTable(windows["file"], windows["channel"], windows["start_s"], windows["end_s"], scores, labels,
                      ScoreSource(model.weights_sha256, None, model.name, window_s, hop_s))
