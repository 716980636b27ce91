"""The benchmark tasks against brute force: BEANS's detection windows and window labels, and BEANS's mAP.

The references here are BEANS's own rules written out plainly (its ``datasets.py`` window loop and its
``metrics.py`` average precision), so a change in ours that departs from BEANS fails against them.
"""

from __future__ import annotations

import numpy as np
import pytest

from avex_hub.heads.metrics import mean_average_precision
from avex_hub.suites.detection import label_windows, window_starts
from avex_hub.suites.metrics import beans_mean_average_precision


# -- windows -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length, window, shift, expected", [
    (6.0, 2, 1, [0, 1, 2, 3, 4]),          # int(4 / 1) + 1 = 5; the last window ends at 6: none is padded
    (6.5, 2, 1, [0, 1, 2, 3, 4]),          # the half second after the last full window is not windowed
    (60.0, 10, 5, list(range(0, 51, 5))),  # 11 windows, as BEANS cuts its 60 s chunks of hiceas and rfcx
    (59.9, 4, 2, list(range(0, 55, 2))),   # int(55.9 / 2) + 1 = 28
    (7.0, 4, 2, [0, 2]),                   # int(1.5) + 1 = 2; a third window (4-8) would pass the end
    (1.5, 2, 1, [0]),                      # int(-0.5) + 1 = 1: one window past the end, zero padded
    (1.0, 2, 1, []),                       # int(-1.0) + 1 = 0
    (0.5, 2, 1, []),                       # int(-1.5) + 1 = 0
    (0.0, 10, 5, []),                      # int(-2.0) + 1 = -1: none
])
def test_window_starts_follow_beans_count(length, window, shift, expected):
    assert window_starts(length, window, shift).tolist() == expected


def test_window_starts_refuse_bad_arguments():
    with pytest.raises(ValueError, match="positive"):
        window_starts(10, 0, 1)
    with pytest.raises(ValueError, match="length_s"):
        window_starts(float("nan"), 2, 1)


def _beans_labels(starts, window, events, num_classes):
    """BEANS's window labelling loop, written out: an endpoint of the event inside the window (closed) and an
    overlap above 0.2 of the shorter, or the event covering the window."""
    out = np.zeros((len(starts), num_classes), dtype=bool)
    for w, st in enumerate(starts):
        ed = st + window
        for a_st, a_ed, k in events:
            if (st <= a_st <= ed) or (st <= a_ed <= ed):
                denom = min(ed - st, a_ed - a_st)
                if denom == 0:
                    continue
                if (min(ed, a_ed) - max(st, a_st)) / denom > 0.2:
                    out[w, k] = True
            if a_st <= st and ed <= a_ed:
                out[w, k] = True
    return out


def test_label_windows_equals_beans_loop_on_random_and_boundary_events():
    rng = np.random.default_rng(0)
    for trial in range(300):
        length, window, shift = [(12.0, 2, 1), (30.0, 4, 2), (40.0, 10, 5)][trial % 3]
        starts = window_starts(length, window, shift)
        n = int(rng.integers(0, 8))
        a = rng.uniform(-1, length + 1, n).round(int(rng.integers(0, 3)))  # rounding makes exact touches common
        b = a + np.abs(rng.normal(0, window, n)).round(1) * (rng.random(n) > 0.1)  # some zero-length events
        grid = starts[rng.integers(0, len(starts), n)] + rng.choice([0, window, shift], n)  # events on edges
        use_grid = rng.random(n) < 0.3
        a = np.where(use_grid, grid, a)
        b = np.where(use_grid, grid + rng.choice([0.4, shift, window, 2 * window], n), b)
        k = rng.integers(0, 3, n)
        ours = label_windows(starts, starts + window, a, b, k, 3)
        assert (ours == _beans_labels(starts, window, list(zip(a, b, k)), 3)).all(), (trial, a, b, k)


