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
- Labels are matched by name: train takes the probe's label order (when it has ``label_names``) and val takes
  train's, so splits built separately (their own ``label_names``, two ``from_folder`` calls) are scored class for
  class; a label the other side lacks is an error showing both lists.
- Losses: cross-entropy (single-label) or BCE-with-logits (multi-label). ``class_weights="balanced"`` weights
  class c by ``n / (K * count_c)`` (cross-entropy ``weight``); multi-label uses ``pos_weight_c = neg_c / pos_c``.
- Unknown targets: a multi-hot target may be nan where it is not known (agile labelling: a clip checked for one
  class but not another). Those entries are left out of the loss, the class weights and the mAP; everything else
  is as for 0/1 targets. Pass them as the labels of Embeddings (``Embeddings.from_arrays(x, targets)``).
- Inputs are checked before the first epoch: embeddings holding NaN or inf are refused by row, and the options
  by name (``epochs``, ``batch_size``, ``patience`` and ``seed`` whole numbers, ``lr`` finite and > 0).
- Seeded: initialisation belongs to the probe (its ``seed``); shuffling, dropout and the held-out split come
  from ``seed`` here, drawn inside a forked RNG so the caller's global RNG state is untouched. On CPU, same seed
  -> identical weights.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from ..audio.datasets import check_dataset_rate
from ..embed.extract import Embeddings
from ..encoder.precision import device_for
from .probes import Probe
from .targets import (
    align_labels, batch_targets, check_finite, check_targets, compute_class_weights, dataset_labels, label_names_of,
    split_indices,
)
from .train_options import (
    DEFAULTS, OFFLINE_DEFAULTS, ONLINE_DEFAULTS, ExtractOptions, TrainOptions, TrainResult, extract_split,
)

# The options, the result and the target helpers live in train_options.py and targets.py; imported from here too.
__all__ = ["TrainResult", "TrainOptions", "ExtractOptions", "OFFLINE_DEFAULTS", "ONLINE_DEFAULTS", "train_probe",
           "compute_class_weights", "split_indices", "predict"]


def _metric(probe: Probe, labels: torch.Tensor, logits: torch.Tensor) -> float:
    from .metrics import accuracy, mean_average_precision

    if probe.multilabel:
        with warnings.catch_warnings():  # a validation set with no positive gives nan: handled by the caller
            warnings.simplefilter("ignore", RuntimeWarning)
            known = ~torch.isnan(labels)
            if known.all():
                return mean_average_precision(labels.numpy(), logits.float().numpy())
            # Unknown targets (nan) are left out: each class's AP over the rows where its target is known.
            ap = [mean_average_precision(labels[rows, c:c + 1].numpy(), logits[rows, c:c + 1].float().numpy())
                  for c, rows in enumerate(known.T) if labels[rows, c].nansum() > 0]
            return float(np.mean(ap)) if ap else math.nan
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


def _embeddings_for(probe: Probe, data, role: str, options: ExtractOptions) -> Embeddings:
    """Offline input: given Embeddings, or extract (and cache under ``cache_dir``) the probe's layers/pooling."""
    if isinstance(data, Embeddings):
        emb = data
    else:
        if probe.backbone is None:
            raise ValueError(f"this probe has no backbone to embed the {role} audio with; pass Embeddings")
        _check_dataset(probe, data, role)
        emb = extract_split(probe.backbone, data, role, probe.layer_indices, probe.pooling, options)
    if emb.pooling != probe.pooling:
        raise ValueError(f"the {role} embeddings were pooled with {emb.pooling!r}, the probe aggregates with "
                         f"{probe.pooling!r}; extract them again with pooling={probe.pooling!r}")
    if emb.embeddings.shape[-1] != probe.embedding_dim:
        raise ValueError(f"the {role} embeddings are {emb.embeddings.shape[-1]}-dim, the backbone's are "
                         f"{probe.embedding_dim}; they come from another model")
    return emb


