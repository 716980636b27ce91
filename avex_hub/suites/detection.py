"""The detection task as BEANS defines it: annotated recordings cut into windows, each labelled from the events.

BEANS's rule (its ``datasets.py``, github.com/earthspecies/beans, MIT licence), restated:

- A recording of ``length`` seconds gets ``int((length - window) / shift) + 1`` windows (Python's ``int``, which
  truncates toward zero; none when that is below 1) starting at ``0, shift, 2 shift, ...``. No window is padded
  past the end, except that a recording shorter than one window but longer than ``window - shift`` gets one window
  (BEANS zero pads it; so does our loader, and masks the padding).
- A window is positive for an event's class when the event covers the whole window, or when their overlap is more
  than ``0.2`` of the shorter of the two (an event of zero length counts for nothing).

Overlaps come from :func:`avex_hub.audio.intervals.overlap_seconds`, the one home of interval overlaps (also used by
the monitoring events).
"""

from __future__ import annotations

import numpy as np

from ..audio.intervals import as_intervals, overlap_seconds

__all__ = ["MIN_OVERLAP", "window_starts", "label_windows"]

MIN_OVERLAP = 0.2  # BEANS: the overlap must exceed this share of the shorter of window and event


def window_starts(length_s: float, window_s: float, shift_s: float) -> np.ndarray:
    """Start times (seconds) of BEANS's windows over a recording of ``length_s`` seconds (module docstring)."""
    if not (window_s > 0 and shift_s > 0):
        raise ValueError(f"window_s and shift_s must be positive seconds, got {window_s} and {shift_s}")
    if not (np.isfinite(length_s) and length_s >= 0):
        raise ValueError(f"length_s must be finite seconds >= 0, got {length_s}")
    count = int((length_s - window_s) / shift_s) + 1  # int() truncates toward zero, as in BEANS
    return np.arange(max(count, 0), dtype=np.float64) * shift_s


def label_windows(starts, ends, event_starts, event_ends, event_classes, num_classes: int, *,
                  min_overlap: float = MIN_OVERLAP) -> np.ndarray:
    """Multi-hot labels ``[windows, num_classes]`` (bool) of the windows ``[starts, ends)`` from the events
    ``[event_starts, event_ends)`` of class ids ``event_classes`` (module docstring). Overlapping events of one
    class, or of several, simply mark their classes; windows with no event stay all False."""
    w_s, w_e = as_intervals(starts, ends, name="windows")
    e_s, e_e = as_intervals(event_starts, event_ends, name="events")
    classes = np.asarray(event_classes, dtype=np.int64).reshape(-1)
    if classes.shape != e_s.shape:
        raise ValueError(f"{e_s.size} events but {classes.size} event classes; give one class per event")
    if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(f"event classes must be ids in 0..{num_classes - 1}, found {np.unique(classes).tolist()}")
    overlap = overlap_seconds(w_s, w_e, e_s, e_e)  # [windows, events]
    shorter = np.minimum((w_e - w_s)[:, None], (e_e - e_s)[None, :])
    share = np.divide(overlap, shorter, out=np.zeros_like(overlap), where=shorter > 0)
    covered = (e_s[None, :] <= w_s[:, None]) & (w_e[:, None] <= e_e[None, :])
    hit = (share > min_overlap) | covered
    out = np.zeros((w_s.size, int(num_classes)), dtype=bool)
    for k in np.unique(classes):
        out[:, k] = hit[:, classes == k].any(axis=1)
    return out
