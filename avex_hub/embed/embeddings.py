"""Pooled embeddings of a dataset and what they came from (:class:`Embeddings`), and their file: one safetensors
file (embeddings, labels, the metadata in its header) written atomically, plus a JSON sidecar ``<file>.json`` with
the same metadata for people to read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .outputs import atomic_path

__all__ = ["Embeddings", "write_embeddings", "read_embeddings"]

_FORMAT = "avex-embeddings/1"


@dataclass
class Embeddings:
    """Pooled embeddings of a dataset and what they came from.

    ``embeddings``: float32 ``[n, C]`` (one layer) or ``[n, L, C]`` (``layers`` in that order).
    ``labels``: int64 class ids ``[n]``, multi-hot float32 ``[n, K]``, or None. ``throughput`` is seconds of
    audio per second of wall time of the extraction (0 when loaded from a cache).
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

    @classmethod
    def from_arrays(cls, embeddings, labels=None, *, layers: list[int] | None = None, **kwargs) -> "Embeddings":
        """Wrap your own features: ``[n, C]`` (or ``[n, L, C]``) and class ids ``[n]`` or multi-hot ``[n, K]``."""
        x = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor) else embeddings)
        x = x.float()
        y = None if labels is None else torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor)
                                                        else labels)
        if y is not None:
            y = y.float() if y.dim() == 2 else y.long()
        layers = layers if layers is not None else ([-1] if x.dim() == 2 else list(range(x.shape[1])))
        return cls(x, y, list(layers), **kwargs)

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


def write_embeddings(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``tensors`` to ``path`` (safetensors, ``meta`` in its header) and ``<path>.json``, each atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp), metadata={"avex": json.dumps(meta)})
    labels = tensors.get("labels")
    with atomic_path(Path(str(path) + ".json")) as tmp:
        tmp.write_text(json.dumps(meta | {"labels": None if labels is None else labels.tolist()}, indent=1))
    return path


def read_embeddings(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and metadata of a file :func:`write_embeddings` wrote; ValueError for any other file."""
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"no embeddings file at {path}")
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
        if "avex" not in header:
            raise ValueError(f"{path} is a safetensors file without avex-hub embedding metadata; "
                             "expected a file written by Embeddings.save or extract_embeddings(cache=...)")
        meta = json.loads(header["avex"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{path}: unknown embeddings format {meta.get('format')!r}, expected {_FORMAT!r}")
    return tensors, meta
