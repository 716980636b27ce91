"""The probe protocol the benchmark runner applies to every data set, and the scores of one set.

Stated in full, since the card gives none of it beyond "linear probing on the frozen encoder":

- Embeddings: each clip (or detection window) through the frozen encoder once, frames mean-pooled per layer
  (``layers``: ``"last"`` by default, as the card's probes; several layers are mixed by the probe's learned softmax
  weights), cached on disk and resumed (:func:`avex_hub.heads.training.extract_split`). The card's probes were
  trained online (audio through the frozen encoder every epoch); that equals this offline training only because
  neither augments the audio: no noise, no mixup, no random crop. We use offline training without augmentation.
- Probe: one linear layer (softmax cross-entropy for one label per clip, sigmoid BCE for multi-label sets), no class
  weights, AdamW with weight decay 0.01 and batch size 32 (the official avex library's probe settings), up to
  ``epochs`` = 100 epochs with the best validation epoch kept and early stopping after ``patience`` = 10 epochs
  without a better one (ours: the paper does not publish its epochs or its learning-rate selection). The epoch is
  judged by :func:`avex_hub.heads.training.train_probe`'s validation metric (accuracy, or the mAP of the classes
  with a validation positive).
- Learning rate: each of ``lrs`` (1e-4, 1e-3, 1e-2; ours) is trained, and the one whose kept epoch scores best on
  the validation split, by the metric reported (accuracy, or BEANS's mAP), is scored on test. Ties: the first.
- Seeds: the whole selection runs once per seed (0, 1, 2; ours): initialisation and batch order differ. The report
  gives the mean over seeds and their spread (sample standard deviation).
- Multi-label sets also get ``mAP_present``, the mAP of :mod:`avex_hub.heads.metrics` (classes with a test positive
  only), beside BEANS's mAP; the card's rows are BEANS's.
- Retrieval ROC AUC and clustering NMI (:mod:`avex_hub.heads.metrics`) on the test split's embeddings (with several
  layers: mixed by that seed's probe, or equally when the suite trains no probe); NMI on single-label sets only,
  k-means seeded with the seed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..embed.embeddings import Embeddings
from ..heads.metrics import accuracy, clustering_nmi, mean_average_precision, retrieval_metrics
from ..heads.probe_module import Probe
from ..heads.train_options import ExtractOptions, extract_split
from ..heads.training import predict, train_probe
from .data import SetData
from .metrics import beans_mean_average_precision

__all__ = ["ProbeProtocol", "SetScores", "score_set", "probe_metric", "spread", "PRESENT_MAP"]

PRESENT_MAP = "mAP_present"  # heads.metrics' mAP: the mean over the classes with a positive in test only


@dataclass(frozen=True)
class ProbeProtocol:
    """How each set is embedded and probed (module docstring). ``val_fraction`` is what readers hold out of train
    when a set has no validation split, drawn with ``split_seed`` (fixed apart from ``seeds``, so that another
    choice of seeds keeps the splits, and the cached embeddings, of an earlier run)."""

    layers: str | int | tuple[int, ...] = "last"
    pooling: str = "mean"
    epochs: int = 100
    batch_size: int = 32
    lrs: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    weight_decay: float = 0.01
    patience: int = 10
    seeds: tuple[int, ...] = (0, 1, 2)
    val_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        if not self.seeds or not self.lrs:
            raise ValueError(f"need at least one seed and one learning rate, got seeds={self.seeds}, lrs={self.lrs}")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1 or min(self.lrs) <= 0:
            raise ValueError(f"need epochs, batch_size, patience >= 1 and lrs > 0; got epochs={self.epochs}, "
                             f"batch_size={self.batch_size}, patience={self.patience}, lrs={self.lrs}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    def to_dict(self) -> dict:
        return asdict(self)

    def layer_choice(self) -> str | int | list[int]:
        """``layers`` as :meth:`avex_hub.encoder.model.AvexModel.layer_indices` takes it."""
        return list(self.layers) if isinstance(self.layers, tuple) else self.layers


@dataclass
class SetScores:
    """One set's scores: ``scores[(task, metric)]`` has one value per seed (nan where undefined, with the reason in
    ``notes``); ``lr`` and ``epoch`` are the learning rate and epoch kept for each seed (empty without a probe)."""

    scores: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    lr: list[float] = field(default_factory=list)
    epoch: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def probe_metric(multilabel: bool) -> str:
    """The probe row's metric: ``mAP`` (BEANS's) for multi-label sets, ``accuracy`` for one label per clip."""
    return "mAP" if multilabel else "accuracy"


def _probe_score(multilabel: bool, labels: torch.Tensor, logits: torch.Tensor) -> float:
    if multilabel:
        return beans_mean_average_precision(labels.numpy(), logits.numpy())
    return accuracy(labels.numpy(), logits.numpy())


def score_set(model, data: SetData, protocol: ProbeProtocol, tasks: tuple[str, ...], *, prefix: str,
              extract: ExtractOptions) -> SetScores:
    """Embed ``data``'s splits once (cache files named ``<prefix>-<split>-...`` under ``extract.cache_dir``) and
    score ``tasks`` (``probe``, ``retrieval``, ``clustering``) with ``protocol`` for every seed."""
    indices = model.layer_indices(protocol.layer_choice())
    emb = {role: extract_split(model, split, f"{prefix}-{role}", indices, protocol.pooling, extract)
           for role, split in data.splits.items()}
    test, out, retrieval = emb["test"], SetScores(), {}
    device = next(model.parameters()).device  # retrieval compares every pair of test clips: on the model's device
    for seed in protocol.seeds:
        weights = torch.full((len(indices),), 1.0 / len(indices))
        if "probe" in tasks:
            probe, lr, epoch = _select_probe(emb, indices, protocol, seed, data.multilabel)
            logits = predict(probe, test)
            out.scores.setdefault(("probe", probe_metric(data.multilabel)), []).append(
                _probe_score(data.multilabel, test.labels, logits))
            if data.multilabel:  # beside BEANS's mAP, heads.metrics' (classes with a test positive only)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # no positive at all: nan, shown as n/a
                    present = mean_average_precision(test.labels.numpy(), logits.numpy())
                out.scores.setdefault(("probe", PRESENT_MAP), []).append(present)
            out.lr.append(lr)
            out.epoch.append(epoch)
            weights = probe.layer_weights.detach().cpu()
        representation = torch.einsum("l,nlc->nc", weights, test.select_layers(indices))
        _unsupervised(representation, test, tasks, seed, out, multilabel=data.multilabel, retrieval=retrieval,
                      key=tuple(weights.tolist()), device=device)
    return out


def _select_probe(emb: dict[str, Embeddings], indices: list[int], protocol: ProbeProtocol, seed: int,
                  multilabel: bool) -> tuple[Probe, float, int]:
    """The probe of the learning rate whose kept epoch scores best on val, with that rate and epoch."""
    train, val = emb["train"], emb["val"]
    best = None
    for lr in protocol.lrs:
        probe = Probe(None, train.num_classes, layers=indices, pooling=protocol.pooling, head="linear",
                      multilabel=multilabel, embedding_dim=train.embeddings.shape[-1], seed=seed,
                      label_names=train.label_names)
        result = train_probe(probe, train, val, epochs=protocol.epochs, lr=lr, batch_size=protocol.batch_size,
                             weight_decay=protocol.weight_decay, patience=protocol.patience, seed=seed,
                             class_weights=None, progress=False)
        score = _probe_score(multilabel, val.labels, predict(probe, val))
        score = -math.inf if math.isnan(score) else score
        if best is None or score > best[0]:
            best = (score, probe, lr, result.best_epoch)
    return best[1], best[2], best[3]


def _unsupervised(representation: torch.Tensor, test: Embeddings, tasks: tuple[str, ...], seed: int,
                  out: SetScores, *, multilabel: bool, retrieval: dict, key: tuple, device: torch.device) -> None:
    """Retrieval ROC AUC and (single-label sets) clustering NMI of the test representation, for one seed; an
    undefined score is nan and its warning becomes a note. ``retrieval`` keeps the ROC AUC already computed for
    the layer weights ``key`` (the same for every seed with one layer, or without a probe): computed once."""
    labels = test.labels.numpy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        if "retrieval" in tasks:
            if key not in retrieval:
                retrieval.clear()
                retrieval[key] = retrieval_metrics(representation, labels, device=device)["roc_auc"]
            out.scores.setdefault(("retrieval", "roc_auc"), []).append(retrieval[key])
        if "clustering" in tasks and not multilabel:
            out.scores.setdefault(("clustering", "nmi"), []).append(
                clustering_nmi(representation, labels, seed=seed))
    for warning in caught:
        if issubclass(warning.category, RuntimeWarning) and str(warning.message) not in out.notes:
            out.notes.append(str(warning.message))
        elif not issubclass(warning.category, RuntimeWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def spread(values: list[float]) -> float:
    """Sample standard deviation over seeds (nan for one seed or any undefined value)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.std(ddof=1)) if len(v) > 1 and np.isfinite(v).all() else math.nan
