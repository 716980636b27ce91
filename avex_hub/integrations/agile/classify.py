"""The classifier: a linear probe trained on the labelled windows' stored embeddings, and detection over the
archive with it (scores of every window, margin sampling for the next round of labels)."""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

import numpy as np
import torch

from .archive import Archive
from .places import PLACE_COLUMNS
from .labels import labelled_window_ids, labelled_windows
from .search import Hit, report_missing_audio
from .settings import mismatch
from .store import notice
from .versions import report_padded

# The archive settings a probe trained here records (in its metrics, under "archive"), and those detect compares:
# a probe scores windows of the length it was trained on.
RECORDED = ("window_s", "hop_s", "channels", "sample_rate", "precision")
COMPARED = ("window_s", "sample_rate")


def train_classifier(archive: Archive, out: str | os.PathLike, *, epochs: int = 300, lr: float = 0.01,
                     weight_decay: float = 1e-3, seed: int = 0) -> Path:
    """A linear probe (one sigmoid per label) on the stored embeddings of the labelled windows, trained by the
    package's one training loop (:func:`avex_hub.heads.training.train_probe`: full batch, ``epochs`` steps, balanced
    positives and negatives per class, the targets a window has no verdict for left out of the loss) and saved
    in our probe format with the archive's provenance (``load_probe`` and ``torch.hub`` load it). ValueError when
    a class lacks positives or negatives."""
    from ...embed.embeddings import Embeddings
    from ...heads.probes import Probe, save_probe
    from ...heads.training import train_probe

    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not lr > 0 or not weight_decay >= 0:
        raise ValueError(f"lr must be > 0 and weight_decay >= 0, got lr={lr!r}, weight_decay={weight_decay!r}")
    report_padded(archive)
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
    layers = list(archive.settings["layers"])
    probe = Probe(None, len(names), layers=layers, embedding_dim=x.shape[1], pooling=archive.settings["pooling"],
                  multilabel=True, label_names=names, seed=seed)
    mean, scale = x.mean(0), x.std(0).clamp(min=1e-6)  # standardised inputs train faster; folded in below
    data = Embeddings.from_arrays((x - mean) / scale, targets, layers=layers, label_names=names)
    result = train_probe(probe, data, epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=len(ids),
                         seed=seed, class_weights="balanced", multilabel=True, val_fraction=0.0, progress=False)
    with torch.no_grad():
        weight = probe.head.weight.clone()
        probe.head.weight.copy_(weight / scale)
        probe.head.bias.sub_((weight * mean / scale).sum(1))
    probe.provenance = dataclasses.replace(archive.provenance, label_names=tuple(names))
    last = result.history[-1]
    metrics = {"train_windows": int(len(ids)), "train_loss": float(last["train_loss"]),
               "train_mAP": float(last["train_metric"]), "epochs": len(result.history),
               "archive": {"archive_id": archive.identity, **{k: archive.settings[k] for k in RECORDED}},
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

    labelled: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))  # judged window ids
    archive_id: str = ""

    def uncertain(self, count: int, label: str | None = None, *, include_labelled: bool = False) -> list[Hit]:
        """Margin sampling: the ``count`` windows whose ``label`` score (default: the first) is nearest the
        threshold, leaving out windows that carry a label already (unless ``include_labelled``)."""
        col = self._column(label, count)
        rows = np.arange(len(self.scores))
        if not include_labelled:
            rows = rows[~np.isin(self.table["window_id"], self.labelled)]
        order = np.lexsort((self.table["window_id"][rows], np.abs(self.scores[rows, col] - self.threshold)))[:count]
        return self._hits(rows[order], col)

    def top(self, count: int, label: str | None = None) -> list[Hit]:
        col = self._column(label, count)
        order = np.lexsort((self.table["window_id"], -self.scores[:, col]))[:count]
        return self._hits(order, col)

    def _column(self, label: str | None, count: int) -> int:
        if not (isinstance(count, (int, np.integer)) and not isinstance(count, bool) and count >= 0):
            raise ValueError(f"count must be an int >= 0, got {count!r}")
        if label is not None and label not in self.labels:
            raise ValueError(f"label {label!r} is not one of the probe's {self.labels}")
        return self.labels.index(label) if label is not None else 0

    def _hits(self, order, col) -> list[Hit]:
        t = self.table
        return [Hit(int(t["window_id"][i]), str(t["file"][i]), int(t["channel"][i]), float(t["start_s"][i]),
                    float(t["end_s"][i]), float(self.scores[i, col]), self.archive_id, t["start_time"][i],
                    t["end_time"][i]) for i in order]

    def to_csv(self, path: str | os.PathLike) -> Path:
        """``window_id,file,channel,start_s,end_s``, the window's ``start_time,end_time`` (ISO 8601 with the
        offset, empty where the recording's start is unknown), ``site,latitude,longitude`` (empty unless indexed
        with a deployments table or a GUANO position) and one score column per label, every window."""
        from ...embed.outputs import atomic_path
        from ...monitoring.tables import cell

        with atomic_path(path, ".csv") as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["window_id", "file", "channel", "start_s", "end_s", *PLACE_COLUMNS, *self.labels])
                t = self.table
                for i in range(len(self.scores)):
                    writer.writerow([int(t["window_id"][i]), t["file"][i], int(t["channel"][i]),
                                     f"{t['start_s'][i]:.6f}", f"{t['end_s'][i]:.6f}",
                                     *(cell(t[c][i]) for c in PLACE_COLUMNS), *(f"{s:.6f}" for s in self.scores[i])])
        return Path(path)

    def to_raven(self, folder: str | os.PathLike) -> list[Path]:
        """One Raven table per file: windows whose best label reaches the threshold."""
        from ...embed.outputs import raven_names, write_raven_tables

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
    from ...heads.probes import load_probe

    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    probe = load_probe(probe_path)
    recorded, ours = probe.provenance, archive.provenance
    diffs = [f"{k}: probe {getattr(recorded, k)!r}, database {getattr(ours, k)!r}"
             for k in ("backbone_sha256", "backbone_config_sha256", "preprocessing", "layers", "pooling")
             if getattr(recorded, k) != getattr(ours, k)]
    diffs += _window_differences(recorded, archive)
    if diffs:
        raise mismatch(f"{probe_path} was trained on other embeddings than those in {archive.path}", diffs,
                       "train a probe on this database (`avex-hub train-classifier`), or detect on a database "
                       "built with the probe's weights, layer, pooling and window length")
    table = archive.window_table()
    if len(table["window_id"]) and len(archive) != len(table["window_id"]):  # a run stopped before its index save
        present = np.asarray(archive.db.ui.contains(table["window_id"]), bool) if len(archive) else \
            np.zeros(len(table["window_id"]), bool)
        table = {k: v[present] for k, v in table.items()}
    report_missing_audio(archive, table["file"].tolist(), "archive")
    report_padded(archive)
    scores = []
    with torch.no_grad():
        for i in range(0, len(table["window_id"]), batch_size):
            x = torch.from_numpy(archive.vectors(table["window_id"][i:i + batch_size]))
            scores.append(torch.sigmoid(probe.forward_embeddings(x)).numpy())
    labels = list(recorded.label_names or probe.label_names or [str(i) for i in range(probe.num_classes)])
    matrix = np.concatenate(scores) if scores else np.zeros((0, probe.num_classes), np.float32)
    return Detections(table, matrix, labels, threshold, labelled_window_ids(archive), archive.identity)


def _window_differences(recorded, archive: Archive) -> list[str]:
    """The window settings a probe records (``metrics["archive"]``, written by :func:`train_classifier`) that
    differ from the archive's. A probe that records none (trained elsewhere) gets an ArchiveNotice instead."""
    trained = (recorded.metrics or {}).get("archive")
    if not isinstance(trained, dict):
        notice(f"the probe does not record the window length it was trained on; this archive's windows are "
               f"{archive.settings['window_s']} s: its scores mean what they should only if it was trained on "
               "windows of that length")
        return []
    return [f"{k}: probe {trained.get(k)!r}, database {archive.settings.get(k)!r}" for k in COMPARED
            if trained.get(k) != archive.settings.get(k)]
