"""Pooled embeddings of a dataset and what they came from (:class:`Embeddings`), and their file: one safetensors
file (embeddings, labels, the metadata in its header) written atomically, plus a JSON sidecar ``<file>.json`` with
the same metadata for people to read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .outputs import atomic_path

__all__ = ["Embeddings", "write_embeddings", "read_embeddings", "DamagedEmbeddingsError"]

_FORMAT = "avex-embeddings/1"


@dataclass
class Embeddings:
    """Pooled embeddings of a dataset and what they came from.

    ``embeddings``: float32 ``[n, C]`` (one layer) or ``[n, L, C]`` (``layers`` in that order).
    ``labels``: int64 class ids ``[n]``, multi-hot float32 ``[n, K]`` (1 positive, 0 negative, nan unknown: training
    leaves unknown targets out of the loss), or None; with ``label_names``, ids index them and ``K`` is their count.
    ``throughput`` is seconds of audio per second of wall time of the extraction (0 when loaded from a cache).
    """

    embeddings: torch.Tensor
    labels: torch.Tensor | None
    layers: list[int]
    pooling: str = "mean"
    label_names: list[str] | None = None
    paths: list[str] | None = None
    model_name: str | None = None
    model_digest: str | None = None
    audio_seconds: float = 0.0
    elapsed_s: float = 0.0
    from_cache: bool = False
    settings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        e = self.embeddings
        if e.dim() not in (2, 3) or (e.dim() == 3 and e.shape[1] != len(self.layers)):
            raise ValueError(f"embeddings must be [n, C] or [n, L={len(self.layers)}, C], got {tuple(e.shape)}")
        if e.dim() == 2 and len(self.layers) != 1:
            raise ValueError(f"[n, C] embeddings hold one layer, but layers={self.layers}")
        if self.labels is not None and len(self.labels) != len(e):
            raise ValueError(f"{len(self.labels)} labels for {len(e)} embeddings; expected one per row")
        if self.labels is not None and self.label_names is not None:
            k, y = len(self.label_names), self.labels
            if y.dim() == 2 and y.shape[1] != k:
                raise ValueError(f"multi-hot labels have {y.shape[1]} columns for {k} label_names; expected [n, {k}]")
            if y.dim() == 1 and len(y) and (y.min() < 0 or y.max() >= k):
                raise ValueError(f"class ids {int(y.min())}..{int(y.max())} do not index the {k} label_names; "
                                 f"expected ids in 0..{k - 1}")

    @classmethod
    def from_arrays(cls, embeddings, labels=None, *, layers: list[int] | None = None,
                    label_names: list[str] | None = None, **kwargs) -> "Embeddings":
        """Wrap your own features: ``[n, C]`` (or ``[n, L, C]``) and labels: class ids ``[n]`` (whole numbers),
        label names ``[n]`` (strings: ``label_names`` gives their order, default sorted), or multi-hot ``[n, K]``
        (0/1, nan for unknown). Fractional ids and other values are a ValueError naming the rows."""
        x = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor) else embeddings)
        x = x.float()
        y, label_names = _labels_from(labels, label_names)
        layers = layers if layers is not None else ([-1] if x.dim() == 2 else list(range(x.shape[1])))
        return cls(x, y, list(layers), label_names=label_names, **kwargs)

    # -- what people look up --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def multilabel(self) -> bool:
        return self.labels is not None and self.labels.dim() == 2

    @property
    def num_classes(self) -> int | None:
        if self.label_names:
            return len(self.label_names)
        if self.labels is None or len(self.labels) == 0:
            return None
        return self.labels.shape[1] if self.multilabel else int(self.labels.max()) + 1

    @property
    def throughput(self) -> float:
        """Seconds of audio embedded per second of wall time (0 for a cache load)."""
        return self.audio_seconds / self.elapsed_s if self.elapsed_s > 0 and not self.from_cache else 0.0

    @property
    def used_labels(self) -> list[str]:
        """The label names that occur: the class of some row, or a positive in some row (needs ``label_names``)."""
        if self.labels is None or not self.label_names:
            return []
        used = (self.labels == 1).any(dim=0).nonzero()[:, 0] if self.multilabel else self.labels.unique()
        return [self.label_names[i] for i in used.tolist()]

    def with_label_order(self, names) -> "Embeddings":
        """These embeddings with their labels indexed by ``names`` (class ids remapped, or multi-hot columns moved; a
        name they lack gets no row, a zero column). Splits built separately are compared by name this way. Needs
        ``label_names``; ValueError when a label that occurs is not in ``names``."""
        names = [str(n) for n in names]
        if self.label_names is None or self.labels is None:
            raise ValueError("these embeddings have no label_names to reorder; their class ids are taken as they are")
        if names == self.label_names:
            return self
        unknown = [n for n in self.used_labels if n not in names]
        if unknown:
            raise ValueError(f"labels {unknown[:10]} occur in these embeddings but not in {names[:10]}")
        position = {name: i for i, name in enumerate(names)}
        if self.multilabel:
            y = torch.zeros(len(self), len(names), dtype=self.labels.dtype)
            for old, name in enumerate(self.label_names):
                if name in position:
                    y[:, position[name]] = self.labels[:, old]
        else:
            y = torch.tensor([position.get(name, -1) for name in self.label_names], dtype=torch.long)[self.labels]
        return replace(self, labels=y, label_names=names, settings=dict(self.settings))

    def select_layers(self, layers: list[int]) -> torch.Tensor:
        """``[n, len(layers), C]`` for the given layer indices (which must have been extracted)."""
        missing = [i for i in layers if i not in self.layers]
        if missing:
            raise ValueError(f"layers {missing} were not extracted (these embeddings hold layers {self.layers}); "
                             f"extract with layers={sorted(set(self.layers) | set(layers))}")
        stacked = self.embeddings if self.embeddings.dim() == 3 else self.embeddings.unsqueeze(1)
        return stacked[:, [self.layers.index(i) for i in layers]]

    def layer(self, index: int) -> torch.Tensor:
        """``[n, C]`` of one extracted layer."""
        return self.select_layers([index])[:, 0]

    def subset(self, indices) -> "Embeddings":
        """The rows ``indices`` (a list, array or bool mask), with their labels and paths."""
        idx = torch.as_tensor(np.asarray(indices))
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        idx = idx.long()
        rows = idx.tolist()
        return Embeddings(embeddings=self.embeddings[idx], labels=None if self.labels is None else self.labels[idx],
                          layers=list(self.layers), pooling=self.pooling, label_names=self.label_names,
                          paths=None if self.paths is None else [self.paths[i] for i in rows],
                          model_name=self.model_name, model_digest=self.model_digest, settings=dict(self.settings))

    # -- disk -----------------------------------------------------------------------------------------------------
    def metadata(self) -> dict:
        return {"format": _FORMAT, "layers": self.layers, "pooling": self.pooling, "label_names": self.label_names,
                "paths": self.paths, "model_name": self.model_name, "model_digest": self.model_digest,
                "audio_seconds": self.audio_seconds, "elapsed_s": self.elapsed_s, "settings": self.settings,
                "num_items": len(self), "shape": list(self.embeddings.shape)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (safetensors, metadata in its header) and ``<path>.json``, each atomically."""
        tensors = {"embeddings": self.embeddings.contiguous()}
        if self.labels is not None:
            tensors["labels"] = self.labels.contiguous()
        return write_embeddings(Path(path), tensors, self.metadata())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Embeddings":
        """Read what :meth:`save` (or ``extract_embeddings(cache=...)``) wrote."""
        tensors, meta = read_embeddings(Path(path))
        return cls(embeddings=tensors["embeddings"], labels=tensors.get("labels"), layers=meta["layers"],
                   pooling=meta["pooling"], label_names=meta.get("label_names"), paths=meta.get("paths"),
                   model_name=meta.get("model_name"), model_digest=meta.get("model_digest"),
                   audio_seconds=meta.get("audio_seconds", 0.0), elapsed_s=meta.get("elapsed_s", 0.0),
                   from_cache=True, settings=meta.get("settings", {}))


