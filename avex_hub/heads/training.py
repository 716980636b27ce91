"""Training probes: offline on cached embeddings (seconds) or online on audio (fine-tuning, attention probes).

    from avex_hub.heads.training import train_probe
    result = train_probe(probe, train_dataset, val_dataset, seed=0)   # frozen linear/MLP: extracted once, offline
    result.best_epoch, result.best_metric, result.history[-1]

- ``mode="auto"`` trains offline when the backbone is frozen and the probe pools with mean/max (the
  embeddings are extracted once, see :mod:`avex_hub.embed.extract`), online otherwise.
- Validation: ``val`` (a dataset or Embeddings), or else ``val_fraction`` of ``train`` held out (stratified
  for single-label data; 0 disables validation). Early stopping watches the validation metric (accuracy for
  single-label, mAP for multi-label; equal metric with lower validation loss also counts as better) with
  ``patience`` epochs, and the best weights are restored at the end.
- Losses: cross-entropy (single-label) or BCE-with-logits (multi-label). ``class_weights="balanced"`` weights
  class c by ``n / (K * count_c)`` (cross-entropy ``weight``); multi-label uses ``pos_weight_c = neg_c / pos_c``.
- Seeded: initialisation belongs to the probe (its ``seed``); shuffling, dropout and the held-out split come
  from ``seed`` here, drawn inside a forked RNG so the caller's global RNG state is untouched. On CPU, same seed
  -> identical weights.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..audio.datasets import check_dataset_rate
from ..embed.extract import Embeddings, batch_labels, cache_path_for, extract_embeddings
from .probes import Probe

__all__ = ["TrainResult", "train_probe", "compute_class_weights", "split_indices", "predict"]

_DEFAULTS = {"offline": {"epochs": 100, "batch_size": 1024, "lr": 1e-2, "patience": 10},
             "online": {"epochs": 10, "batch_size": 16, "lr": 1e-3, "patience": 3}}


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


def compute_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Balanced weights ``[K]``: single-label ``n / (K * count_c)`` (0 for a class with no example);
    multi-hot ``[n, K]``: ``pos_weight_c = (n - pos_c) / pos_c`` (1 for a class with no positive)."""
    labels = torch.as_tensor(labels)
    n = len(labels)
    if labels.dim() == 2:
        pos = labels.float().sum(dim=0)
        return torch.where(pos > 0, (n - pos) / pos.clamp(min=1), torch.ones_like(pos))
    counts = torch.bincount(labels.long(), minlength=num_classes).double()
    weights = torch.where(counts > 0, n / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights.float()


def split_indices(labels: torch.Tensor, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) row indices; single-label: per class, ``round(fraction * count)`` rows go to val
    (classes with one example stay in train)."""
    rng = np.random.default_rng(seed)
    labels = torch.as_tensor(labels)
    if labels.dim() == 2:
        order = rng.permutation(len(labels))
        k = int(round(fraction * len(labels)))
        return np.sort(order[k:]), np.sort(order[:k])
    val = []
    for c in np.unique(labels.numpy()):
        rows = np.flatnonzero(labels.numpy() == c)
        k = min(int(round(fraction * len(rows))), len(rows) - 1)
        val += rng.permutation(rows)[:k].tolist()
    val = np.sort(np.asarray(val, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), val), val


def _check_labels(labels: torch.Tensor | None, probe: Probe, what: str) -> torch.Tensor:
    if labels is None:
        raise ValueError(f"{what} has no labels; a probe needs class ids or multi-hot targets")
    if len(labels) == 0:
        raise ValueError(f"{what} is empty; expected at least one labelled example")
    k = probe.num_classes
    if probe.multilabel:
        if labels.dim() != 2 or labels.shape[1] != k:
            raise ValueError(f"{what}: a multi-label probe of {k} classes needs multi-hot targets [n, {k}], "
                             f"got {tuple(labels.shape)}" + ("" if labels.dim() == 2 else
                                                             "; build the probe with multilabel=False"))
        if not torch.isin(labels, torch.tensor([0.0, 1.0])).all():
            raise ValueError(f"{what}: multi-hot targets must be 0/1")
        return labels.float()
    if labels.dim() != 1:
        raise ValueError(f"{what}: a single-label probe needs class ids [n], got {tuple(labels.shape)}; "
                         "build the probe with multilabel=True for multi-hot targets")
    bad = labels[(labels < 0) | (labels >= k)]
    if len(bad):
        raise ValueError(f"{what}: labels {sorted(set(bad.tolist()))[:10]} are outside 0..{k - 1} "
                         f"(the probe has num_classes={k}); build the probe with the dataset's number of classes")
    return labels.long()


def _metric(probe: Probe, labels: torch.Tensor, logits: torch.Tensor) -> float:
    from .metrics import accuracy, mean_average_precision

    if probe.multilabel:
        with warnings.catch_warnings():  # a validation set with no positive gives nan: handled by the caller
            warnings.simplefilter("ignore", RuntimeWarning)
            return mean_average_precision(labels.numpy(), logits.float().numpy())
    return accuracy(labels.numpy(), logits.float().numpy())


def _check_dataset(probe: Probe, data, role: str) -> None:
    """An audio dataset must be non-empty and, when it knows its classes, have the probe's number of them."""
    classes = getattr(data, "num_classes", None)
    if classes and classes != probe.num_classes:
        raise ValueError(f"the {role} dataset has {classes} classes but the probe has num_classes="
                         f"{probe.num_classes}; build the probe with num_classes={classes}")
    if len(data) == 0:
        raise ValueError(f"the {role} dataset is empty; expected at least one clip")
    if probe.backbone is not None:
        check_dataset_rate(data, probe.backbone, f"the {role} dataset")


def _embeddings_for(probe: Probe, data, role: str, *, batch_size: int, num_workers: int, precision: str,
                    cache_dir, progress: bool) -> Embeddings:
    """Offline input: given Embeddings, or extract (and cache under ``cache_dir``) the probe's layers/pooling."""
    if isinstance(data, Embeddings):
        emb = data
    else:
        if probe.backbone is None:
            raise ValueError(f"this probe has no backbone to embed the {role} audio with; pass Embeddings")
        _check_dataset(probe, data, role)
        cache = None if cache_dir is None else cache_path_for(cache_dir, role, probe.backbone, data,
                                                               probe.layer_indices, probe.pooling, precision)
        layers = probe.layer_indices
        emb = extract_embeddings(probe.backbone, data, layers=layers[0] if len(layers) == 1 else list(layers),
                                 pooling=probe.pooling, batch_size=batch_size, num_workers=num_workers,
                                 precision=precision, cache=cache, progress=progress)
    if emb.pooling != probe.pooling:
        raise ValueError(f"the {role} embeddings were pooled with {emb.pooling!r}, the probe aggregates with "
                         f"{probe.pooling!r}; extract them again with pooling={probe.pooling!r}")
    if emb.embeddings.shape[-1] != probe.embedding_dim:
        raise ValueError(f"the {role} embeddings are {emb.embeddings.shape[-1]}-dim, the backbone's are "
                         f"{probe.embedding_dim}; they come from another model")
    return emb


@torch.no_grad()
def predict(probe: Probe, data, *, batch_size: int = 16, num_workers: int = 0, device=None) -> torch.Tensor:
    """Logits ``[n, num_classes]`` (float32, CPU) for Embeddings (offline) or an audio dataset (online)."""
    was_training = probe.training
    probe.eval()
    device = torch.device(device) if device is not None else next(probe.parameters()).device
    try:
        if isinstance(data, Embeddings):
            x = data.select_layers(probe.layer_indices)
            return torch.cat([probe.forward_embeddings(x[i:i + 8192].to(device)).float().cpu()
                              for i in range(0, len(x), 8192)])
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                             collate_fn=data.collate)
        return torch.cat([probe(b["audio"].to(device), b["padding_mask"].to(device)).float().cpu() for b in loader])
    finally:
        probe.train(was_training)


