"""Offline embedding extraction: run the encoder once over a dataset, pool, cache to disk, train probes in seconds.

    from avex_hub.embed.extract import extract_embeddings
    emb = extract_embeddings(model, train, layers="all", pooling="mean", cache="cache/train.safetensors")
    emb.embeddings.shape   # [n, L, C] (a list of layers or "all"); [n, C] for "last" or one int
    emb.throughput         # seconds of audio per second of wall time

Batched (a DataLoader over the dataset with its collate and ``num_workers``), under ``torch.inference_mode``
with optional bf16 autocast (``precision``, see :mod:`avex_hub.encoder.precision`). Every requested layer comes out of
one encoder pass, pooled (``mean``/``max``) over the frames that are not padding.

The cache is one safetensors file (embeddings, labels, and the settings in its header) written atomically, plus a
JSON sidecar ``<cache>.json`` with the same metadata for people to read. Running again with the same cache path
and the same settings (model digest, layers, pooling, precision, dataset fingerprint) loads it; different settings
raise instead of overwriting (``overwrite=True`` recomputes). Long runs write ``<cache>.partial`` every
``checkpoint_s`` seconds and resume from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..audio.contract import MIN_SAMPLES, SAMPLE_RATE, WINDOW_S, collate_audio, load_audio, resample, to_float_audio
from ..audio.datasets import check_dataset_rate
from ..encoder.model import AvexModel, check_pooling
from ..encoder.precision import inference_context, prepare_for_inference, resolve_device
from .outputs import atomic_path, file_fingerprint

__all__ = ["Embeddings", "ClipList", "extract_embeddings", "model_digest", "dataset_fingerprint", "cache_path_for"]

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
        return _write(Path(path), tensors, self.metadata())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Embeddings":
        """Read what :meth:`save` (or ``extract_embeddings(cache=...)``) wrote."""
        tensors, meta = _read(Path(path))
        return cls(embeddings=tensors["embeddings"], labels=tensors.get("labels"), layers=meta["layers"],
                   pooling=meta["pooling"], label_names=meta.get("label_names"), paths=meta.get("paths"),
                   model_name=meta.get("model_name"), model_digest=meta.get("model_digest"),
                   audio_seconds=meta.get("audio_seconds", 0.0), elapsed_s=meta.get("elapsed_s", 0.0),
                   from_cache=True, settings=meta.get("settings", {}))


def _write(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp), metadata={"avex": json.dumps(meta)})
    labels = tensors.get("labels")
    with atomic_path(Path(str(path) + ".json")) as tmp:
        tmp.write_text(json.dumps(meta | {"labels": None if labels is None else labels.tolist()}, indent=1))
    return path


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
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


# -- inputs ---------------------------------------------------------------------------------------------------------
class ClipList(torch.utils.data.Dataset):
    """Audio given directly: file paths, 1-D arrays/tensors (at ``sample_rate``), or a ``[n, samples]`` tensor.

    Files are decoded with :func:`avex_hub.audio.contract.load_audio` (mono mix, 16 kHz) in ``__getitem__``, so DataLoader
    workers share the decoding. Clips longer than ``max_s`` seconds keep their first ``max_s`` (None: all).
    """

    collate = staticmethod(collate_audio)
    target_rate = SAMPLE_RATE  # what every clip is resampled to; extract_embeddings checks it against the model

    def __init__(self, clips, *, sample_rate: int = SAMPLE_RATE, max_s: float | None = WINDOW_S, labels=None) -> None:
        if isinstance(clips, (torch.Tensor, np.ndarray)) and clips.ndim == 1:
            clips = [clips]
        self.clips = list(clips)
        if not self.clips:
            raise ValueError("no audio given: expected at least one file path or array")
        self.sample_rate, self.max_s = int(sample_rate), max_s
        self.labels_ = None if labels is None else list(labels)
        if self.labels_ is not None and len(self.labels_) != len(self.clips):
            raise ValueError(f"{len(self.labels_)} labels for {len(self.clips)} clips")
        self.paths = [str(c) if isinstance(c, (str, os.PathLike)) else None for c in self.clips]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        clip = self.clips[index]
        if isinstance(clip, (str, os.PathLike)):
            wave = load_audio(clip, end_s=self.max_s).waveform[0]
        else:
            wave = to_float_audio(clip, name=f"clip {index}")
            if wave.dim() != 1:
                raise ValueError(f"clip {index}: expected mono audio [samples], got shape {tuple(wave.shape)}")
            wave = resample(wave, self.sample_rate, SAMPLE_RATE, source=f"clip {index}")
            if self.max_s is not None:
                wave = wave[: int(round(self.max_s * SAMPLE_RATE))]
        if wave.numel() == 0:
            raise ValueError(f"clip {index} is empty; expected at least one sample")
        out = {"audio": wave, "index": index}
        if self.labels_ is not None:
            out["label"] = torch.as_tensor(self.labels_[index])
        return out


def _as_dataset(data, sample_rate: int | None):
    if hasattr(data, "collate") and hasattr(data, "__getitem__"):
        return data
    if isinstance(data, torch.Tensor) and data.dim() == 2:
        return ClipList(list(data), sample_rate=sample_rate or SAMPLE_RATE, max_s=None)
    if isinstance(data, (list, tuple, torch.Tensor, np.ndarray)):
        return ClipList(data, sample_rate=sample_rate or SAMPLE_RATE)
    raise TypeError(f"expected an AudioDataset, a list of file paths or arrays, or a [n, samples] tensor; "
                    f"got {type(data).__name__}")


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
    always hashed them (caches written before keep their key)."""
    fingerprint = file_fingerprint(path)
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
    key = hashlib.sha256(f"{dataset_fingerprint(_as_dataset(data, None))}|{model_digest(model)}|{precision}".encode())
    return Path(cache_dir) / f"{role}-{key.hexdigest()[:16]}-L{'-'.join(map(str, layers))}-{pooling}.safetensors"


