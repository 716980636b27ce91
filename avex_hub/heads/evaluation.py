"""The evaluation protocol of the model card: probe, retrieval and clustering scores for a dataset.

    from avex_hub.heads.evaluation import evaluate, compare_models, compare_layers, side_by_side
    table = evaluate(model, (train, val, test), layers="last")     # or a dataset with a 'split' column
    print(table.to_markdown())
    print(side_by_side(compare_layers(model, dataset, layers=[4, 8, "last"]), by="layer"))

Rows (``avex_hub.heads.metrics.ResultsTable``):

- ``("probe", "accuracy")`` (single-label) or ``("probe", "mAP")`` (multi-label): a probe (``linear`` or
  ``mlp`` trained offline on pooled embeddings, ``attention`` trained online on audio) trained on the train split
  (validated on val, or on ``val_fraction`` of train) and scored on the test split.
- ``("retrieval", "roc_auc")`` and ``("retrieval", "precision_at_1")``: cosine retrieval among the test clips.
- ``("clustering", "nmi")``: k-means on the test embeddings (single-label data only).

Retrieval and clustering use the pooled test embedding of the chosen layer; with several layers, their mix
with the probe's learned softmax layer weights (the representation the probe sees).

Splits: ``(train, test)``, ``(train, val, test)``, a dict with those keys, one AudioDataset whose items declare a
``split`` (a manifest's ``split`` column, read without ``split=``; ``train``/``training``, ``val``/``valid``/
``validation``/``dev``, ``test``/``testing``, any case), or else one dataset that declares no split, split
``test_fraction`` / rest, stratified and seeded. A dataset that declares splits is never split again: a row in none
of them (another value, an empty cell) is an error naming it. The same works with Embeddings instead of datasets.
Splits built separately are aligned by label name: val and test take the train split's label order (a class they
lack is simply absent), and a label the train split lacks is an error showing both lists. The splits are resolved
in :mod:`avex_hub.heads.splits` (``resolve_splits``, importable from here).
"""

from __future__ import annotations

import inspect
import os
from numbers import Integral
from dataclasses import dataclass, field, replace

import torch

from ..audio.datasets import check_dataset_rate
from ..embed.extract import Embeddings
from .metrics import Comparison, ResultsTable, accuracy, clustering_nmi, mean_average_precision, retrieval_metrics
from ..encoder.model import AvexModel
from .probes import Probe, attention_probe, mlp_probe
from .splits import resolve_splits
from .targets import check_finite
from .train_options import ExtractOptions, TrainResult, check_count, extract_split
from .training import predict, train_probe

__all__ = ["CARD_METRIC_NAMES", "Evaluation", "ScoreOptions", "evaluate", "compare_models", "compare_layers",
           "side_by_side", "resolve_splits"]

_PROBES = ("linear", "mlp", "attention")  # offline, offline, online


@dataclass
class Evaluation:
    """What ``evaluate(..., details=True)`` returns: the table and what produced it. ``representation`` is the
    test embedding ``[n_test, C]`` used for retrieval and clustering; ``test_logits`` the probe's ``[n_test, K]``."""

    table: ResultsTable
    probe: Probe
    train_result: TrainResult
    embeddings: dict[str, Embeddings] = field(repr=False)
    test_logits: torch.Tensor = field(repr=False)
    representation: torch.Tensor = field(repr=False)


@dataclass(frozen=True)
class ScoreOptions:
    """How :func:`evaluate` scores embedded splits: a ``probe`` (``linear``, ``mlp`` or ``attention``) built with ``probe_kwargs``
    and trained with ``train_kwargs`` (:func:`avex_hub.heads.training.train_probe`), the ``retrieval`` and
    ``clustering`` rows on or off, ``seed`` (probe initialisation, training, k-means) and ``progress`` (the
    training bar). The probe kind is checked when built, before anything is extracted."""

    probe: str
    probe_kwargs: dict
    train_kwargs: dict
    retrieval: bool
    clustering: bool
    seed: int
    progress: bool

    def __post_init__(self) -> None:
        if self.probe not in _PROBES:
            raise ValueError(f"probe must be one of {_PROBES}, got {self.probe!r}")
        check_count("seed", self.seed, 0)