@torch.no_grad()
def predict(probe: Probe, data, *, batch_size: int = 16, num_workers: int = 0, device=None) -> torch.Tensor:
    """Logits ``[n, num_classes]`` (float32, CPU) for Embeddings (offline) or an audio dataset (online).

    ``device`` is where the probe runs (it is moved there when given).
    ``device=None`` runs where the model (or tensor) already is, and on the CPU for anything on no device.
    """
    was_training = probe.training
    probe.eval()
    device = device_for(probe, device)
    probe.to(device)
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


def _rows(data, rows: np.ndarray):
    """The rows of an audio dataset held out for (or kept from) validation, as a dataset of the same kind."""
    if not hasattr(data, "subset"):
        raise TypeError(f"holding out val_fraction of the train audio takes its .subset(indices), which "
                        f"{type(data).__name__} lacks; pass val= (a dataset) or val_fraction=0, or use an AudioDataset")
    return data.subset(rows)



def train_probe(probe: Probe, train, val=None, *, epochs: int | None = None, lr: float | None = None,
                weight_decay: float = 1e-4, batch_size: int | None = None, patience: int | None = None,
                seed: int = 0, class_weights: str | torch.Tensor | None = "balanced", multilabel: bool | None = None,
                device: str | torch.device | None = None, progress: bool = True, mode: str = "auto",
                val_fraction: float = 0.1, backbone_lr: float | None = None, num_workers: int = 0,
                precision: str = "fp32", cache_dir: str | os.PathLike | None = None,
                extract_batch_size: int = 16) -> TrainResult:
    """Train ``probe`` in place on ``train`` (Embeddings or an AudioDataset) and return what happened.

    Defaults depend on the mode: offline ``epochs=100, batch_size=1024, lr=1e-2, patience=10``; online
    ``epochs=10, batch_size=16, lr=1e-3, patience=3`` (``OFFLINE_DEFAULTS`` and ``ONLINE_DEFAULTS``, see
    :class:`TrainOptions`). ``backbone_lr`` (default ``lr / 10``) applies to a backbone that is not frozen.
    ``precision``, ``cache_dir`` (embedding cache files, reused by later runs) and ``extract_batch_size`` concern
    the extraction before offline training. ``device`` is where the probe trains (it is moved there when given).
    ``device=None`` runs where the model (or tensor) already is, and on the CPU for anything on no device.
    """
    if not isinstance(probe, Probe):
        raise TypeError(f"expected a probe from avex_hub.linear_probe/mlp_probe/attention_probe, "
                        f"got {type(probe).__name__}")
    if multilabel is not None and bool(multilabel) != probe.multilabel:
        raise ValueError(f"multilabel={multilabel} but the probe was built with multilabel={probe.multilabel}; "
                         "build the probe with the same setting")
    mode = _choose_mode(probe, train, val, mode)
    train = align_labels(train, probe.label_names, "the train data", "the probe")
    if val is not None:  # scored against train's class order: by name, not by position
        val = align_labels(val, label_names_of(train), "the val data", "the train data")
    given = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "patience": patience}
    options = replace(DEFAULTS[mode], **{k: v for k, v in given.items() if v is not None},  # None: the default
                      weight_decay=weight_decay, seed=seed, class_weights=class_weights, backbone_lr=backbone_lr,
                      val_fraction=val_fraction, num_workers=num_workers, progress=progress)
    probe.to(device_for(probe, device))
    if mode == "offline":
        extract = ExtractOptions(batch_size=extract_batch_size, num_workers=num_workers, precision=precision,
                                 cache_dir=cache_dir, progress=progress)
        return _train_offline(probe, train, val, options, extract)
    return _train_online(probe, train, val, options)


def _choose_mode(probe: Probe, train, val, mode: str) -> str:
    """``"offline"`` or ``"online"`` for this probe and data (module docstring); combinations that cannot work
    are refused here, before anything is extracted."""
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
    return mode


@dataclass
class _Feed:
    """What a mode hands the shared loop: the train labels, an epoch's ``(logits, targets)`` batches (the forward
    pass included), and the validation data with its labels (None without validation)."""

    labels: torch.Tensor
    batches: Callable[[int, torch.Generator], Iterator[tuple[torch.Tensor, torch.Tensor]]]
    val_data: object = None
    val_labels: torch.Tensor | None = None


