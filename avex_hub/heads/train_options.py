"""How probe training runs: its options (:class:`TrainOptions`, the offline and online defaults), how audio becomes
the embeddings it trains on (:class:`ExtractOptions`, :func:`extract_split`) and what it returns (:class:`TrainResult`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from numbers import Integral, Real

import torch

from ..embed.extract import Embeddings, cache_path_for, extract_embeddings
from ..encoder.precision import device_for, resolve_device

__all__ = ["TrainOptions", "OFFLINE_DEFAULTS", "ONLINE_DEFAULTS", "DEFAULTS", "ExtractOptions", "extract_split",
           "TrainResult", "check_count", "check_rate"]


def check_count(name: str, value, minimum: int) -> int:
    """``value`` as an int when it is a whole number (an int or a numpy integer, not a bool) >= ``minimum``; else a
    ValueError naming the option (``epochs=2.5``, ``batch_size=True`` and ``seed=-1`` are mistakes, not
    requests)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {name}={value!r}")
    return int(value)


def check_rate(name: str, value, *, optional: bool = False) -> None:
    """ValueError naming the option unless ``value`` is a finite number > 0 (or None when ``optional``): an
    infinite learning rate would run an epoch and then fail on NaN predictions."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")


@dataclass(frozen=True)
class TrainOptions:
    """How :func:`train_probe` trains: its keyword arguments, with the mode's defaults where they were None.

    ``epochs``: at most this many passes over train. ``batch_size``: examples per optimiser step. ``lr``: the
    head's AdamW learning rate. ``patience``: epochs without a better validation score before stopping.
    ``weight_decay``: AdamW's. ``seed``: shuffling, dropout and the held-out split. ``class_weights``:
    ``"balanced"``, None or a tensor ``[num_classes]``. ``backbone_lr``: for a backbone being fine-tuned (None:
    ``lr / 10``). ``val_fraction``: the share of train held out when no ``val`` is given (0: no validation).
    ``num_workers``: DataLoader workers reading audio. ``progress``: show a bar over the epochs.
    Checked when built, so an explicit 0 is an error rather than a default.
    """

    epochs: int
    batch_size: int
    lr: float
    patience: int
    weight_decay: float = 1e-4
    seed: int = 0
    class_weights: str | torch.Tensor | None = "balanced"
    backbone_lr: float | None = None
    val_fraction: float = 0.1
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("patience", 1), ("seed", 0), ("num_workers", 0)):
            object.__setattr__(self, name, check_count(name, getattr(self, name), minimum))  # a numpy int: an int
        for name in ("lr", "backbone_lr"):
            check_rate(name, getattr(self, name), optional=name == "backbone_lr")
        if not (isinstance(self.weight_decay, Real) and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.val_fraction, Real) and 0.0 <= self.val_fraction < 1.0):
            raise ValueError(f"val_fraction must be in [0, 1) (0: no validation), got "
                             f"val_fraction={self.val_fraction!r}")
        if isinstance(self.class_weights, str) and self.class_weights != "balanced":
            raise ValueError(f"class_weights must be 'balanced', None or a tensor [num_classes], got "
                             f"{self.class_weights!r}")


# Offline: seconds per epoch on pooled embeddings, so many epochs of large batches; online: audio through the
# encoder, so few epochs of small batches.
OFFLINE_DEFAULTS = TrainOptions(epochs=100, batch_size=1024, lr=1e-2, patience=10)
ONLINE_DEFAULTS = TrainOptions(epochs=10, batch_size=16, lr=1e-3, patience=3)
DEFAULTS = {"offline": OFFLINE_DEFAULTS, "online": ONLINE_DEFAULTS}


@dataclass(frozen=True)
class ExtractOptions:
    """How audio becomes pooled embeddings before offline training or evaluation (as in
    :func:`avex_hub.embed.extract.extract_embeddings`): ``batch_size`` clips per forward pass, ``num_workers``
    DataLoader workers, ``device`` (checked when built; the model is moved to one given), ``precision``,
    ``cache_dir`` (one cache file per split, reused by later runs; None: no cache) and ``progress``.
    ``device=None`` runs where the model (or tensor) already is, and on the CPU for anything on no device.
    """

    batch_size: int = 16
    num_workers: int = 0
    device: str | torch.device | None = None
    precision: str = "fp32"
    cache_dir: str | os.PathLike | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name, minimum in (("batch_size", 1), ("num_workers", 0)):
            object.__setattr__(self, name, check_count(name, getattr(self, name), minimum))
        if self.device is not None:
            resolve_device(self.device)  # a device this torch cannot use fails before any audio is read


def extract_split(model, data, role: str, layers: list[int], pooling: str, options: ExtractOptions) -> Embeddings:
    """The ``role`` split (``train``, ``val`` or ``test``) of audio as pooled embeddings of ``layers`` (one layer:
    ``[n, C]``, several: ``[n, L, C]``), read from or written to a cache file under ``options.cache_dir`` when set.
    The device is decided by :func:`avex_hub.encoder.precision.device_for` (``options.device=None``: the model's)."""
    cache = None if options.cache_dir is None else cache_path_for(options.cache_dir, role, model, data, layers,
                                                                  pooling, options.precision)
    return extract_embeddings(model, data, layers=layers[0] if len(layers) == 1 else list(layers), pooling=pooling,
                              batch_size=options.batch_size, num_workers=options.num_workers,
                              device=device_for(model, options.device), precision=options.precision, cache=cache,
                              progress=options.progress)


@dataclass
class TrainResult:
    """``history``: one dict per epoch with ``epoch`` (1-based), ``train_loss``, ``train_metric``, ``val_loss``,
    ``val_metric`` (None without validation) and ``seconds``. ``best_metric`` is the validation metric of
    ``best_epoch`` (the training metric when there is no validation); ``metric_name`` is ``accuracy`` or ``mAP``."""

    history: list[dict]
    best_epoch: int
    best_metric: float
    metric_name: str
    mode: str
    stopped_early: bool
    class_weights: list[float] | None
    seconds: float
    train_embeddings: Embeddings | None = field(default=None, repr=False)
    val_embeddings: Embeddings | None = field(default=None, repr=False)
