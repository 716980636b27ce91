"""The benchmarks' own scores where they differ from :mod:`avex_hub.heads.metrics`.

``beans_mean_average_precision`` is the mAP that BEANS's ``metrics.py`` reports for detection (and the official
avex library for detection and BirdSet, which the card's mAP rows come from): the mean over *all* classes of the
average precision, a class with no positive in the test set counting AP 0. ``avex_hub.heads.metrics``'s
``mean_average_precision`` averages only the classes that have a positive; both are kept, under these two names,
and a benchmark table says which it shows.
"""

from __future__ import annotations

import numpy as np
import torch

from ..heads.metrics import mean_average_precision

__all__ = ["beans_mean_average_precision"]


def _array(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x)


def beans_mean_average_precision(targets, scores) -> float:
    """Mean over all ``num_classes`` columns of the average precision; a column without a positive counts 0.

    ``targets``: multi-hot ``[n, num_classes]`` (0/1 or bool) or class ids ``[n]``; ``scores``: ``[n, num_classes]``.
    The AP of a column with positives is :func:`avex_hub.heads.metrics.mean_average_precision`'s (precision at each
    positive's rank, averaged over the positives; tied scores form one threshold). BEANS ranks tied scores in
    whatever order its sort leaves them, so the two agree exactly when a column has no tied scores. No positive in
    any column gives 0.0, as BEANS does.
    """
    s, t = _array(scores), _array(targets)
    if s.ndim != 2 or len(s) == 0:
        raise ValueError(f"scores: expected a non-empty [n, num_classes] array, found shape {s.shape}")
    if t.ndim == 1:
        if t.dtype.kind not in "iu" or len(t) != len(s) or (t.size and (t.min() < 0 or t.max() >= s.shape[1])):
            raise ValueError(f"targets: class ids [n] must be {len(s)} integers in 0..{s.shape[1] - 1}, found "
                             f"shape {t.shape}, dtype {t.dtype}")
        t = np.eye(s.shape[1], dtype=bool)[t]
    if t.shape != s.shape:
        raise ValueError(f"targets: expected shape {s.shape} (that of scores), found {t.shape}")
    if not np.isin(t, (0, 1)).all():
        raise ValueError("targets: multi-hot targets must contain only 0/1 (or bool)")
    present = np.flatnonzero(t.sum(axis=0) > 0)
    if present.size == 0:
        return 0.0
    # The mean over the columns with a positive, times their share of all columns: the other columns add 0.
    return mean_average_precision(t[:, present], s[:, present]) * present.size / s.shape[1]
