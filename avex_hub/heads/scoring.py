"""Scores of predictions and clusterings against labels: ``accuracy``, ``macro_f1``, ``mean_average_precision``
and ``clustering_nmi``, with the input checks and the "nothing to average" warning every metric module shares.
Import them from :mod:`avex_hub.heads.metrics`.
"""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import torch

__all__ = ["accuracy", "macro_f1", "mean_average_precision", "clustering_nmi", "as_array", "warn_caller", "undefined"]

# The modules whose frames a metric's warning skips, so that it points at the caller's line.
_METRIC_MODULES = (__name__, f"{__package__}.retrieval", f"{__package__}.metrics")


def as_array(x, what: str) -> np.ndarray:
    """``x`` (array, tensor or list) as a numpy array; ValueError naming ``what`` and where when it holds NaN."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.double() if x.dtype in (torch.float16, torch.bfloat16) else x
    a = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.dtype.kind == "f" and np.isnan(a).any():
        raise ValueError(f"{what} contain NaN at {np.argwhere(np.isnan(a))[:5].tolist()}; remove or impute them")
    return a


def warn_caller(message: str) -> None:
    """RuntimeWarning attributed to the first caller outside the metric modules."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") in _METRIC_MODULES:
        level, frame = level + 1, frame.f_back
    warnings.warn(message, RuntimeWarning, stacklevel=level)


def undefined(what: str) -> float:
    """nan, with a RuntimeWarning saying why (``what``) at the caller's line."""
    warn_caller(f"{what}; returning nan")
    return math.nan


def _class_ids(labels, predictions_or_scores, what: str) -> tuple[np.ndarray, np.ndarray]:
    y, p = as_array(labels, "labels"), as_array(predictions_or_scores, what)
    if y.ndim != 1:
        raise ValueError(f"labels: expected class ids of shape [n], found shape {y.shape}; "
                         "for multi-hot targets use mean_average_precision")
    if p.ndim == 2:
        p = p.argmax(axis=1)  # ties: the lowest class index wins
    if p.ndim != 1 or len(p) != len(y):
        raise ValueError(f"{what}: expected class ids [n] or scores [n, num_classes] with n = {len(y)} "
                         f"(the length of labels), found shape {as_array(predictions_or_scores, what).shape}")
    if len(y) == 0:
        raise ValueError("labels are empty; expected at least one item")
    return y, p


def accuracy(labels, predictions_or_scores) -> float:
    """Fraction of items whose predicted class equals the label.

    ``predictions_or_scores`` is class ids ``[n]`` or scores ``[n, num_classes]``, reduced by argmax
    (equal top scores: the lowest class index is the prediction).
    """
    y, p = _class_ids(labels, predictions_or_scores, "predictions_or_scores")
    return float(np.mean(y == p))


def macro_f1(labels, predictions_or_scores, num_classes: int | None = None) -> float:
    """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN).

    The classes averaged are those present in ``labels`` or in the predictions (as scikit-learn's
    ``f1_score(average="macro")`` with default ``labels``). With ``num_classes`` the ids must lie in
    ``0 .. num_classes - 1`` and all of them are averaged; a class absent from both counts F1 = 0
    (as ``f1_score(labels=range(num_classes), average="macro", zero_division=0)``).
    """
    y, p = _class_ids(labels, predictions_or_scores, "predictions_or_scores")
    if num_classes is None:
        classes, codes = np.unique(np.concatenate([y, p]), return_inverse=True)
        k, y, p = len(classes), codes[: len(y)], codes[len(y):]
    else:
        k = int(num_classes)
        for name, a in (("labels", y), ("predictions", p)):
            if a.dtype.kind not in "iub" or (a.size and (a.min() < 0 or a.max() >= k)):
                raise ValueError(f"{name}: expected integer class ids in 0..{k - 1} (num_classes={k}), "
                                 f"found values {np.unique(a)[:10].tolist()}")
    tp = np.bincount(y[y == p], minlength=k)
    denominator = np.bincount(y, minlength=k) + np.bincount(p, minlength=k)  # 2TP + FP + FN
    f1 = np.divide(2.0 * tp, denominator, out=np.zeros(k), where=denominator > 0)
    return float(f1.mean())


