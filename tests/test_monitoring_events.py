"""monitoring.events: the merge and boundary rule against ideal detectors and its stated tolerance; events CSV and Raven
selection tables written and read back."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from avex_hub.monitoring.events import find_events, read_events, write_event_tables, write_events
from avex_hub.monitoring.scores import ScoreSource, ScoreTable


def _table(files, starts, ends, scores, labels, channel=-1):
    n = len(starts)
    return ScoreTable(np.array(files if isinstance(files, list) else [files] * n, dtype=object),
                      np.full(n, channel, np.int32), np.asarray(starts, float), np.asarray(ends, float),
                      np.asarray(scores, np.float32).reshape(n, -1), labels, ScoreSource("w" * 64))


def _grid(length: float, window: float, hop: float):
    starts = np.arange(0.0, length - 1e-9, hop)
    return starts, np.minimum(starts + window, length)


def _calls(rng, length: float, window: float, hop: float, longest: float) -> list[tuple[float, float]]:
    """Calls of random length at random times, far enough apart that no window holds two."""
    calls, t = [], 3.0 + float(rng.uniform(0, hop))
    while t < length - 40:
        d = float(rng.uniform(0.1, longest))
        calls.append((t, t + d))
        t += d + 2 * window + hop + float(rng.uniform(0.5, 20.0))
    return calls


def _detect(starts, ends, calls, min_fraction):
    """An ideal detector: a window scores 0.95 when it holds at least ``min_fraction`` of a call (any overlap when
    0), else 0.05."""
    scores = np.full(len(starts), 0.05)
    for a, b in calls:
        overlap = np.minimum(ends, b) - np.maximum(starts, a)
        scores[overlap >= max(min_fraction * (b - a), 1e-12)] = 0.95
    return scores


@pytest.mark.parametrize("window, hop", [(10.0, 5.0), (2.0, 1.0), (3.0, 1.5), (4.0, 2.0)])
def test_a_detector_of_half_calls_gives_events_holding_the_call_within_call_window_and_hop(window, hop):
    rng = np.random.default_rng(int(window * 10 + hop))
    starts, ends = _grid(3000.0, window, hop)
    calls = _calls(rng, 3000.0, window, hop, longest=2 * (window - hop))
    events = find_events(_table("f.wav", starts, ends, _detect(starts, ends, calls, 0.5), ["x"]), {"x": 0.5})
    assert len(events) == len(calls)
    for (a, b), e in zip(calls, events):
        assert e.start_s <= a and b <= e.end_s, (a, b, e)
        assert e.end_s - e.start_s <= (b - a) + window + hop + 1e-9
        assert e.end_s - e.start_s <= 2 * window - hop + 1e-9  # no window edge meets a call's middle here


@pytest.mark.parametrize("window, hop", [(10.0, 5.0), (2.0, 1.0), (3.0, 1.0)])
def test_a_detector_of_any_overlap_gives_events_holding_the_call_within_two_windows(window, hop):
    rng = np.random.default_rng(int(window * 7 + hop))
    starts, ends = _grid(3000.0, window, hop)
    calls = _calls(rng, 3000.0, window, hop, longest=15.0)
    events = find_events(_table("f.wav", starts, ends, _detect(starts, ends, calls, 0.0), ["x"]), {"x": 0.5})
    assert len(events) == len(calls)
    for (a, b), e in zip(calls, events):
        assert e.start_s <= a and b <= e.end_s and e.end_s - e.start_s <= (b - a) + 2 * window
        assert e.windows == int(((starts < b) & (ends > a)).sum()) and e.max_score == pytest.approx(0.95)


def test_events_carry_the_max_and_mean_of_their_windows():
    starts, ends = _grid(60.0, 10.0, 5.0)
    scores = np.where((starts < 13.0) & (ends > 12.0), [0.9 if s == 5.0 else 0.7 for s in starts], 0.1)
    (event,) = find_events(_table("f.wav", starts, ends, scores, ["x"]), {"x": 0.5})
    assert (event.start_s, event.end_s, event.windows) == (5.0, 20.0, 2)
    assert (event.max_score, event.mean_score) == pytest.approx((0.9, 0.8))


def test_gap_tolerance_joins_nearby_detections():
    starts, ends = _grid(40.0, 2.0, 2.0)  # no overlap between windows
    scores = np.zeros(len(starts))
    scores[[2, 3, 5]] = 0.9  # 4-8 s and 10-12 s: 2 s apart
    table = _table("f.wav", starts, ends, scores, ["x"])
    assert [(e.start_s, e.end_s) for e in find_events(table, {"x": 0.5})] == [(4.0, 8.0), (10.0, 12.0)]
    (joined,) = find_events(table, {"x": 0.5}, gap_s=2.0)
    assert (joined.start_s, joined.end_s, joined.windows) == (4.0, 12.0, 3)
    with pytest.raises(ValueError, match="gap must be"):
        find_events(table, {"x": 0.5}, gap_s=-1)


def test_labels_files_and_channels_are_kept_apart_and_thresholds_are_per_label():
    starts, ends = _grid(20.0, 2.0, 1.0)
    n = len(starts)
    files = ["a.wav"] * n + ["b.wav"] * n
    scores = np.zeros((2 * n, 2))
    scores[3:5, 0] = 0.6  # a.wav, label x
    scores[n + 3:n + 5, 1] = 0.6  # b.wav, label y
    table = _table(files, np.tile(starts, 2), np.tile(ends, 2), scores, ["x", "y"])
    got = find_events(table, {"x": 0.5, "y": 0.7})
    assert [(e.file, e.label) for e in got] == [("a.wav", "x")]  # y's threshold 0.7 is not reached
    with pytest.raises(ValueError, match="label 'z' is not in the score table"):
        find_events(table, {"z": 0.5})


def test_events_csv_and_raven_tables_read_back(tmp_path):
    starts, ends = _grid(30.0, 2.0, 1.0)
    scores = np.zeros(len(starts))
    scores[[4, 5, 6, 20]] = [0.8, 0.9, 0.7, 0.6]
    table = _table("=site 1/rec.wav", starts, ends, scores, ["Strix aluco"])
    events = find_events(table, {"Strix aluco": 0.5})
    write_events(tmp_path / "events.csv", events)
    assert read_events(tmp_path / "events.csv") == events  # the '=' file name is guarded and restored
    written = write_event_tables(tmp_path / "raven", events, ["=site 1/rec.wav", "other.wav"])
    with open(written[0], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [r["Selection"] for r in rows] == ["1", "2"]  # one selection per event
    assert [(float(r["Begin Time (s)"]), float(r["End Time (s)"])) for r in rows] == [(4.0, 8.0), (20.0, 22.0)]
    assert {r["Species"] for r in rows} == {"Strix aluco"} and rows[0]["Windows"] == "3"
    assert rows[0]["View"] == "Spectrogram 1" and rows[0]["Channel"] == "1"
    assert written[1].read_text(encoding="utf-8").count("\n") == 1  # a file without events: header only