def _train_offline(probe: Probe, train, val, options: TrainOptions, extract: ExtractOptions) -> TrainResult:
    """Pooled embeddings (given, or extracted once) through the head alone, in shuffled minibatches."""
    train_emb = _embeddings_for(probe, train, "train", extract)
    y = check_targets(train_emb.labels, probe, "train")
    val_emb = _embeddings_for(probe, val, "val", extract) if val is not None else None
    for role, emb in (("train", train_emb), ("val", val_emb)):
        if emb is not None:
            check_finite(emb, role)
    if val_emb is None and options.val_fraction > 0:
        keep, held = split_indices(y, options.val_fraction, options.seed)
        if len(held):
            train_emb, val_emb, y = train_emb.subset(keep), train_emb.subset(held), y[keep]
    yv = check_targets(val_emb.labels, probe, "val") if val_emb is not None else None
    device = device_for(probe)
    x = train_emb.select_layers(probe.layer_indices).to(device)

    def batches(epoch: int, generator: torch.Generator):
        order = torch.randperm(len(x), generator=generator)
        for rows in order.split(options.batch_size):
            yield probe.forward_embeddings(x[rows]), y[rows].to(device)

    result = _fit(probe, "offline", _Feed(y, batches, val_emb, yv), options)
    return replace(result, train_embeddings=train_emb, val_embeddings=val_emb)


def _train_online(probe: Probe, train, val, options: TrainOptions) -> TrainResult:
    """Audio batches through the probe's backbone: frames for an attention probe, gradients for fine-tuning."""
    if not hasattr(train, "collate"):
        raise TypeError(f"online training needs an AudioDataset (with .collate), got {type(train).__name__}")
    _check_dataset(probe, train, "train")
    if val is not None and probe.backbone is not None:
        check_dataset_rate(val, probe.backbone, "the val dataset")
    y = check_targets(dataset_labels(train), probe, "train")
    if val is None and options.val_fraction > 0:
        keep, held = split_indices(y, options.val_fraction, options.seed)
        if len(held):
            val, train, y = _rows(train, held), _rows(train, keep), y[keep]
    yv = check_targets(dataset_labels(val), probe, "val") if val is not None else None
    device = device_for(probe)

    def batches(epoch: int, generator: torch.Generator):
        if hasattr(train, "set_epoch"):
            train.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(train, batch_size=options.batch_size, shuffle=True, generator=generator,
                                             num_workers=options.num_workers, collate_fn=train.collate)
        for batch in loader:
            targets = batch_targets(batch, probe).to(device)
            yield probe(batch["audio"].to(device), batch["padding_mask"].to(device)), targets

    return _fit(probe, "online", _Feed(y, batches, val, yv), options)


def _loss(probe: Probe, class_weights, labels: torch.Tensor) -> tuple[nn.Module, torch.Tensor | None]:
    """The loss (cross-entropy, or BCE-with-logits for multi-label) and the class weights it uses."""
    if isinstance(class_weights, str):  # "balanced" (TrainOptions refuses other strings)
        weights = compute_class_weights(labels, probe.num_classes)
    elif class_weights is None:
        weights = None
    else:
        weights = torch.as_tensor(class_weights, dtype=torch.float32)
        if weights.shape != (probe.num_classes,):
            raise ValueError(f"class_weights must have shape [{probe.num_classes}], got {tuple(weights.shape)}")
    w = weights.to(device_for(probe)) if weights is not None else None
    return (_MaskedBCE(pos_weight=w) if probe.multilabel else nn.CrossEntropyLoss(weight=w)), weights