class _Rows(torch.utils.data.Subset):
    """Rows of an AudioDataset that keep its ``collate`` and ``targets``."""

    def __init__(self, dataset, rows: np.ndarray) -> None:
        super().__init__(dataset, rows.tolist())
        self.collate = dataset.collate

    @property
    def targets(self) -> np.ndarray:
        return np.asarray(self.dataset.targets)[self.indices]


def _dataset_labels(data) -> torch.Tensor | None:
    targets = getattr(data, "targets", None)
    if targets is None or len(targets) == 0:
        return None
    return torch.as_tensor(np.asarray(targets))


def train_probe(probe: Probe, train, val=None, *, epochs: int | None = None, lr: float | None = None,
                weight_decay: float = 1e-4, batch_size: int | None = None, patience: int | None = None,
                seed: int = 0, class_weights: str | torch.Tensor | None = "balanced", multilabel: bool | None = None,
                device: str | torch.device | None = None, progress: bool = True, mode: str = "auto",
                val_fraction: float = 0.1, backbone_lr: float | None = None, num_workers: int = 0,
                precision: str = "fp32", cache_dir: str | os.PathLike | None = None,
                extract_batch_size: int = 16) -> TrainResult:
    """Train ``probe`` in place on ``train`` (Embeddings or an AudioDataset) and return what happened.

    Defaults depend on the mode: offline ``epochs=100, batch_size=1024, lr=1e-2, patience=10``; online
    ``epochs=10, batch_size=16, lr=1e-3, patience=3``. ``backbone_lr`` (default ``lr / 10``) applies to a
    backbone that is not frozen. ``precision``, ``cache_dir`` (embedding cache files, reused by later runs) and
    ``extract_batch_size`` concern the extraction before offline training.
    """
    if not isinstance(probe, Probe):
        raise TypeError(f"expected a probe from avex_hub.linear_probe/mlp_probe/attention_probe, "
                        f"got {type(probe).__name__}")
    if multilabel is not None and bool(multilabel) != probe.multilabel:
        raise ValueError(f"multilabel={multilabel} but the probe was built with multilabel={probe.multilabel}; "
                         "build the probe with the same setting")
    if mode not in ("auto", "offline", "online"):
        raise ValueError(f"mode must be 'auto', 'offline' or 'online', got {mode!r}")
    if isinstance(train, Embeddings):
        if mode == "online":
            raise ValueError("mode='online' needs audio; got Embeddings for train (pass the AudioDataset)")
        mode = "offline"
    elif mode == "auto":
        mode = "offline" if probe.frozen and not probe.needs_frames else "online"
    if mode == "offline" and (probe.needs_frames or not probe.frozen):
        why = "an attention probe needs frames" if probe.needs_frames else "a backbone being fine-tuned"
        raise ValueError(f"offline training uses fixed pooled embeddings, but {why}; use mode='online' with audio")
    if mode == "online" and isinstance(val, Embeddings):
        raise ValueError("online training validates on audio; pass the validation AudioDataset, not Embeddings")
    cfg = _DEFAULTS[mode]
    # None means "the mode's default"; an explicit 0 is refused below, not replaced.
    epochs = cfg["epochs"] if epochs is None else epochs
    batch_size = cfg["batch_size"] if batch_size is None else batch_size
    lr, patience = cfg["lr"] if lr is None else lr, cfg["patience"] if patience is None else patience
    if epochs < 1 or batch_size < 1 or patience < 1 or not 0.0 <= val_fraction < 1.0 or not lr > 0:
        raise ValueError(f"need epochs, batch_size, patience >= 1, lr > 0 and 0 <= val_fraction < 1; got "
                         f"epochs={epochs}, batch_size={batch_size}, patience={patience}, lr={lr}, "
                         f"val_fraction={val_fraction}")
    device = torch.device(device) if device is not None else next(probe.parameters()).device
    probe.to(device)
    ex = dict(batch_size=extract_batch_size, num_workers=num_workers, precision=precision, cache_dir=cache_dir,
              progress=progress)

    # -- data ------------------------------------------------------------------------------------------------------
    if mode == "offline":
        train_emb = _embeddings_for(probe, train, "train", **ex)
        y = _check_labels(train_emb.labels, probe, "train")
        val_emb = _embeddings_for(probe, val, "val", **ex) if val is not None else None
        if val_emb is None and val_fraction > 0:
            keep, held = split_indices(y, val_fraction, seed)
            if len(held):
                train_emb, val_emb, y = train_emb.subset(keep), train_emb.subset(held), y[keep]
        yv = _check_labels(val_emb.labels, probe, "val") if val_emb is not None else None
        x = train_emb.select_layers(probe.layer_indices).to(device)
    else:
        if not hasattr(train, "collate"):
            raise TypeError(f"online training needs an AudioDataset (with .collate), got {type(train).__name__}")
        _check_dataset(probe, train, "train")
        if val is not None and probe.backbone is not None:
            check_dataset_rate(val, probe.backbone, "the val dataset")
        y = _check_labels(_dataset_labels(train), probe, "train")
        train_emb = val_emb = None
        train_data = train
        if val is None and val_fraction > 0:
            keep, held = split_indices(y, val_fraction, seed)
            if len(held):
                val, train_data, y = _Rows(train, held), _Rows(train, keep), y[keep]
        yv = _check_labels(_dataset_labels(val), probe, "val") if val is not None else None

    # -- loss and optimiser -----------------------------------------------------------------------------------------
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(f"class_weights must be 'balanced', None or a tensor [num_classes], got {class_weights!r}")
        weights = compute_class_weights(y, probe.num_classes)
    elif class_weights is None:
        weights = None
    else:
        weights = torch.as_tensor(class_weights, dtype=torch.float32)
        if weights.shape != (probe.num_classes,):
            raise ValueError(f"class_weights must have shape [{probe.num_classes}], got {tuple(weights.shape)}")
    w = weights.to(device) if weights is not None else None
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=w) if probe.multilabel else nn.CrossEntropyLoss(weight=w)
    groups = [{"params": probe.probe_parameters(), "lr": lr}]
    if not probe.frozen:
        groups.append({"params": [p for p in probe.backbone.parameters() if p.requires_grad],
                       "lr": backbone_lr if backbone_lr is not None else lr / 10})
    optimiser = torch.optim.AdamW(groups, weight_decay=weight_decay)

    # -- the loop ---------------------------------------------------------------------------------------------------
    from tqdm.auto import tqdm

    metric_name = "mAP" if probe.multilabel else "accuracy"
    history: list[dict] = []
    best, best_epoch, best_state, waited, stopped = (-math.inf, math.inf), 0, None, 0, False
    started = time.perf_counter()
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        bar = tqdm(range(1, epochs + 1), desc=f"probe ({mode})", unit="epoch", disable=not progress)
        for epoch in bar:
            t0 = time.perf_counter()
            probe.train()
            losses, outs, ys = [], [], []
            if mode == "offline":
                order = torch.randperm(len(x), generator=generator)
                batches = ((x[idx], y[idx]) for idx in order.split(batch_size))
            else:
                if hasattr(train, "set_epoch"):
                    train.set_epoch(epoch)
                loader = torch.utils.data.DataLoader(train_data, batch_size=batch_size, shuffle=True,
                                                     generator=generator, num_workers=num_workers,
                                                     collate_fn=train.collate)
                batches = ((b, _batch_targets(b, probe)) for b in loader)
            for inputs, targets in batches:
                targets = targets.to(device)
                if mode == "offline":
                    logits = probe.forward_embeddings(inputs)
                else:
                    logits = probe(inputs["audio"].to(device), inputs["padding_mask"].to(device))
                loss = loss_fn(logits, targets)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                losses.append(float(loss.detach()) * len(targets))
                outs.append(logits.detach().float().cpu())
                ys.append(targets.cpu())
            row = {"epoch": epoch, "train_loss": sum(losses) / len(y),
                   "train_metric": _metric(probe, torch.cat(ys), torch.cat(outs)), "val_loss": None, "val_metric": None}
            if yv is not None:
                logits = predict(probe, val_emb if mode == "offline" else val, batch_size=batch_size, device=device)
                row["val_loss"] = float(loss_fn(logits.to(device), yv.to(device)))
                row["val_metric"] = _metric(probe, yv, logits)
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            score = row["val_metric"] if yv is not None else row["train_metric"]
            key = (-math.inf if math.isnan(score) else score,
                   -(row["val_loss"] if yv is not None else row["train_loss"]))
            if best_state is None or key > best or yv is None:  # without validation the last epoch is kept
                best, best_epoch, waited = key, epoch, 0
                best_state = {k: v.detach().clone() for k, v in probe.head_state_dict().items()}
            else:
                waited += 1
            bar.set_postfix(loss=f"{row['train_loss']:.4f}", **{metric_name: f"{score:.4f}"})
            if waited >= patience:
                stopped = True
                break
        bar.close()
    probe.load_state_dict(best_state, strict=False)
    probe.eval()
    best_row = history[best_epoch - 1]
    return TrainResult(history, best_epoch, best_row["val_metric"] if yv is not None else best_row["train_metric"],
                       metric_name, mode, stopped, None if weights is None else weights.tolist(),
                       time.perf_counter() - started, train_emb, val_emb)


def _batch_targets(batch: dict, probe: Probe) -> torch.Tensor:
    if probe.multilabel:
        if "target" not in batch:
            raise ValueError("a multi-label probe needs multi-hot 'target' in the batches (a multi-label dataset)")
        return batch_labels({"target": batch["target"]})
    if "label" not in batch:
        raise ValueError("a single-label probe needs integer 'label' in the batches (a single-label dataset)")
    return batch_labels({"label": batch["label"]})