@dataclass(frozen=True)
class _Audio:
    """The model and audio splits the embeddings came from, which a probe on frames (attention) trains on."""

    model: AvexModel
    splits: dict
    batch_size: int



def _layer_label(spec, indices: list[int]):
    if isinstance(spec, str) and spec == "all":
        return "all"
    return indices[0] if len(indices) == 1 else "+".join(map(str, indices))


def _indices_in(embeddings: Embeddings, layers) -> list[int]:
    """Layer indices of ``layers`` relative to what the embeddings hold."""
    if layers == "last":
        return [embeddings.layers[-1]]
    if layers == "all":
        return list(embeddings.layers)
    indices = [int(layers)] if isinstance(layers, Integral) else list(layers)
    embeddings.select_layers(indices)  # ValueError naming what is missing
    return indices


def _extract_splits(model: AvexModel, splits: dict, indices: list[int], pooling: str,
                    options: ExtractOptions) -> dict[str, Embeddings]:
    """Every split as pooled embeddings of ``indices`` (splits that are Embeddings already pass through)."""
    for role, data in splits.items():  # all splits checked before any is embedded
        check_dataset_rate(data, model, f"the {role} split")
    return {role: data if isinstance(data, Embeddings) else extract_split(model, data, role, indices, pooling, options)
            for role, data in splits.items()}


def _mlp_defaults() -> dict:
    """``mlp_probe``'s own defaults for the head (hidden_dim, dropout): a Probe built here matches the builder's."""
    params = inspect.signature(mlp_probe).parameters
    return {name: params[name].default for name in ("hidden_dim", "dropout")}


def _score(emb: dict[str, Embeddings], indices: list[int], options: ScoreOptions, names: dict,
           audio: _Audio | None) -> Evaluation:
    """The probe trained on train (validated on val) and scored on test, then the retrieval and clustering rows on
    the test representation; ``names`` (model, layer, dataset) label every row."""
    train, test = emb["train"], emb["test"]
    if train.labels is None or test.labels is None:
        raise ValueError("evaluation needs labelled train and test clips; the embeddings have no labels")
    for role, split in emb.items():  # before anything trains on them
        check_finite(split, role)
    head, result, logits = _train_head(emb, indices, options, audio)
    labels = test.labels.numpy()
    table = ResultsTable()
    if train.multilabel:
        table.add("probe", "mAP", mean_average_precision(labels, logits.numpy()), **names)
    else:
        table.add("probe", "accuracy", accuracy(labels, logits.numpy()), **names)
    with torch.no_grad():
        weights = head.layer_weights.detach().cpu()
        representation = torch.einsum("l,nlc->nc", weights, test.select_layers(indices))
    if options.retrieval:
        scores = retrieval_metrics(representation, labels)
        table.add("retrieval", "roc_auc", scores["roc_auc"], **names)
        table.add("retrieval", "precision_at_1", scores["precision_at_1"], **names)
    if options.clustering and not train.multilabel:
        table.add("clustering", "nmi", clustering_nmi(representation, labels, seed=options.seed), **names)
    return Evaluation(table, head, result, emb, logits, representation)


def _train_head(emb: dict[str, Embeddings], indices: list[int], options: ScoreOptions,
                audio: _Audio | None) -> tuple[Probe, TrainResult, torch.Tensor]:
    """The probe of ``options.probe`` trained on the train split (validated on val) and its test logits: linear
    and mlp offline on the embeddings, attention online on the audio."""
    train, test = emb["train"], emb["test"]
    num_classes = train.num_classes if train.label_names else max(train.num_classes or 0, test.num_classes or 0)
    if options.probe in ("linear", "mlp"):
        kwargs = _mlp_defaults() | options.probe_kwargs if options.probe == "mlp" else options.probe_kwargs
        head = Probe(None, num_classes, layers=indices, pooling=train.pooling, head=options.probe,
                     multilabel=train.multilabel, embedding_dim=train.embeddings.shape[-1], seed=options.seed,
                     label_names=train.label_names, **kwargs)
        result = train_probe(head, train, emb.get("val"), seed=options.seed, progress=options.progress,
                             **options.train_kwargs)
        return head, result, predict(head, test)
    if audio is None or isinstance(audio.splits["train"], Embeddings):
        raise ValueError("probe='attention' pools frames, so it needs the model and audio datasets, not embeddings")
    head = attention_probe(audio.model, num_classes, layers=indices, multilabel=train.multilabel, seed=options.seed,
                           **options.probe_kwargs)
    result = train_probe(head, audio.splits["train"], audio.splits.get("val"), seed=options.seed,
                         progress=options.progress, mode="online", **options.train_kwargs)
    return head, result, predict(head, audio.splits["test"], batch_size=audio.batch_size)