# -- extraction -----------------------------------------------------------------------------------------------------
def batch_labels(batch: dict) -> torch.Tensor | None:
    """A collated batch's multi-hot ``target`` as float ``[B, K]``, else its ``label`` ids as long ``[B]``, else None."""
    if "target" in batch:
        return torch.as_tensor(batch["target"]).float()
    if "label" in batch:
        value = batch["label"]
        return torch.stack([torch.as_tensor(v) for v in value]).long() if isinstance(value, list) \
            else torch.as_tensor(value).long()
    return None


def _pad_to_min(audio: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch narrower than one patch row (MIN_SAMPLES) with masked zeros."""
    extra = MIN_SAMPLES - audio.shape[1]
    if extra <= 0:
        return audio, mask
    return (torch.nn.functional.pad(audio, (0, extra)), torch.nn.functional.pad(mask, (0, extra), value=True))


@dataclass
class _Rows:
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


def _blank(model: AvexModel, dataset, layers: list[int], *, stacked: bool, pooling: str, precision: str,
           cached: bool) -> Embeddings:
    """An extraction's result before its first row: layers, pooling, label names, model and the settings that
    decide whether a cache can be reused (with a cache also the model and dataset digests)."""
    digest = model_digest(model)  # recorded with or without a cache
    settings = {"layers": layers, "stacked": stacked, "pooling": pooling, "precision": precision,
                "num_items": len(dataset)}
    if cached:
        settings.update(model_digest=digest, dataset=dataset_fingerprint(dataset))
    label_names = None if isinstance(dataset, ClipList) else (list(getattr(dataset, "labels", None) or []) or None)
    empty = torch.empty(0, len(layers), model.embedding_dim)
    return Embeddings(embeddings=empty if stacked else empty[:, 0], labels=None, layers=layers, pooling=pooling,
                      label_names=label_names, model_name=model.name, model_digest=digest, settings=settings)


def _snapshot(rows: _Rows, blank: Embeddings) -> Embeddings:
    """The rows computed so far as the extraction's result (``blank`` filled in)."""
    pooled = torch.cat(rows.chunks) if rows.chunks else torch.empty(0, len(blank.layers), blank.embeddings.shape[-1])
    return replace(blank, embeddings=pooled if blank.embeddings.dim() == 3 else pooled[:, 0],
                   labels=torch.cat(rows.labels) if rows.labels else None,
                   paths=list(rows.paths) if any(p is not None for p in rows.paths) else None,
                   audio_seconds=rows.audio_seconds, elapsed_s=rows.elapsed_s())


def _save_rows(target: Path, rows: _Rows, blank: Embeddings) -> Embeddings:
    """Write the rows so far to ``target`` (the cache, or its ``.partial``) and return them as Embeddings.

    The metadata keeps every path, None entries included, so that a resumed run's rows line up."""
    result = _snapshot(rows, blank)
    tensors = {"embeddings": result.embeddings} | ({} if result.labels is None else {"labels": result.labels})
    _write(target, tensors, result.metadata() | {"paths": rows.paths})
    return result


def _load_cache(path: Path, settings: dict) -> Embeddings | None:
    """The embeddings cached at ``path`` when they were made with ``settings``; None when there is none yet.

    A cache made with other settings raises, naming the settings that differ, instead of being overwritten."""
    if not path.exists():
        return None
    found = Embeddings.load(path)
    if found.settings == settings:
        return found
    changed = sorted(k for k in set(settings) | set(found.settings) if settings.get(k) != found.settings.get(k))
    raise ValueError(f"{path} holds embeddings made with other settings (differing: {changed}); "
                     "pass overwrite=True to recompute, or another cache path")


def _load_partial(partial: Path, settings: dict) -> _Rows:
    """The rows that an interrupted run with the same ``settings`` left in ``partial``, to resume from; none when
    there is no such file or it was made with other settings (then this run replaces it)."""
    if not partial.exists():
        return _Rows()
    tensors, meta = _read(partial)
    if meta.get("settings") != settings:
        return _Rows()
    saved = tensors["embeddings"]
    return _Rows(chunks=[saved if saved.dim() == 3 else saved.unsqueeze(1)],
                 labels=[tensors["labels"]] if "labels" in tensors else [], paths=meta["paths"],
                 audio_seconds=meta["audio_seconds"], elapsed_before=meta["elapsed_s"])


def _extract_rows(loader, rows: _Rows, embed: Callable[[dict], torch.Tensor], *, total: int, progress: bool,
                  save_partial: Callable[[], None] | None, checkpoint_s: float) -> None:
    """Run ``embed`` (batch -> pooled ``[B, L, C]``) over every batch of ``loader``, appending to ``rows``.

    ``save_partial`` (when there is a cache) runs every ``checkpoint_s`` seconds, and once more when an error or
    an interrupt stops the run after new rows: the next run resumes from them."""
    from tqdm.auto import tqdm

    done = len(rows)
    bar = tqdm(total=total, initial=done, unit="clip", desc="embedding", disable=not progress)
    rows.started = last_save = time.perf_counter()
    try:
        for batch in loader:
            rows.add(batch, embed(batch))
            bar.update(len(batch["audio"]))
            bar.set_postfix_str(f"{rows.audio_seconds / max(rows.elapsed_s(), 1e-9):.1f} audio s/s")
            if save_partial is not None and time.perf_counter() - last_save > checkpoint_s:
                save_partial()
                last_save = time.perf_counter()
    except BaseException:
        if save_partial is not None and len(rows) > done:
            save_partial()
        raise
    finally:
        bar.close()


def _batch_embedder(model: AvexModel, *, layers: list[int], pooling: str, precision: str,
                    device: torch.device) -> Callable[[dict], torch.Tensor]:
    """batch -> its pooled layers ``[B, L, C]`` as float32 on the CPU, with ``model`` prepared for ``precision``."""
    runner = prepare_for_inference(model, precision, device)

    def embed(batch: dict) -> torch.Tensor:
        audio, mask = _pad_to_min(batch["audio"], batch["padding_mask"])
        with inference_context(precision, device):
            pooled = runner.pooled_layers(audio.to(device), mask.to(device), layers=layers, pooling=pooling)
        return pooled.float().cpu().clone()  # the clone is a normal (not inference) tensor

    return embed


def _check_arguments(model, pooling: str, batch_size: int) -> None:
    """Wrong types and values fail here, before any audio is read."""
    if not isinstance(model, AvexModel):
        raise TypeError(f"model must be an avex_hub.AvexModel, got {type(model).__name__}")
    check_pooling(pooling)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def extract_embeddings(model: AvexModel, data, *, layers: str | int | list[int] = "last", pooling: str = "mean",
                       batch_size: int = 16, num_workers: int = 0, device: str | torch.device | None = None,
                       precision: str = "fp32", cache: str | os.PathLike | None = None, overwrite: bool = False,
                       checkpoint_s: float = 60.0, sample_rate: int | None = None,
                       progress: bool = True) -> Embeddings:
    """Pooled embeddings of every item of ``data`` (an AudioDataset, file paths, arrays or a tensor).

    ``layers``: ``"last"`` or an int give ``[n, C]``; a list or ``"all"`` give ``[n, L, C]``. ``device=None``
    keeps the model where it is. ``sample_rate`` is the rate of array inputs (default 16 kHz). With ``cache``,
    a cache made with the same settings is loaded, one made with others raises (``overwrite=True`` recomputes),
    and an interrupted run resumes from ``<cache>.partial``.
    """
    _check_arguments(model, pooling, batch_size)
    indices = model.layer_indices(layers)
    dataset = _as_dataset(data, sample_rate)
    check_dataset_rate(dataset, model)
    if len(dataset) == 0:
        raise ValueError("the dataset is empty; expected at least one clip to embed")
    device = resolve_device(device) if device is not None else next(model.parameters()).device
    cache_path = Path(cache) if cache is not None else None
    blank = _blank(model, dataset, indices, stacked=not (layers == "last" or isinstance(layers, int)),
                   pooling=pooling, precision=precision, cached=cache_path is not None)
    found = _load_cache(cache_path, blank.settings) if cache_path is not None and not overwrite else None
    if found is not None:
        return found
    partial = Path(f"{cache_path}.partial") if cache_path is not None else None
    rows = _load_partial(partial, blank.settings) if partial is not None and not overwrite else _Rows()

    embed = _batch_embedder(model, layers=indices, pooling=pooling, precision=precision, device=device)
    todo = torch.utils.data.Subset(dataset, range(len(rows), len(dataset))) if len(rows) else dataset
    loader = torch.utils.data.DataLoader(todo, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=dataset.collate)
    save_partial = (lambda: _save_rows(partial, rows, blank)) if partial is not None else None
    _extract_rows(loader, rows, embed, total=len(dataset), progress=progress, save_partial=save_partial,
                  checkpoint_s=checkpoint_s)

    if isinstance(dataset, ClipList) and any(p is not None for p in dataset.paths):
        rows.paths = list(dataset.paths)
    result = _save_rows(cache_path, rows, blank) if cache_path is not None else _snapshot(rows, blank)
    if partial is not None and partial.exists():
        partial.unlink()
        Path(f"{partial}.json").unlink(missing_ok=True)
    return result