def test_label_windows_awkward_cases():
    starts = window_starts(8.0, 2, 1)  # 0..6
    ends = starts + 2
    # windows 0-2, 1-3, ..., 6-8; class 0: two overlapping events; class 1: a zero-length event at 4 s and an event
    # 0-2 that only touches window 2-4; class 2: an event from 3 s past the end, covering windows 3-5 .. 6-8
    hits = label_windows(starts, ends, [0.5, 1.0, 4.0, 0.0, 3.0], [1.8, 3.5, 4.0, 2.0, 9.0], [0, 0, 1, 1, 2], 3)
    assert hits[:, 0].tolist() == [True, True, True, True, False, False, False]  # 3-5: 0.5 s of 2 s = 0.25 > 0.2
    assert hits[:, 1].tolist() == [True, True, False, False, False, False, False]  # touching and zero length: no
    assert hits[:, 2].tolist() == [False, False, True, True, True, True, True]  # 1-3 only touches it
    assert label_windows(starts, ends, [], [], [], 3).sum() == 0  # a recording with no events
    overlap_exactly_a_fifth = label_windows([0.0], [2.0], [1.6], [5.0], [0], 1)  # 0.4 / 2 = 0.2: not more
    assert not overlap_exactly_a_fifth.any()
    with pytest.raises(ValueError, match="ends before it starts"):
        label_windows(starts, ends, [3.0], [2.0], [0], 1)
    with pytest.raises(ValueError, match="ids in 0..0"):
        label_windows(starts, ends, [1.0], [2.0], [1], 1)


# -- BEANS's mAP -----------------------------------------------------------------------------------------------------
def _beans_ap(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """BEANS's AveragePrecision, written out: sort by score, precision at every positive, mean over the positives
    (a column without a positive divides by max(0, 1) and gives 0)."""
    ap = np.zeros(scores.shape[1])
    for k in range(scores.shape[1]):
        order = np.argsort(-scores[:, k], kind="stable")
        truth = targets[order, k]
        precision = np.cumsum(truth) / np.arange(1, len(truth) + 1)
        ap[k] = precision[truth.astype(bool)].sum() / max(truth.sum(), 1)
    return ap


def test_beans_map_equals_the_beans_definition_and_counts_absent_classes_as_zero():
    rng = np.random.default_rng(1)
    for _ in range(50):
        n, k = int(rng.integers(2, 40)), int(rng.integers(1, 9))
        targets = (rng.random((n, k)) < rng.uniform(0.05, 0.5)).astype(np.float32)
        targets[:, rng.integers(0, k)] = 0  # at least one class without a positive
        scores = rng.normal(size=(n, k))  # continuous: no ties, where BEANS's order is defined
        expected = _beans_ap(scores, targets).mean()
        assert beans_mean_average_precision(targets, scores) == pytest.approx(expected, abs=1e-12)
        present = targets.sum(0) > 0
        if present.any():  # the other mAP averages only the present classes
            assert mean_average_precision(targets, scores) == pytest.approx(_beans_ap(scores, targets)[present].mean())


def test_beans_map_agrees_with_scikit_learn_where_classes_have_positives():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(2)
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]])
    scores = rng.normal(size=targets.shape)
    expected = np.mean([average_precision_score(targets[:, c], scores[:, c]) for c in (0, 1)] + [0.0])
    assert beans_mean_average_precision(targets, scores) == pytest.approx(expected)
    assert beans_mean_average_precision(np.zeros((3, 2)), rng.normal(size=(3, 2))) == 0.0  # no positive at all
    ids = np.array([0, 2, 1, 2])  # class ids are one-hot encoded; class 3 never occurs and counts 0
    one_hot = np.eye(4)[ids]
    s = rng.normal(size=(4, 4))
    assert beans_mean_average_precision(ids, s) == pytest.approx(_beans_ap(s, one_hot).mean())
    with pytest.raises(ValueError, match="expected shape"):
        beans_mean_average_precision(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="only 0/1"):
        beans_mean_average_precision(np.full((2, 2), 2), np.zeros((2, 2)))
