"""audio.intervals: overlaps and merges checked against brute force over a grid of times."""

from __future__ import annotations

import numpy as np
import pytest

from avex_hub.audio.intervals import merge_intervals, overlap_seconds


def _brute_overlap(a, b, step=0.001):
    grid = np.arange(0, 40, step) + step / 2
    inside = lambda s, e: (grid >= s) & (grid < e)  # noqa: E731
    return (inside(*a) & inside(*b)).sum() * step


def test_overlap_matches_brute_force():
    rng = np.random.default_rng(0)
    a = np.sort(rng.uniform(0, 30, (20, 2)), axis=1)
    b = np.sort(rng.uniform(0, 30, (15, 2)), axis=1)
    got = overlap_seconds(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    assert got.shape == (20, 15)
    want = np.array([[_brute_overlap(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, want, atol=2e-3)
    assert overlap_seconds([0], [1], [1], [2])[0, 0] == 0.0  # touching spans do not overlap


def test_merge_groups_overlapping_and_near_intervals():
    starts = [20.0, 0.0, 5.0, 10.0, 31.0]
    ends = [30.0, 10.0, 15.0, 20.0, 41.0]
    assert merge_intervals(starts, ends).tolist() == [0, 0, 0, 0, 1]
    assert merge_intervals(starts, ends, gap=1.0).tolist() == [0, 0, 0, 0, 0]
    assert merge_intervals([0, 12], [10, 20], gap=1.9).tolist() == [0, 1]
    assert merge_intervals([], []).tolist() == []


def test_bad_intervals_are_named():
    with pytest.raises(ValueError, match="interval 1 ends before it starts"):
        overlap_seconds([0, 5], [1, 4], [0], [1])
    with pytest.raises(ValueError, match="2 starts but 1 ends"):
        merge_intervals([0, 1], [2])
    with pytest.raises(ValueError, match="gap must be"):
        merge_intervals([0], [1], gap=-1)
