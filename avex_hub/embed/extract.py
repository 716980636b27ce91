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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..audio.contract import MIN_SAMPLES, SAMPLE_RATE, WINDOW_S, collate_audio, load_audio, resample, to_float_audio
from ..audio.datasets import check_dataset_rate
from ..encoder.model import AvexModel, check_pooling
from ..encoder.precision import inference_context, prepare_for_inference, resolve_device

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
        return Embeddings(self.embeddings[idx], None if self.labels is None else self.labels[idx], list(self.layers),
                          self.pooling, self.label_names, None if self.paths is None else [self.paths[i] for i in rows],
                          self.model_name, self.model_digest, settings=dict(self.settings))

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
        return cls(tensors["embeddings"], tensors.get("labels"), meta["layers"], meta["pooling"],
                   meta.get("label_names"), meta.get("paths"), meta.get("model_name"), meta.get("model_digest"),
                   meta.get("audio_seconds", 0.0), meta.get("elapsed_s", 0.0), True, meta.get("settings", {}))


def _write(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    from safetensors.torch import save_file

    from .outputs import atomic_path

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


def dataset_fingerprint(data) -> str:
    """A digest of what the dataset would produce: its items (path, size, mtime, times, labels) and clip settings,
    or the bytes of in-memory audio."""
    h = hashlib.sha256()
    if hasattr(data, "items") and isinstance(getattr(data, "items"), list):  # AudioDataset
        h.update(json.dumps([data.clip_s, data.channels, data.target_rate, data.labels, data.multilabel]).encode())
        for item in data.items:
            stat = item.path.stat() if item.path.is_file() else None
            h.update(json.dumps([str(item.path), stat and stat.st_size, stat and stat.st_mtime_ns, item.start_s,
                                 item.end_s, item.channel, list(item.labels)]).encode())
    elif isinstance(data, ClipList):
        h.update(json.dumps([data.sample_rate, data.max_s]).encode())
        for clip in data.clips:
            if isinstance(clip, (str, os.PathLike)):
                stat = Path(clip).stat() if Path(clip).is_file() else None
                h.update(json.dumps([str(clip), stat and stat.st_size, stat and stat.st_mtime_ns]).encode())
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


def extract_embeddings(model: AvexModel, data, *, layers: str | int | list[int] = "last", pooling: str = "mean",
                       batch_size: int = 16, num_workers: int = 0, device: str | torch.device | None = None,
                       precision: str = "fp32", cache: str | os.PathLike | None = None, overwrite: bool = False,
                       checkpoint_s: float = 60.0, sample_rate: int | None = None,
                       progress: bool = True) -> Embeddings:
    """Pooled embeddings of every item of ``data`` (an AudioDataset, file paths, arrays or a tensor).

    ``layers``: ``"last"`` or an int give ``[n, C]``; a list or ``"all"`` give ``[n, L, C]``. ``device=None``
    keeps the model where it is. ``sample_rate`` is the rate of array inputs (default 16 kHz).
    """
    if not isinstance(model, AvexModel):
        raise TypeError(f"model must be an avex_hub.AvexModel, got {type(model).__name__}")
    check_pooling(pooling)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    indices = model.layer_indices(layers)
    stacked = not (layers == "last" or isinstance(layers, int))
    dataset = _as_dataset(data, sample_rate)
    check_dataset_rate(dataset, model)
    if len(dataset) == 0:
        raise ValueError("the dataset is empty; expected at least one clip to embed")
    device = resolve_device(device) if device is not None else next(model.parameters()).device
    settings = {"layers": indices, "stacked": stacked, "pooling": pooling, "precision": precision,
                "num_items": len(dataset)}
    label_names = None if isinstance(dataset, ClipList) else (list(getattr(dataset, "labels", None) or []) or None)
    cache_path = Path(cache) if cache is not None else None
    digest = model_digest(model)  # recorded with or without a cache
    if cache_path is not None:
        settings["model_digest"] = digest
        settings["dataset"] = dataset_fingerprint(dataset)
        if cache_path.exists() and not overwrite:
            found = Embeddings.load(cache_path)
            if found.settings == settings:
                return found
            changed = sorted(k for k in set(settings) | set(found.settings) if settings.get(k) != found.settings.get(k))
            raise ValueError(f"{cache_path} holds embeddings made with other settings (differing: {changed}); "
                             "pass overwrite=True to recompute, or another cache path")
    partial = Path(str(cache_path) + ".partial") if cache_path is not None else None
    chunks: list[torch.Tensor] = []
    label_chunks: list[torch.Tensor] = []
    paths: list[str | None] = []
    done, audio_seconds, elapsed_before = 0, 0.0, 0.0
    if partial is not None and partial.exists() and not overwrite:
        tensors, meta = _read(partial)
        if meta.get("settings") == settings:  # resume; a partial from other settings is simply replaced
            saved = tensors["embeddings"]
            chunks, done = [saved if saved.dim() == 3 else saved.unsqueeze(1)], len(saved)  # chunks are [B, L, C]
            label_chunks = [tensors["labels"]] if "labels" in tensors else []
            paths, audio_seconds, elapsed_before = meta["paths"], meta["audio_seconds"], meta["elapsed_s"]

    runner = prepare_for_inference(model, precision, device)
    todo = torch.utils.data.Subset(dataset, range(done, len(dataset))) if done else dataset
    loader = torch.utils.data.DataLoader(todo, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=dataset.collate)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(dataset), initial=done, unit="clip", desc="embedding", disable=not progress)
    start, last_save = time.perf_counter(), time.perf_counter()

    def snapshot(target: Path | None) -> Embeddings:
        emb = torch.cat(chunks) if chunks else torch.empty(0, len(indices), model.embedding_dim)
        result = Embeddings(emb if stacked else emb[:, 0], torch.cat(label_chunks) if label_chunks else None,
                            indices, pooling, label_names, paths if any(p is not None for p in paths) else None,
                            model.name, digest, audio_seconds,
                            elapsed_before + time.perf_counter() - start, False, settings)
        if target is not None:
            meta = result.metadata()
            meta["paths"] = paths  # keep None entries so a resume lines up
            tensors = {"embeddings": result.embeddings} | ({"labels": result.labels} if label_chunks else {})
            _write(target, tensors, meta)
        return result

    try:
        for batch in loader:
            audio, mask = batch["audio"], batch["padding_mask"]
            audio, mask = _pad_to_min(audio, mask)
            with inference_context(precision, device):
                pooled = runner.pooled_layers(audio.to(device), mask.to(device), layers=indices, pooling=pooling)
            chunks.append(pooled.float().cpu().clone())  # [B, L, C]; the clone is a normal (not inference) tensor
            labels = batch_labels(batch)
            if labels is not None:
                label_chunks.append(labels)
            batch_paths = batch.get("path")
            paths += list(batch_paths) if isinstance(batch_paths, list) else [None] * len(audio)
            seconds = float((~mask).sum()) / SAMPLE_RATE
            audio_seconds += seconds
            bar.update(len(audio))
            rate = audio_seconds / max(elapsed_before + time.perf_counter() - start, 1e-9)
            bar.set_postfix_str(f"{rate:.1f} audio s/s")
            if partial is not None and time.perf_counter() - last_save > checkpoint_s:
                snapshot(partial)
                last_save = time.perf_counter()
    except BaseException:
        if partial is not None and len(paths) > done:  # keep what was computed; the next run resumes from it
            snapshot(partial)
        raise
    finally:
        bar.close()
    if isinstance(dataset, ClipList) and any(p is not None for p in dataset.paths):
        paths = list(dataset.paths)
    result = snapshot(cache_path)
    if partial is not None and partial.exists():
        partial.unlink()
        Path(str(partial) + ".json").unlink(missing_ok=True)
    return result
