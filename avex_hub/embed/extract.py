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
``checkpoint_s`` seconds and resume from it. A damaged cache or partial file (cut short, its metadata broken,
fewer rows than the dataset) is recomputed, with a warning naming the file.
"""

from __future__ import annotations

import os
import time
from numbers import Integral
from pathlib import Path
from typing import Callable

import torch

from ..audio.arrays import MIN_SAMPLES
from ..audio.datasets import check_dataset_rate
from ..encoder.model import AvexModel, check_pooling
from ..encoder.precision import inference_context, prepare_for_inference, resolve_device
from .cache import (
    Rows, cache_path_for, check_writable, dataset_fingerprint, load_cache, load_partial, model_digest, save_rows,
    snapshot,
)
from .clips import ClipList, as_dataset, batch_labels
from .embeddings import Embeddings

# Embeddings, ClipList, batch_labels and the cache helpers live in their modules and are imported from here too.
__all__ = ["Embeddings", "ClipList", "extract_embeddings", "model_digest", "dataset_fingerprint", "cache_path_for",
           "batch_labels"]


def _pad_to_min(audio: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch narrower than one patch row (MIN_SAMPLES) with masked zeros."""
    extra = MIN_SAMPLES - audio.shape[1]
    if extra <= 0:
        return audio, mask
    return (torch.nn.functional.pad(audio, (0, extra)), torch.nn.functional.pad(mask, (0, extra), value=True))


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


def _extract_rows(loader, rows: Rows, embed: Callable[[dict], torch.Tensor], *, total: int, progress: bool,
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
    a damaged one (cut short, broken metadata, fewer rows than the dataset) is recomputed with a warning naming it,
    and an interrupted run resumes from ``<cache>.partial`` (a damaged one is discarded the same way). A cache path
    that cannot be written fails before any audio is read.
    """
    _check_arguments(model, pooling, batch_size)
    indices = model.layer_indices(layers)
    dataset = as_dataset(data, sample_rate)
    check_dataset_rate(dataset, model)
    if len(dataset) == 0:
        raise ValueError("the dataset is empty; expected at least one clip to embed")
    device = resolve_device(device) if device is not None else next(model.parameters()).device
    cache_path = Path(cache) if cache is not None else None
    if cache_path is not None:
        check_writable(cache_path)
    blank = _blank(model, dataset, indices, stacked=not (layers == "last" or isinstance(layers, Integral)),
                   pooling=pooling, precision=precision, cached=cache_path is not None)
    found = load_cache(cache_path, blank.settings) if cache_path is not None and not overwrite else None
    if found is not None:
        return found
    partial = Path(f"{cache_path}.partial") if cache_path is not None else None
    rows = load_partial(partial, blank.settings) if partial is not None and not overwrite else Rows()

    embed = _batch_embedder(model, layers=indices, pooling=pooling, precision=precision, device=device)
    todo = torch.utils.data.Subset(dataset, range(len(rows), len(dataset))) if len(rows) else dataset
    loader = torch.utils.data.DataLoader(todo, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=dataset.collate)
    save_partial = (lambda: save_rows(partial, rows, blank)) if partial is not None else None
    _extract_rows(loader, rows, embed, total=len(dataset), progress=progress, save_partial=save_partial,
                  checkpoint_s=checkpoint_s)

    if isinstance(dataset, ClipList) and any(p is not None for p in dataset.paths):
        rows.paths = list(dataset.paths)
    result = save_rows(cache_path, rows, blank) if cache_path is not None else snapshot(rows, blank)
    if partial is not None and partial.exists():
        partial.unlink()
        Path(f"{partial}.json").unlink(missing_ok=True)
    return result