class _MaskedBCE(nn.BCEWithLogitsLoss):
    """BCE-with-logits whose mean leaves out the unknown targets (nan): a multi-hot target matrix may say "not
    known" for some (row, class) entries, as agile labelling does. Without a nan it is BCEWithLogitsLoss exactly."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(targets)
        if bool(known.all()):
            return super().forward(logits, targets)
        each = nn.functional.binary_cross_entropy_with_logits(logits, targets.nan_to_num(0.0), reduction="none",
                                                              pos_weight=self.pos_weight)
        return (each * known).sum() / known.sum().clamp(min=1)


def _optimiser(probe: Probe, options: TrainOptions) -> torch.optim.Optimizer:
    """AdamW over the head (``lr``) and a backbone being fine-tuned (``backbone_lr``, default ``lr / 10``)."""
    groups = [{"params": probe.probe_parameters(), "lr": options.lr}]
    if not probe.frozen:
        groups.append({"params": [p for p in probe.backbone.parameters() if p.requires_grad],
                       "lr": options.backbone_lr if options.backbone_lr is not None else options.lr / 10})
    return torch.optim.AdamW(groups, weight_decay=options.weight_decay)


def _fit(probe: Probe, mode: str, feed: _Feed, options: TrainOptions) -> TrainResult:
    """The loop both modes share: seeded epochs in a forked RNG, validation, early stopping on the validation
    score (equal score: lower loss wins), and the best epoch's head restored at the end."""
    from tqdm.auto import tqdm

    loss_fn, weights = _loss(probe, options.class_weights, feed.labels)
    optimiser = _optimiser(probe, options)
    device = device_for(probe)
    validated = feed.val_labels is not None
    metric_name = "mAP" if probe.multilabel else "accuracy"
    history: list[dict] = []
    best, best_epoch, best_state, waited, stopped = (-math.inf, math.inf), 0, None, 0, False
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(options.seed)
        generator = torch.Generator().manual_seed(options.seed)
        bar = tqdm(range(1, options.epochs + 1), desc=f"probe ({mode})", unit="epoch", disable=not options.progress)
        for epoch in bar:
            row = _epoch(probe, feed, loss_fn, optimiser, epoch, generator, options.batch_size)
            history.append(row)
            score = row["val_metric"] if validated else row["train_metric"]
            key = (-math.inf if math.isnan(score) else score, -(row["val_loss"] if validated else row["train_loss"]))
            if best_state is None or key > best or not validated:  # without validation the last epoch is kept
                best, best_epoch, waited = key, epoch, 0
                best_state = {k: v.detach().clone() for k, v in probe.head_state_dict().items()}
            else:
                waited += 1
            bar.set_postfix(loss=f"{row['train_loss']:.4f}", **{metric_name: f"{score:.4f}"})
            if waited >= options.patience:
                stopped = True
                break
        bar.close()
    probe.load_state_dict(best_state, strict=False)
    probe.eval()
    best_row = history[best_epoch - 1]
    return TrainResult(history, best_epoch, best_row["val_metric"] if validated else best_row["train_metric"],
                       metric_name, mode, stopped, None if weights is None else weights.tolist(),
                       time.perf_counter() - started)


def _epoch(probe: Probe, feed: _Feed, loss_fn: nn.Module, optimiser: torch.optim.Optimizer, epoch: int,
           generator: torch.Generator, batch_size: int) -> dict:
    """One pass over train, one optimiser step per batch, then the validation loss and metric: a history row."""
    started = time.perf_counter()
    probe.train()
    losses, outs, ys = [], [], []
    for logits, targets in feed.batches(epoch, generator):
        loss = loss_fn(logits, targets)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()) * len(targets))
        outs.append(logits.detach().float().cpu())
        ys.append(targets.cpu())
    row = {"epoch": epoch, "train_loss": sum(losses) / len(feed.labels),
           "train_metric": _metric(probe, torch.cat(ys), torch.cat(outs)), "val_loss": None, "val_metric": None}
    if feed.val_labels is not None:
        device = device_for(probe)
        logits = predict(probe, feed.val_data, batch_size=batch_size, device=device)
        row["val_loss"] = float(loss_fn(logits.to(device), feed.val_labels.to(device)))
        row["val_metric"] = _metric(probe, feed.val_labels, logits)
    row["seconds"] = time.perf_counter() - started
    return row
