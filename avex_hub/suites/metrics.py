"""The benchmarks' own scores where they differ from :mod:`avex_hub.heads.metrics`.

``beans_mean_average_precision`` is the mAP that BEANS's ``metrics.py`` reports for detection (and the official
avex library for detection and BirdSet, which the card's mAP rows come from): the mean over *all* classes of the
average precision, a class with no positive in the test set counting AP 0. ``avex_hub.heads.metrics``'s
``mean_average_precision`` averages only the classes that have a positive; both are kept, under these two names,
and a benchmark table says which it shows.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..heads.metrics import mean_average_precision

__all__ = ["beans_mean_average_precision"]


def beans_mean_average_precision(targets, scores) -> float:
    """Mean over all ``num_classes`` columns of the average precision; a column without a positive counts 0.

    ``targets``: multi-hot ``[n, num_classes]`` (0/1 or bool) or class ids ``[n]``; ``scores``: ``[n, num_classes]``.
    The AP of a column with positives is :func:`avex_hub.heads.metrics.mean_average_precision`'s (precision at each
    positive's rank, averaged over the positives; tied scores form one threshold), which also checks the inputs.
    BEANS ranks tied scores in whatever order its sort leaves them, so the two agree exactly when a column has no
    tied scores. No positive in any column gives 0.0, as BEANS does.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no positive in any column: nan there, 0.0 here
        present_mean = mean_average_precision(targets, scores)  # raises ValueError on malformed inputs
    t, num_classes = np.asarray(targets), np.shape(scores)[1]
    present = len(np.unique(t)) if t.ndim == 1 else int((t.sum(axis=0) > 0).sum())
    # The mean over the columns with a positive, times their share of all columns: the other columns add 0.
    return 0.0 if present == 0 else present_mean * present / num_classes
