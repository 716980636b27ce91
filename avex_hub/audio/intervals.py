"""Time intervals in seconds: the one home for overlaps and merges of ``[start, end)`` spans.

Used wherever windows meet annotated or detected spans: labelling detection windows from annotations (the
benchmark runners) and merging positive windows into events (monitoring). Intervals are half-open, so two spans
that only touch (one ends where the next starts) do not overlap.
"""

from __future__ import annotations

import numpy as np

__all__ = ["as_intervals", "overlap_seconds", "merge_intervals"]


def as_intervals(starts, ends, *, name: str = "intervals") -> tuple[np.ndarray, np.ndarray]:
    """``(starts, ends)`` as float64 arrays of one length with every ``start <= end`` and finite values."""
    s = np.asarray(starts, dtype=np.float64).reshape(-1)
    e = np.asarray(ends, dtype=np.float64).reshape(-1)
    if s.shape != e.shape:
        raise ValueError(f"{name}: {s.size} starts but {e.size} ends; give one end per start")
    if not (np.isfinite(s).all() and np.isfinite(e).all()):
        bad = int(np.flatnonzero(~(np.isfinite(s) & np.isfinite(e)))[0])
        raise ValueError(f"{name}: interval {bad} is not finite ({s[bad]}, {e[bad]}); give times in seconds")
    if (e < s).any():
        bad = int(np.flatnonzero(e < s)[0])
        raise ValueError(f"{name}: interval {bad} ends before it starts ({s[bad]} > {e[bad]}); swap start and end")
    return s, e


def overlap_seconds(a_starts, a_ends, b_starts, b_ends) -> np.ndarray:
    """Overlap in seconds of every interval of ``a`` with every interval of ``b``: ``[len(a), len(b)]``, 0 where
    they are disjoint or only touch."""
    a_s, a_e = as_intervals(a_starts, a_ends, name="a")
    b_s, b_e = as_intervals(b_starts, b_ends, name="b")
    return np.clip(np.minimum(a_e[:, None], b_e[None, :]) - np.maximum(a_s[:, None], b_s[None, :]), 0.0, None)


def merge_intervals(starts, ends, *, gap: float = 0.0) -> np.ndarray:
    """Group the intervals that overlap, or lie at most ``gap`` seconds apart, into runs.

    Returns the run number of each input interval (in input order; runs are numbered by start time from 0), so
    callers can aggregate anything they carry per interval (scores, counts) with ``np.bincount`` or similar.
    """
    if gap < 0 or not np.isfinite(gap):
        raise ValueError(f"gap must be a finite number of seconds >= 0, got {gap}")
    s, e = as_intervals(starts, ends)
    order = np.argsort(s, kind="stable")
    runs = np.empty(s.size, dtype=np.int64)
    run, reach = -1, -np.inf
    for i in order:
        if s[i] > reach + gap:
            run += 1
            reach = e[i]
        else:
            reach = max(reach, e[i])
        runs[i] = run
    return runs
