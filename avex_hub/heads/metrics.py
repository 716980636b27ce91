"""Evaluation metrics of "What Matters for Bioacoustic Encoding": exact definitions, batched where it matters.

Classification (probe outputs): ``accuracy``, ``macro_f1``, ``mean_average_precision``.
Retrieval (embeddings, cosine): ``retrieval_roc_auc``, ``retrieval_precision_at_1``, ``retrieval_metrics``
(both in one pass), ``retrieval_per_query`` (the per-query numbers behind them).
Clustering: ``clustering_nmi`` (needs scikit-learn). Reporting: ``MetricResult``, ``ResultsTable``.

Inputs may be numpy arrays, torch tensors or lists. Invalid input raises ValueError saying what was expected.
An average with nothing to average (no class or query qualifies) returns ``nan`` with a RuntimeWarning rather
than raising, so one degenerate dataset does not abort a sweep.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from ..encoder.precision import device_for

__all__ = [
    "accuracy", "macro_f1", "mean_average_precision", "retrieval_roc_auc", "retrieval_precision_at_1",
    "retrieval_metrics", "retrieval_per_query", "clustering_nmi", "MetricResult", "ResultsTable", "Comparison",
]


def _np(x, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.double() if x.dtype in (torch.float16, torch.bfloat16) else x
    a = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.dtype.kind == "f" and np.isnan(a).any():
        raise ValueError(f"{what} contain NaN at {np.argwhere(np.isnan(a))[:5].tolist()}; remove or impute them")
    return a


def _warn(message: str) -> None:
    """RuntimeWarning attributed to the first caller outside this module."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        level, frame = level + 1, frame.f_back
    warnings.warn(message, RuntimeWarning, stacklevel=level)


def _undefined(what: str) -> float:
    _warn(f"{what}; returning nan")
    return math.nan


