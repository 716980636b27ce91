"""Retrieval by cosine similarity, exactly and in blocks: per-query ROC AUC and precision@1
(``retrieval_per_query``) and their means (``retrieval_metrics``, ``retrieval_roc_auc``,
``retrieval_precision_at_1``). Import them from :mod:`avex_hub.heads.metrics`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..encoder.precision import device_for
from .scoring import as_array, undefined, warn_caller

__all__ = ["retrieval_per_query", "retrieval_metrics", "retrieval_roc_auc", "retrieval_precision_at_1"]


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
        warn_caller(f"{int(zero.sum())} embedding rows are all zero; cosine similarity is undefined for them and "
              "is taken as 0 to every item")
    y = as_array(labels, "labels")
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
    return {"roc_auc": _mean_auc(q), "precision_at_1": _precision_at_1(q, np.ndim(labels) == 2),
            "num_queries": int(np.sum(~np.isnan(q["roc_auc"]))),
            "num_queries_precision_at_1": int(np.sum(q["num_positives"] > 0)), "num_items": len(q["query"])}


def _mean_auc(q: dict) -> float:
    ok = ~np.isnan(q["roc_auc"])
    return float(q["roc_auc"][ok].mean()) if ok.any() else undefined(
        "retrieval ROC AUC: no query has both a positive and a negative (e.g. all items share one label)")


def _precision_at_1(q: dict, multilabel: bool) -> float:
    ok = q["num_positives"] > 0
    why = "no two items share a label" if multilabel else "every label occurs once"
    return float(q["hit"][ok].mean()) if ok.any() else undefined(
        f"retrieval precision@1: no query has a positive ({why})")


def retrieval_roc_auc(embeddings, labels, *, batch_size: int = 1024, device=None) -> float:
    """Mean per-query retrieval ROC AUC (cosine similarity; see ``retrieval_metrics``).

    ``device=None`` runs where the model (or tensor) already is, and on the CPU for anything on no device.
    """
    return _mean_auc(retrieval_per_query(embeddings, labels, batch_size=batch_size, device=device))


def retrieval_precision_at_1(embeddings, labels, *, batch_size: int = 1024, device=None) -> float:
    """Fraction of queries whose nearest other item shares a label (ties: lowest index; see ``retrieval_metrics``).

    ``device=None`` runs where the model (or tensor) already is, and on the CPU for anything on no device.
    """
    q = retrieval_per_query(embeddings, labels, batch_size=batch_size, device=device)
    return _precision_at_1(q, np.ndim(labels) == 2)
