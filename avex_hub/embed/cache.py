"""The embedding cache: its file name (a digest of the dataset, the model weights and the settings), the rows an
extraction has computed (saved to ``<cache>.partial`` while it runs, resumed from there), and loading a finished
cache (refused when it was made with other settings).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..audio.arrays import SAMPLE_RATE, to_float_audio
from ..encoder.model import AvexModel
from .clips import ClipList, as_dataset, batch_labels
from .embeddings import DamagedEmbeddingsError, Embeddings, read_embeddings, write_embeddings
from .outputs import file_fingerprint

__all__ = ["model_digest", "dataset_fingerprint", "cache_path_for", "Rows", "snapshot", "save_rows", "load_cache",
           "load_partial", "check_writable"]


def model_digest(model: AvexModel) -> str:
    """The weights file digest, or for a model not loaded from a file a digest of its parameters."""
    if getattr(model, "weights_sha256", None):
        return model.weights_sha256
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return "params:" + h.hexdigest()


def _file_row(path) -> list:
    """``[path, size, mtime_ns]`` of :func:`avex_hub.embed.outputs.file_fingerprint`, in the order the digest has
    always hashed them (caches written before keep their key); for an object in a store (a URL), its identity's
    values in the order of their names (ETag or version id, or Last-Modified: a changed object makes another key;
    one the store cannot identify makes a new key each time, so it is never taken from a cache)."""
    fingerprint = file_fingerprint(path)
    if "mtime_ns" not in fingerprint:
        return [fingerprint[name] for name in sorted(fingerprint)]
    return [fingerprint["path"], fingerprint["size"], fingerprint["mtime_ns"]]


def dataset_fingerprint(data) -> str:
    """A digest of what the dataset would produce: its items (path, size, mtime, times, labels) and clip settings,
    or the bytes of in-memory audio."""
    h = hashlib.sha256()
    if hasattr(data, "items") and isinstance(getattr(data, "items"), list):  # AudioDataset
        h.update(json.dumps([data.clip_s, data.channels, data.target_rate, data.labels, data.multilabel]).encode())
        for item in data.items:
            h.update(json.dumps([*_file_row(item.path), item.start_s, item.end_s, item.channel,
                                 list(item.labels)]).encode())
    elif isinstance(data, ClipList):
        h.update(json.dumps([data.sample_rate, data.max_s]).encode())
        for clip in data.clips:
            if isinstance(clip, (str, os.PathLike)):
                h.update(json.dumps(_file_row(clip)).encode())
            else:
                h.update(to_float_audio(clip).contiguous().numpy().tobytes())
    else:
        h.update(f"{type(data).__qualname__}:{len(data)}".encode())  # best effort for other datasets
    return h.hexdigest()


def cache_path_for(cache_dir: str | os.PathLike, role: str, model: AvexModel, data, layers: list[int],
                   pooling: str, precision: str = "fp32") -> Path:
    """A cache file name under ``cache_dir`` unique to (dataset, model weights, precision, layers, pooling)."""
    key = hashlib.sha256(f"{dataset_fingerprint(as_dataset(data, None))}|{model_digest(model)}|{precision}".encode())
    return Path(cache_dir) / f"{role}-{key.hexdigest()[:16]}-L{'-'.join(map(str, layers))}-{pooling}.safetensors"


@dataclass
class Rows:
    """What an extraction has computed so far; a resume restores it from ``<cache>.partial``."""

    chunks: list[torch.Tensor] = field(default_factory=list)  # pooled [B, L, C], one per batch
    labels: list[torch.Tensor] = field(default_factory=list)
    paths: list[str | None] = field(default_factory=list)  # None for in-memory clips, so that a resume lines up
    audio_seconds: float = 0.0
    elapsed_before: float = 0.0  # wall time of the runs this one resumes
    started: float = 0.0  # time.perf_counter() when this run's first batch was asked for

    def __len__(self) -> int:
        return sum(len(chunk) for chunk in self.chunks)

    def elapsed_s(self) -> float:
        """Wall time of this run so far plus that of the runs it resumes."""
        return self.elapsed_before + time.perf_counter() - self.started

    def add(self, batch: dict, pooled: torch.Tensor) -> None:
        """Append one batch's pooled rows ``[B, L, C]``, its labels, paths and seconds of (unpadded) audio."""
        self.chunks.append(pooled)
        labels = batch_labels(batch)
        if labels is not None:
            self.labels.append(labels)
        paths = batch.get("path")
        self.paths += list(paths) if isinstance(paths, list) else [None] * len(pooled)
        self.audio_seconds += float((~batch["padding_mask"]).sum()) / SAMPLE_RATE