def _labels_from(labels, label_names) -> tuple[torch.Tensor | None, list[str] | None]:
    """Labels given to :meth:`Embeddings.from_arrays` as a tensor (long ids ``[n]`` or float multi-hot ``[n, K]``) and
    the label names (for names given as strings: ``label_names``, default their sorted set)."""
    if labels is None:
        return None, label_names
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu()
        array = (labels.float() if labels.is_floating_point() else labels).numpy()
    else:
        array = np.asarray(labels)
    if array.dtype.kind in "USO":  # names, one per row
        if array.ndim != 1:
            raise ValueError(f"label names must be one per row [n], got shape {array.shape}; pass multi-label data as "
                             "multi-hot [n, K] with label_names=")
        given = [str(v) for v in array]
        names = [str(n) for n in label_names] if label_names is not None else sorted(set(given))
        index = {name: i for i, name in enumerate(names)}
        unknown = sorted(set(given) - set(index))
        if unknown:
            raise ValueError(f"labels {unknown[:10]} are not in label_names {names[:10]}; add them or leave those rows "
                             "out")
        return torch.tensor([index[v] for v in given], dtype=torch.long), names
    if array.dtype.kind not in "biuf" or array.ndim not in (1, 2):
        raise ValueError(f"labels must be class ids [n], label names [n] or multi-hot [n, K]; got {array.dtype} "
                         f"values of shape {array.shape}")
    if array.ndim == 2:
        bad = np.flatnonzero(~(np.isin(array, (0, 1)) | np.isnan(array.astype(np.float64))).all(axis=1))
        if bad.size:
            raise ValueError(f"multi-hot labels must be 0 or 1 (nan: unknown); rows {bad[:10].tolist()} hold other "
                             "values")
        return torch.as_tensor(array, dtype=torch.float32), label_names
    as_float = array.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(as_float) | (as_float != np.round(as_float)) | (as_float < 0))
    if bad.size:
        raise ValueError(f"class ids must be whole numbers >= 0; rows {bad[:10].tolist()} hold "
                         f"{array[bad[:5]].tolist()} (pass integer ids, or the label names as strings)")
    return torch.as_tensor(array.astype(np.int64)), label_names


