"""Labels as training targets: the checks a probe's targets pass, balanced class weights, and the seeded held-out
split (stratified for single-label data).
"""

from __future__ import annotations

import numpy as np
import torch

from ..audio.datasets import AudioDataset
from ..embed.extract import Embeddings, batch_labels
from .probes import Probe

__all__ = ["compute_class_weights", "split_indices", "check_targets", "dataset_labels", "batch_targets",
           "label_names_of", "align_labels", "check_finite"]


def compute_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Balanced weights ``[K]``: single-label ``n / (K * count_c)`` (0 for a class with no example);
    multi-hot ``[n, K]``: ``pos_weight_c = (n_c - pos_c) / pos_c`` over the ``n_c`` rows whose target of class c is
    known (nan: unknown), 1 for a class with no positive."""
    labels = torch.as_tensor(labels)
    n = len(labels)
    if labels.dim() == 2:
        known = (~torch.isnan(labels.float())).sum(dim=0)
        pos = labels.float().nansum(dim=0)
        return torch.where(pos > 0, (known - pos) / pos.clamp(min=1), torch.ones_like(pos))
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


def check_targets(labels: torch.Tensor | None, probe: Probe, what: str) -> torch.Tensor:
    """``labels`` as the probe's targets (long class ids, or float multi-hot), or a ValueError naming ``what`` and
    saying what the probe needs."""
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
        if not (torch.isin(labels, torch.tensor([0.0, 1.0])) | torch.isnan(labels)).all():
            raise ValueError(f"{what}: multi-hot targets must be 0 or 1 (nan: unknown, left out of the loss)")
        return labels.float()
    if labels.dim() != 1:
        raise ValueError(f"{what}: a single-label probe needs class ids [n], got {tuple(labels.shape)}; "
                         "build the probe with multilabel=True for multi-hot targets")
    bad = labels[(labels < 0) | (labels >= k)]
    if len(bad):
        raise ValueError(f"{what}: labels {sorted(set(bad.tolist()))[:10]} are outside 0..{k - 1} "
                         f"(the probe has num_classes={k}); build the probe with the dataset's number of classes")
    return labels.long()


def check_finite(emb: Embeddings, role: str) -> None:
    """ValueError naming the rows (and their files) of ``emb`` that hold NaN or inf, before anything trains on them:
    otherwise an epoch runs and then fails on a position in a shuffled batch."""
    x = emb.embeddings
    bad = (~torch.isfinite(x.reshape(len(x), -1))).any(dim=1).nonzero()[:, 0].tolist()
    if bad:
        rows = [f"{i}" + (f" ({emb.paths[i]})" if emb.paths and emb.paths[i] else "") for i in bad[:10]]
        raise ValueError(f"the {role} embeddings hold NaN or inf in {len(bad)} of {len(x)} rows: {', '.join(rows)}"
                         f"{' ...' if len(bad) > 10 else ''}; leave those rows out (.subset) or fix their input")


def label_names_of(data) -> list[str] | None:
    """The label names of Embeddings (``label_names``) or an audio dataset (``labels``); None when it has none (class
    ids are then taken as they are)."""
    names = data.label_names if isinstance(data, Embeddings) else getattr(data, "labels", None)
    return list(names) if names else None


def align_labels(data, reference: list[str] | None, role: str, reference_role: str):
    """``data`` (Embeddings or an audio dataset) with its labels indexed in the order of ``reference``, the label
    names of ``reference_role`` (the train split, or a probe), so that splits built separately are scored by name,
    not by position: a class the data lacks just has no row. Data or a reference without names passes unchanged.
    A label that occurs in the data but not in ``reference`` is a ValueError showing both lists. Other datasets
    pass unchanged."""
    names = label_names_of(data)
    if reference is None or names is None or names == list(reference):
        return data
    if not isinstance(data, (Embeddings, AudioDataset)):
        return data
    used = data.used_labels if isinstance(data, Embeddings) else sorted({n for item in data.items for n in item.labels})
    unknown = [name for name in used if name not in reference]
    if unknown:
        show = lambda labels: f"({len(labels)}) {labels[:20]}{' ...' if len(labels) > 20 else ''}"  # noqa: E731
        raise ValueError(f"{role} has labels that {reference_role} does not: {unknown[:20]}; they cannot be scored. "
                         f"Labels of {reference_role} {show(list(reference))}; of {role} {show(names)}. Give every "
                         "split one label map (label_map=), with every class trained on")
    return data.with_label_order(list(reference))


def dataset_labels(data) -> torch.Tensor | None:
    """An audio dataset's ``targets`` as a tensor (class ids ``[n]`` or multi-hot ``[n, K]``); None when unlabelled."""
    targets = getattr(data, "targets", None)
    if targets is None or len(targets) == 0:
        return None
    return torch.as_tensor(np.asarray(targets))


def batch_targets(batch: dict, probe: Probe) -> torch.Tensor:
    """A collated batch's targets for ``probe``: multi-hot ``target`` (multi-label) or ``label`` ids, else a
    ValueError."""
    if probe.multilabel:
        if "target" not in batch:
            raise ValueError("a multi-label probe needs multi-hot 'target' in the batches (a multi-label dataset)")
        return batch_labels({"target": batch["target"]})
    if "label" not in batch:
        raise ValueError("a single-label probe needs integer 'label' in the batches (a single-label dataset)")
    return batch_labels({"label": batch["label"]})