# The model card's names for the metrics this protocol reports (rows keep their short names; tables shown beside
# the card's use these).
CARD_METRIC_NAMES = {"accuracy": "Accuracy", "mAP": "mAP", "roc_auc": "ROC AUC", "precision_at_1": "Precision@1",
                     "nmi": "NMI"}


def evaluate(model_or_embeddings, data=None, *, layers="last", probe: str = "linear", pooling: str = "mean",
             seed: int = 0, test_fraction: float = 0.3, batch_size: int = 16, num_workers: int = 0, device=None,
             precision: str = "fp32", cache_dir: str | os.PathLike | None = None, probe_kwargs: dict | None = None,
             train_kwargs: dict | None = None, model_name: str | None = None, dataset_name: str | None = None,
             retrieval: bool = True, clustering: bool = True, progress: bool = False,
             details: bool = False) -> ResultsTable | Evaluation:
    """Score a model (or precomputed embeddings) on a dataset with the model card's protocol.

    ``model_or_embeddings``: an AvexModel with ``data`` (datasets or splits), or Embeddings / splits of
    Embeddings (then ``data`` is None). ``layers``: ``"last"``, an int, a list (mixed with learned weights) or
    ``"all"``. ``probe_kwargs`` go to the probe (e.g. ``hidden_dim``), ``train_kwargs`` to
    :func:`avex_hub.heads.training.train_probe` (e.g. ``epochs``, ``class_weights``). ``batch_size``,
    ``num_workers``, ``device``, ``precision`` and ``cache_dir`` concern embedding the audio (the model is moved
    to a ``device`` given). ``device=None`` runs where the model (or tensor) already is, and on the CPU for
    anything on no device. ``details=True`` returns an :class:`Evaluation` with the probe, the training history
    and the embeddings.
    """
    options = ScoreOptions(probe, dict(probe_kwargs or {}), dict(train_kwargs or {}), retrieval, clustering, seed,
                           progress)
    extract = ExtractOptions(batch_size=batch_size, num_workers=num_workers, device=device, precision=precision,
                             cache_dir=cache_dir, progress=progress)
    if isinstance(model_or_embeddings, AvexModel):
        audio = _Audio(model_or_embeddings, _splits_of(data, test_fraction, seed), batch_size)
        indices = audio.model.layer_indices(layers)
        emb = _extract_splits(audio.model, audio.splits, indices, pooling, extract)
        model_name = model_name or audio.model.name
    else:
        audio, emb = None, _embedding_splits(model_or_embeddings, data, test_fraction, seed)
        indices = _indices_in(emb["train"], layers)
        model_name = model_name or emb["train"].model_name
    pools = {role: e.pooling for role, e in emb.items()}
    if len(set(pools.values())) != 1:
        raise ValueError(f"the splits were pooled differently: {pools}; extract them with the same pooling")
    names = dict(model=model_name, layer=_layer_label(layers, indices), dataset=dataset_name)
    out = _score(emb, indices, options, names, audio)
    return out if details else out.table


def _splits_of(data, test_fraction: float, seed: int) -> dict:
    """The audio splits of ``evaluate(model, data)``."""
    if data is None:
        raise ValueError("evaluate(model, data): pass the dataset or its (train, test) splits")
    return resolve_splits(data, test_fraction=test_fraction, seed=seed)


