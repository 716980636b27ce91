"""Evaluation metrics of "What Matters for Bioacoustic Encoding": exact definitions, batched where it matters.

Classification (probe outputs): ``accuracy``, ``macro_f1``, ``mean_average_precision``.
Retrieval (embeddings, cosine): ``retrieval_roc_auc``, ``retrieval_precision_at_1``, ``retrieval_metrics``
(both in one pass), ``retrieval_per_query`` (the per-query numbers behind them).
Clustering: ``clustering_nmi`` (needs scikit-learn). Reporting: ``MetricResult``, ``ResultsTable``.

Inputs may be numpy arrays, torch tensors or lists. Invalid input raises ValueError saying what was expected.
An average with nothing to average (no class or query qualifies) returns ``nan`` with a RuntimeWarning rather
than raising, so one degenerate dataset does not abort a sweep.

The definitions live in :mod:`avex_hub.heads.scoring` (classification, mAP, clustering), :mod:`avex_hub.heads.retrieval`
and :mod:`avex_hub.heads.results` (tables); this module is where they are imported from.
"""

from __future__ import annotations

from .results import Comparison, MetricResult, ResultsTable
from .retrieval import retrieval_metrics, retrieval_per_query, retrieval_precision_at_1, retrieval_roc_auc
from .scoring import accuracy, clustering_nmi, macro_f1, mean_average_precision

__all__ = [
    "accuracy", "macro_f1", "mean_average_precision", "retrieval_roc_auc", "retrieval_precision_at_1",
    "retrieval_metrics", "retrieval_per_query", "clustering_nmi", "MetricResult", "ResultsTable", "Comparison",
]