def _class_ids(labels, predictions_or_scores, what: str) -> tuple[np.ndarray, np.ndarray]:
    y, p = _np(labels, "labels"), _np(predictions_or_scores, what)
    if y.ndim != 1:
        raise ValueError(f"labels: expected class ids of shape [n], found shape {y.shape}; "
                         "for multi-hot targets use mean_average_precision")
    if p.ndim == 2:
        p = p.argmax(axis=1)  # ties: the lowest class index wins
    if p.ndim != 1 or len(p) != len(y):
        raise ValueError(f"{what}: expected class ids [n] or scores [n, num_classes] with n = {len(y)} "
                         f"(the length of labels), found shape {_np(predictions_or_scores, what).shape}")
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
    s = _np(scores, "scores").astype(np.float64)
    t = _np(targets, "targets")
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
        return _undefined("mean_average_precision: no class has a positive target")
    step = max(1, 4_000_000 // len(s))  # bound the per-block memory on large n x c inputs
    ap = np.concatenate([_average_precision_columns(t[:, keep[i:i + step]], s[:, keep[i:i + step]])
                         for i in range(0, keep.size, step)])
    return float(ap.mean())


def _retrieval_inputs(embeddings, labels, device, dtype):
    emb = embeddings.detach() if isinstance(embeddings, torch.Tensor) else torch.as_tensor(np.asarray(embeddings))
    device = device_for(emb, device)
    if emb.ndim != 2 or emb.shape[0] < 2:
        raise ValueError(f"embeddings: expected [n_items, dim] with at least 2 items, found shape {tuple(emb.shape)}")
    n = emb.shape[0]
    emb = emb.to(device=device, dtype=dtype)
    bad = ~torch.isfinite(emb).all(dim=1)
    if bad.any():
        raise ValueError(f"embeddings contain NaN or inf (as {dtype}) in rows {bad.nonzero()[:5, 0].tolist()}; "
                         "drop those items or fix the encoder input")
    norms = torch.linalg.vector_norm(emb, dim=1)
    if norms.max() > 1e18:
        raise ValueError(f"embedding norms reach {norms.max().item():.3g}, which overflows {dtype} similarities; "
                         "rescale the embeddings (cosine similarity does not depend on scale)")
    zero = norms == 0
    if zero.any():
        _warn(f"{int(zero.sum())} embedding rows are all zero; cosine similarity is undefined for them and "
              "is taken as 0 to every item")
    y = _np(labels, "labels")
    if y.ndim not in (1, 2) or len(y) != n:
        raise ValueError(f"labels: expected class ids [n] or multi-hot [n, num_classes] with n = {n} "
                         f"(the rows of embeddings), found shape {y.shape}")
    if y.ndim == 1:
        y = torch.as_tensor(np.unique(y, return_inverse=True)[1].reshape(-1), device=device)
    elif not np.isin(y, (0, 1)).all():
        raise ValueError("labels: multi-hot labels must contain only 0/1 (or bool)")
    else:
        y = torch.as_tensor(y, dtype=torch.float32, device=device)
    return emb, torch.where(zero, 1.0, norms).to(dtype), y


def _sort_rows_(x: torch.Tensor) -> torch.Tensor:
    """Sort every row ascending; on the CPU in place through numpy's (SIMD) sort, several times faster there."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        x.numpy().sort(axis=1)
        return x
    return torch.sort(x, dim=1).values


def retrieval_per_query(embeddings, labels, *, queries=None, batch_size: int = 1024, device=None,
                        dtype: torch.dtype = torch.float32) -> dict[str, np.ndarray]:
    """Per-query retrieval results behind ``retrieval_metrics``, as numpy arrays with one entry per query.

    Query i ranks every other item j by cosine similarity. Positives of i: items j != i with the same
    label (multi-hot: sharing at least one label; an item without labels matches nothing); negatives: the
    other items j != i. Returns ``query`` (the item indices: ``queries``, default all), ``roc_auc`` (nan
    unless the query has >= 1 positive and >= 1 negative), ``nearest`` (the most similar other item; equal
    similarities: the lowest index), ``hit`` (nearest is a positive), ``num_positives``, ``num_negatives``.

    ROC AUC of a query = P(s_pos > s_neg) + 1/2 P(s_pos = s_neg) over its (positive, negative) pairs, the
    Mann-Whitney statistic, computed exactly in integers from mid-ranks (tied similarities share the mean
    of their ranks) of the smaller side within the sorted row. Similarities are ``dot(e_i, e_j) / |e_j|``
    in ``dtype``, which orders each row as cosine similarity does; a zero-norm row has similarity 0 to
    every item. Queries go in blocks of ``batch_size``; the n x n matrix is never built. Peak memory is one
    ``batch_size x n`` block of similarities (4 bytes each in float32; twice that on a GPU, whose sort copies),
    up to about 3x more with multi-hot labels or when most items share the query's class. ``device`` is where the
    similarities are computed (the embeddings are copied there).
    ``device=None`` runs where the model (or tensor) already is, and on the CPU for anything on no device.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, found {batch_size}")
    emb, norms, y = _retrieval_inputs(embeddings, labels, device, dtype)
    n = emb.shape[0]
    qs = np.arange(n) if queries is None else np.asarray(queries, dtype=np.int64).reshape(-1)
    if qs.size and (qs.min() < -n or qs.max() >= n):
        raise ValueError(f"queries: expected item indices in 0..{n - 1}, found {qs.min()}..{qs.max()}")
    qs = qs % n
    m = len(qs)
    if y.ndim == 1:  # members of each class, contiguous: class c holds by_class[offsets[c] : offsets[c + 1]]
        class_sizes = torch.bincount(y)
        by_class, offsets = torch.argsort(y, stable=True), torch.cumsum(class_sizes, 0) - class_sizes
    out = {"query": qs, "roc_auc": np.full(m, np.nan), "nearest": np.empty(m, np.int64), "hit": np.empty(m, bool),
           "num_positives": np.empty(m, np.int64), "num_negatives": np.empty(m, np.int64)}
    buffer = torch.empty(min(batch_size, m), n, dtype=dtype, device=emb.device)  # reused: no page faults per block
    for start in range(0, m, batch_size):
        stop = min(start + batch_size, m)
        cols = torch.as_tensor(qs[start:stop], device=emb.device)
        rows = torch.arange(stop - start, device=emb.device)
        sims = torch.matmul(emb[cols], emb.T, out=buffer[: stop - start]).div_(norms)
        sims[rows, cols] = -math.inf  # the query itself: never its own nearest item, rank below all others
        nearest = sims.max(dim=1).indices  # the first maximum: the lowest index among equal similarities
        if y.ndim == 1:
            hit = y[nearest] == y[cols]
            n_pos = class_sizes[y[cols]] - 1
        else:
            pos = y[cols] @ y.T > 0
            pos[rows, cols] = False
            hit, n_pos = pos.gather(1, nearest[:, None])[:, 0], pos.sum(dim=1)
        n_neg = (n - 1) - n_pos
        # Gather the smaller side (positives or negatives) of each row, padded with +inf ...
        positives_smaller = bool(n_pos.max() <= n_neg.max())
        n_small = n_pos if positives_smaller else n_neg
        if y.ndim == 1 and positives_smaller:  # the query's class members (its own -inf is dropped below)
            size = class_sizes[y[cols]]
            slot = torch.arange(int(size.max()), device=emb.device)
            members = by_class[(offsets[y[cols]][:, None] + slot).clamp_(max=n - 1)]
            small = sims.gather(1, members).masked_fill_(slot >= size[:, None], math.inf)
        else:  # a mask over the row, then the k smallest
            if y.ndim == 1:
                pos = y[cols, None] == y[None, :]
            small = torch.where(pos, sims, math.inf) if positives_smaller else torch.where(pos, math.inf, sims)
            small[rows, cols] = math.inf
            small = small.topk(max(int(n_small.max()), 1), dim=1, largest=False, sorted=False).values
            del pos
        small = _sort_rows_(small)  # sorted lookups run faster
        # ... and find the mid-ranks of its finite entries among all n items of the row: lt + (le - lt + 1) / 2.
        ranked = _sort_rows_(sims)
        lt = torch.searchsorted(ranked, small, out_int32=True)
        le = torch.searchsorted(ranked, small, right=True, out_int32=True)
        # Twice the mid-rank among the n - 1 others is lt + le - 1 (the query ranks first, at -inf).
        twice_rank_sum = torch.where(torch.isfinite(small), lt + le - 1, 0).sum(dim=1, dtype=torch.int64)
        twice_u = twice_rank_sum - n_small * (n_small + 1)  # Mann-Whitney U of the smaller side, doubled
        twice_good = twice_u if positives_smaller else 2 * n_pos * n_neg - twice_u
        n_pos, n_neg, twice_good = n_pos.cpu().numpy(), n_neg.cpu().numpy(), twice_good.cpu().numpy()
        valid = (n_pos > 0) & (n_neg > 0)
        out["roc_auc"][start:stop][valid] = twice_good[valid] / (2.0 * n_pos[valid] * n_neg[valid])
        out["nearest"][start:stop], out["hit"][start:stop] = nearest.cpu().numpy(), hit.cpu().numpy()
        out["num_positives"][start:stop], out["num_negatives"][start:stop] = n_pos, n_neg
    return out


def retrieval_metrics(embeddings, labels, *, batch_size: int = 1024, device=None,
                      dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """Retrieval ROC AUC and precision@1 in one pass (definitions: ``retrieval_per_query``).

    ``roc_auc``: mean per-query AUC over the ``num_queries`` queries with >= 1 positive and >= 1 negative.
    ``precision_at_1``: fraction of the ``num_queries_precision_at_1`` queries with >= 1 positive whose
    nearest other item is a positive. A query without a positive (a class with one item) is skipped but
    is still a candidate for the others. No qualifying query (e.g. all items in one class: no negatives)
    gives nan and a RuntimeWarning. ``batch_size`` changes only speed and memory, not results (given a matrix
    product that computes each dot product the same way for every block shape, as the CPU BLAS does).
    ``device=None`` runs where the model (or tensor) already is, and on the CPU for anything on no device.
    """
    q = retrieval_per_query(embeddings, labels, batch_size=batch_size, device=device, dtype=dtype)
    return {"roc_auc": _mean_auc(q), "precision_at_1": _precision_at_1(q),
            "num_queries": int(np.sum(~np.isnan(q["roc_auc"]))),
            "num_queries_precision_at_1": int(np.sum(q["num_positives"] > 0)), "num_items": len(q["query"])}


def _mean_auc(q: dict) -> float:
    ok = ~np.isnan(q["roc_auc"])
    return float(q["roc_auc"][ok].mean()) if ok.any() else _undefined(
        "retrieval ROC AUC: no query has both a positive and a negative (e.g. all items share one label)")


def _precision_at_1(q: dict) -> float:
    ok = q["num_positives"] > 0
    return float(q["hit"][ok].mean()) if ok.any() else _undefined(
        "retrieval precision@1: no query has a positive (every label occurs once)")


def retrieval_roc_auc(embeddings, labels, *, batch_size: int = 1024, device=None) -> float:
    """Mean per-query retrieval ROC AUC (cosine similarity; see ``retrieval_metrics``).

    ``device=None`` runs where the model (or tensor) already is, and on the CPU for anything on no device.
    """
    return _mean_auc(retrieval_per_query(embeddings, labels, batch_size=batch_size, device=device))


def retrieval_precision_at_1(embeddings, labels, *, batch_size: int = 1024, device=None) -> float:
    """Fraction of queries whose nearest other item shares a label (ties: lowest index; see ``retrieval_metrics``).

    ``device=None`` runs where the model (or tensor) already is, and on the CPU for anything on no device.
    """
    return _precision_at_1(retrieval_per_query(embeddings, labels, batch_size=batch_size, device=device))


def clustering_nmi(embeddings, labels, *, seed: int = 0, n_init: int = 10, normalize: bool = False) -> float:
    """NMI between the labels and a k-means clustering of the embeddings.

    k = the number of distinct labels; ``sklearn.cluster.KMeans(k, random_state=seed, n_init=n_init)`` on the
    embeddings (L2-normalised first if ``normalize``), scored by ``normalized_mutual_info_score`` with the
    arithmetic mean of the entropies. Needs at least 2 items; one distinct label gives 1.0 (both trivial).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    x, y = _np(embeddings, "embeddings").astype(np.float64), _np(labels, "labels")
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


@dataclass(frozen=True)
class MetricResult:
    """One score: ``task`` (e.g. a benchmark task), ``metric`` name, and optional model / layer / dataset."""

    task: str
    metric: str
    score: float
    model: str | None = None
    layer: str | int | None = None
    dataset: str | None = None


_COLUMNS = ("task", "dataset", "metric", "model", "layer")


def _cell(v, digits: int) -> str:
    if v is None:
        return ""
    text = f"{v:.{digits}f}" if isinstance(v, float) else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(header: Sequence[str], rows: Sequence[Sequence], digits: int) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Comparison:
    """Side-by-side scores of two tables (from ``ResultsTable.compare``); ``delta`` = second - first."""

    columns: tuple[str, ...]
    rows: list[tuple]

    def records(self) -> list[dict]:
        return [dict(zip(self.columns, row)) for row in self.rows]

    def to_markdown(self, digits: int = 4) -> str:
        return _markdown(self.columns, self.rows, digits)

    __str__ = to_markdown


class ResultsTable:
    """An ordered list of ``MetricResult`` rows with markdown / dict export and two-table comparison."""

    def __init__(self, rows: Iterable[MetricResult | dict] = ()) -> None:
        self.rows: list[MetricResult] = [r if isinstance(r, MetricResult) else MetricResult(**r) for r in rows]

    def add(self, task: str, metric: str, score: float, *, model: str | None = None,
            layer: str | int | None = None, dataset: str | None = None) -> MetricResult:
        row = MetricResult(task, metric, float(score), model, layer, dataset)
        self.rows.append(row)
        return row

    @classmethod
    def concat(cls, *tables: ResultsTable | Iterable[MetricResult]) -> ResultsTable:
        return cls(row for table in tables for row in table)

    @classmethod
    def from_records(cls, records: Iterable[dict]) -> ResultsTable:  # the inverse of records()
        return cls(records)

    @classmethod
    def from_dict(cls, data: dict) -> ResultsTable:  # the inverse of to_dict()
        return cls(data["rows"])

    def records(self) -> list[dict]:
        return [asdict(row) for row in self.rows]

    def to_dict(self) -> dict:
        return {"rows": self.records()}

    def to_pandas(self):
        import pandas as pd  # optional dependency

        return pd.DataFrame(self.records(), columns=[f.name for f in fields(MetricResult)])

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __eq__(self, other) -> bool:
        return isinstance(other, ResultsTable) and self.rows == other.rows

    def to_markdown(self, digits: int = 4) -> str:
        """Markdown table; columns that are empty in every row (e.g. no ``layer``) are left out."""
        used = [c for c in _COLUMNS if c in ("task", "metric") or any(getattr(r, c) is not None for r in self.rows)]
        return _markdown([*used, "score"], [[*(getattr(r, c) for c in used), r.score] for r in self.rows], digits)

    __str__ = to_markdown

    def compare(self, other: ResultsTable, names: tuple[str, str] = ("a", "b"),
                on: Sequence[str] = ("task", "dataset", "metric", "layer")) -> Comparison:
        """Align rows of ``self`` and ``other`` on the fields ``on``: one row per key, in first-seen order,
        with both scores (None where a side lacks the key) and their difference."""
        if len(names) != 2 or names[0] == names[1]:
            raise ValueError(f"names: expected two distinct column names, found {names!r}")
        if not set(on) <= set(_COLUMNS):
            raise ValueError(f"on: expected fields from {_COLUMNS}, found {tuple(on)}")
        sides: list[dict[tuple, float]] = []
        for table, name in ((self, names[0]), (other, names[1])):
            scores = {}
            for row in table:
                key = tuple(getattr(row, c) for c in on)
                if key in scores:
                    raise ValueError(f"table {name!r} has two rows for {dict(zip(on, key))}; "
                                     "add a distinguishing field (e.g. 'model') to `on`")
                scores[key] = row.score
            sides.append(scores)
        pairs = [(key, sides[0].get(key), sides[1].get(key)) for key in dict.fromkeys([*sides[0], *sides[1]])]
        return Comparison((*on, *names, "delta"), [(*key, a, b, None if a is None or b is None else b - a)
                                                    for key, a, b in pairs])