def snapshot(rows: Rows, blank: Embeddings) -> Embeddings:
    """The rows computed so far as the extraction's result (``blank`` filled in)."""
    pooled = torch.cat(rows.chunks) if rows.chunks else torch.empty(0, len(blank.layers), blank.embeddings.shape[-1])
    return replace(blank, embeddings=pooled if blank.embeddings.dim() == 3 else pooled[:, 0],
                   labels=torch.cat(rows.labels) if rows.labels else None,
                   paths=list(rows.paths) if any(p is not None for p in rows.paths) else None,
                   audio_seconds=rows.audio_seconds, elapsed_s=rows.elapsed_s())


def save_rows(target: Path, rows: Rows, blank: Embeddings) -> Embeddings:
    """Write the rows so far to ``target`` (the cache, or its ``.partial``) and return them as Embeddings.

    The metadata keeps every path, None entries included, so that a resumed run's rows line up."""
    result = snapshot(rows, blank)
    tensors = {"embeddings": result.embeddings} | ({} if result.labels is None else {"labels": result.labels})
    write_embeddings(target, tensors, result.metadata() | {"paths": rows.paths})
    return result


def load_cache(path: Path, settings: dict) -> Embeddings | None:
    """The embeddings cached at ``path`` when they were made with ``settings``; None when there is none yet, or
    when the cache is damaged (cut short, broken metadata, fewer rows than the dataset): a warning names it and the
    caller recomputes it.

    A cache made with other settings raises, naming the settings that differ, instead of being overwritten."""
    if not path.exists():
        return None
    try:
        found = Embeddings.load(path)
    except DamagedEmbeddingsError as error:
        _recomputing(path, str(error))
        return None
    if found.settings == settings and len(found) != settings.get("num_items"):
        _recomputing(path, f"it holds {len(found)} rows but the dataset has {settings.get('num_items')}")
        return None
    if found.settings == settings:
        return found
    changed = sorted(k for k in set(settings) | set(found.settings) if settings.get(k) != found.settings.get(k))
    raise ValueError(f"{path} holds embeddings made with other settings (differing: {changed}); "
                     "pass overwrite=True to recompute, or another cache path")


def check_writable(path: Path) -> None:
    """OSError naming ``path`` when its folder cannot be created or written, checked before any audio is embedded
    (the cache is written at the end, and a failure then would waste the whole run)."""
    try:
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        raise type(error)(f"cannot write the embedding cache {path}: {error}; pass a cache path in a writable "
                          "folder") from None


def _recomputing(path: Path, why: str) -> None:
    """The one line a damaged cache file gets (the CLI says the same of damaged shards): which file, why, and that
    it is being recomputed."""
    warnings.warn(f"recomputing the embedding cache {path}: it cannot be used ({why})", stacklevel=4)


def load_partial(partial: Path, settings: dict) -> Rows:
    """The rows that an interrupted run with the same ``settings`` left in ``partial``, to resume from; none when
    there is no such file or it was made with other settings (then this run replaces it)."""
    if not partial.exists():
        return Rows()
    try:
        tensors, meta = read_embeddings(partial)
    except ValueError as error:  # damaged (or not ours, which this file never is: only this module writes it)
        _recomputing(partial, str(error))
        return Rows()
    if meta.get("settings") != settings:
        return Rows()
    saved = tensors["embeddings"]
    return Rows(chunks=[saved if saved.dim() == 3 else saved.unsqueeze(1)],
                 labels=[tensors["labels"]] if "labels" in tensors else [], paths=meta["paths"],
                 audio_seconds=meta["audio_seconds"], elapsed_before=meta["elapsed_s"])