def write_embeddings(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``tensors`` to ``path`` (safetensors, ``meta`` in its header) and ``<path>.json``, each atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp), metadata={"avex": json.dumps(meta)})
    labels = tensors.get("labels")
    with atomic_path(Path(str(path) + ".json")) as tmp:
        tmp.write_text(json.dumps(meta | {"labels": None if labels is None else labels.tolist()}, indent=1))
    return path


class DamagedEmbeddingsError(ValueError):
    """An embeddings file that cannot be read as written: cut short, its metadata broken, or holding fewer rows
    than its metadata says. A cache in this state is recomputed (with a warning naming it)."""


def read_embeddings(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and metadata of a file :func:`write_embeddings` wrote. DamagedEmbeddingsError when the file is
    damaged; ValueError when it is another kind of file (another program's safetensors, another format)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise FileNotFoundError(f"no embeddings file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            if "avex" not in header:
                raise ValueError(f"{path} is a safetensors file without avex-hub embedding metadata; "
                                 "expected a file written by Embeddings.save or extract_embeddings(cache=...)")
            meta = json.loads(header["avex"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, json.JSONDecodeError) as error:
        raise DamagedEmbeddingsError(f"{path} is damaged: {error}") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{path}: unknown embeddings format {found!r}, expected {_FORMAT!r}")
    _check_complete(path, tensors, meta)
    return tensors, meta


def _check_complete(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """DamagedEmbeddingsError unless the file holds every row and key its metadata promises."""
    missing = [k for k in ("layers", "pooling", "num_items", "shape") if k not in meta]
    if missing or "embeddings" not in tensors:
        raise DamagedEmbeddingsError(f"{path} is damaged: its metadata lacks {missing}" if missing else
                                     f"{path} is damaged: it holds no 'embeddings' tensor")
    rows = len(tensors["embeddings"])
    shapes = [list(tensors["embeddings"].shape), meta["shape"]]
    labels = tensors.get("labels")
    if shapes[0] != shapes[1] or rows != meta["num_items"] or (labels is not None and len(labels) != rows):
        raise DamagedEmbeddingsError(f"{path} is damaged: it holds embeddings of shape {shapes[0]}"
                                     f"{'' if labels is None else f' and {len(labels)} labels'}, its metadata says "
                                     f"{meta['num_items']} rows of shape {shapes[1]}")