def _embedding_splits(source, data, test_fraction: float, seed: int) -> dict[str, Embeddings]:
    """The splits of ``evaluate(embeddings)``: Embeddings, or a tuple, list or dict of them."""
    if data is not None:
        raise ValueError("with embeddings as the first argument, pass data=None (the splits are the embeddings)")
    if not isinstance(source, (Embeddings, tuple, list, dict)):
        raise TypeError(f"expected an AvexModel or Embeddings (or their splits), got {type(source).__name__}")
    splits = resolve_splits(source, test_fraction=test_fraction, seed=seed)
    bad = [role for role, e in splits.items() if not isinstance(e, Embeddings)]
    if bad:
        raise TypeError(f"splits {bad} are not Embeddings; pass the model as the first argument to embed audio")
    return splits


def compare_models(models: dict, data=None, **kwargs) -> ResultsTable:
    """``evaluate`` each of ``{"name": model_or_embeddings}`` on the same data; rows carry the name as ``model``.
    See :func:`side_by_side` for one column per model."""
    if not isinstance(models, dict) or not models:
        raise ValueError("compare_models expects a non-empty dict {'name': model or embeddings}")
    return ResultsTable.concat(*(evaluate(m, data, model_name=name, **kwargs) for name, m in models.items()))


def compare_layers(model_or_embeddings, data=None, *, layers=None, **kwargs) -> ResultsTable:
    """``evaluate`` several layer choices (default: every single layer) from one extraction; rows carry ``layer``.

    ``layers`` is a list of layer choices, each ``"last"``, ``"all"``, an int or a list of ints.
    """
    if kwargs.pop("details", False):
        raise ValueError("compare_layers returns a table; call evaluate(..., details=True) for one layer")
    seed, test_fraction = kwargs.get("seed", 0), kwargs.pop("test_fraction", 0.3)
    if isinstance(model_or_embeddings, AvexModel):
        model = model_or_embeddings
        choices = layers if layers is not None else list(range(model.num_layers + 1))
        wanted = sorted({i for choice in choices for i in model.layer_indices(choice)})
        splits = resolve_splits(data, test_fraction=test_fraction, seed=seed)
        extract = ExtractOptions(**{"progress": False} | {k: kwargs.pop(k) for k in (
            "batch_size", "num_workers", "device", "precision", "cache_dir", "progress") if k in kwargs})
        emb = _extract_splits(model, splits, wanted, kwargs.pop("pooling", "mean"), extract)
        kwargs.setdefault("model_name", model.name)
        tables = []
        for choice in choices:
            indices = model.layer_indices(choice)
            subset = {role: _with_layers(e, indices) for role, e in emb.items()}
            label = _layer_label(choice, indices)
            tables.append([replace(row, layer=label) for row in evaluate(subset, layers="all", **kwargs)])
        return ResultsTable.concat(*tables)
    source = resolve_splits(model_or_embeddings, test_fraction=test_fraction, seed=seed)
    choices = layers if layers is not None else list(source["train"].layers)
    return ResultsTable.concat(*(evaluate(source, layers=choice, **kwargs) for choice in choices))


def _with_layers(e: Embeddings, indices: list[int]) -> Embeddings:
    """The same embeddings holding only the layers ``indices`` (``[n, L, C]``, in that order)."""
    return replace(e, embeddings=e.select_layers(indices), layers=list(indices), settings=dict(e.settings))


def side_by_side(table: ResultsTable, by: str = "model") -> Comparison:
    """One row per (task, dataset, metric, and ``layer`` or ``model``), one score column per value of ``by``."""
    if by not in ("model", "layer"):
        raise ValueError(f"by must be 'model' or 'layer', got {by!r}")
    other = "layer" if by == "model" else "model"
    names = list(dict.fromkeys(getattr(row, by) for row in table))
    cells: dict[tuple, dict] = {}
    for row in table:
        key = (row.task, row.dataset, row.metric, getattr(row, other))
        cells.setdefault(key, {})[getattr(row, by)] = row.score
    rows = [(*key, *(scores.get(name) for name in names)) for key, scores in cells.items()]
    return Comparison(("task", "dataset", "metric", other, *map(str, names)), rows)