def _average_precision_columns(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AP of every column: sum over distinct score thresholds (descending) of (R_k - R_{k-1}) P_k."""
    n = len(s)
    order = np.argsort(-s, axis=0, kind="stable")
    s, y = np.take_along_axis(s, order, 0), np.take_along_axis(y, order, 0)
    tps = np.cumsum(y, axis=0)
    last_of_tie = np.ones_like(s, dtype=bool)
    last_of_tie[:-1] = s[:-1] != s[1:]
    idx = np.broadcast_to(np.arange(n)[:, None], s.shape)
    # Every item takes the precision at the end of its tie group: a tied group enters the ranking as a whole.
    end = np.minimum.accumulate(np.where(last_of_tie, idx, n)[::-1], axis=0)[::-1]
    precision_at_end = np.take_along_axis(tps, end, 0) / (end + 1.0)
    return (y * precision_at_end).sum(axis=0) / y.sum(axis=0)


def mean_average_precision(targets, scores) -> float:
    """Mean over classes with at least one positive of the average precision of that class.

    AP = sum over the distinct score thresholds t_k, high to low, of (R_k - R_{k-1}) * P_k, where P_k, R_k
    are precision and recall of "score >= t_k" and R_0 = 0 (scikit-learn's ``average_precision_score``; tied
    scores form one threshold). ``targets`` is multi-hot ``[n, c]`` (0/1 or bool) or single-label class ids
    ``[n]`` (one-hot encoded to ``c = scores.shape[1]`` columns). Columns without a positive are skipped.
    """
    s = as_array(scores, "scores").astype(np.float64)
    t = as_array(targets, "targets")
    if s.ndim != 2 or len(s) == 0:
        raise ValueError(f"scores: expected a non-empty [n, num_classes] array, found shape {s.shape}")
    if t.ndim == 1:
        if t.dtype.kind not in "iu" or len(t) != len(s) or (t.size and (t.min() < 0 or t.max() >= s.shape[1])):
            raise ValueError(f"targets: class ids [n] must be {len(s)} integers in 0..{s.shape[1] - 1} "
                             f"(n and num_classes of scores), found shape {t.shape}, dtype {t.dtype}")
        t = np.eye(s.shape[1], dtype=bool)[t]
    if t.shape != s.shape:
        raise ValueError(f"targets: expected shape {s.shape} (that of scores), found {t.shape}")
    if not np.isin(t, (0, 1)).all():
        raise ValueError("targets: multi-hot targets must contain only 0/1 (or bool); threshold them first")
    if not np.isfinite(s).all():
        raise ValueError("scores contain inf; pass finite scores (e.g. logits or probabilities)")
    t = t.astype(np.float64)
    keep = np.flatnonzero(t.sum(axis=0) > 0)
    if keep.size == 0:
        return undefined("mean_average_precision: no class has a positive target")
    step = max(1, 4_000_000 // len(s))  # bound the per-block memory on large n x c inputs
    ap = np.concatenate([_average_precision_columns(t[:, keep[i:i + step]], s[:, keep[i:i + step]])
                         for i in range(0, keep.size, step)])
    return float(ap.mean())


def clustering_nmi(embeddings, labels, *, seed: int = 0, n_init: int = 10, normalize: bool = False) -> float:
    """NMI between the labels and a k-means clustering of the embeddings.

    k = the number of distinct labels; ``sklearn.cluster.KMeans(k, random_state=seed, n_init=n_init)`` on the
    embeddings (L2-normalised first if ``normalize``), scored by ``normalized_mutual_info_score`` with the
    arithmetic mean of the entropies. Needs at least 2 items; one distinct label gives 1.0 (both trivial).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    x, y = as_array(embeddings, "embeddings").astype(np.float64), as_array(labels, "labels")
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"embeddings: expected [n_items, dim] with at least 2 items, found shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"labels: expected single-label ids of shape [{len(x)}] (one per embedding row), "
                         f"found shape {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain inf; drop those items")
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.finfo(np.float64).tiny)
    k = len(np.unique(y))
    clusters = KMeans(n_clusters=k, random_state=seed, n_init=n_init).fit_predict(x)
    return float(normalized_mutual_info_score(y, clusters, average_method="arithmetic"))
