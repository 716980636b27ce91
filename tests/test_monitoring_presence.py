"""monitoring.presence: site x occasion tables in local time across daylight-saving changes, effort in recorded
seconds, NA where not surveyed, and the files R's unmarked reads."""

from __future__ import annotations

import csv
import datetime as dt
import json
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from avex_hub.monitoring.events import Event
from avex_hub.monitoring.presence import UTC_FALLBACK, parse_occasion, presence_table, write_presence
from avex_hub.monitoring.recordings import Recording

BERLIN = ZoneInfo("Europe/Berlin")


def _recording(file, start, hours, site, zone, flag=""):
    return Recording(file, start, hours * 3600.0, "file name", None, site, 52.5, 13.4, zone, flag)


def _event(file, recording, at, label="Strix aluco"):
    offset = (at - recording.start).total_seconds()
    return Event(file, -1, label, offset, offset + 2, 1, 0.9, 0.9, start_time=at.isoformat(), site=recording.site)


@pytest.fixture
def autumn():
    """Site A in Berlin records 24 Oct 00:00 to 27 Oct 00:00 local (clocks go back on the 25th); site B, with no zone
    given, records the same UTC span; a third recording lies outside its deployment."""
    a = _recording("a.wav", dt.datetime(2026, 10, 24, tzinfo=BERLIN), 73, "A", "Europe/Berlin")
    b = _recording("b.wav", dt.datetime(2026, 10, 23, 22, tzinfo=dt.timezone.utc), 73, "B", None)
    stray = _recording("c.wav", dt.datetime(2026, 10, 24, tzinfo=BERLIN), 5, "A", "Europe/Berlin",
                       "outside deployment dates")
    first = dt.datetime(2026, 10, 25, 2, 30, fold=0, tzinfo=BERLIN)  # 02:30 CEST, before the clocks go back
    second = dt.datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN)  # 02:30 CET, an hour later
    events = [_event("a.wav", a, first), _event("a.wav", a, second), _event("c.wav", stray, first)]
    return [a, b, stray], events


def test_local_days_last_23_or_25_hours_and_unknown_zones_are_utc_and_said_so(autumn):
    recordings, events = autumn
    p = presence_table(recordings, events, occasion="day")
    assert p.sites == ["A", "B"] and p.occasions == ["2026-10-23", "2026-10-24", "2026-10-25", "2026-10-26"]
    # A: recorded from local midnight; the 25th has 25 hours. B in UTC: 2 h on the 23rd, then whole days.
    np.testing.assert_allclose(p.effort[0], [0, 86400, 90000, 86400])
    np.testing.assert_allclose(p.effort[1], [7200, 86400, 86400, 86400 - 7200 + 3600])
    assert p.zones == {"A": "Europe/Berlin", "B": UTC_FALLBACK}
    counts = p.detections["Strix aluco"]
    assert np.isnan(counts[0, 0]) and counts[0].tolist()[1:] == [0, 2, 0]  # NA where A did not record
    assert p.present("Strix aluco")[0].tolist()[1:] == [0, 1, 0]
    assert p.left_out == {"recordings outside every deployment or its dates": 1, "events of left-out recordings": 1}


def test_the_repeated_hour_is_one_occasion_of_two_hours_and_the_skipped_hour_has_no_effort(autumn):
    recordings, events = autumn
    p = presence_table(recordings[:1], events[:2], occasion="hour")
    hour = p.occasions.index("2026-10-25T02")
    assert p.effort[0, hour] == 7200 and p.detections["Strix aluco"][0, hour] == 2
    assert p.bounds["A"][hour] == ("2026-10-25T02:00:00+02:00", "2026-10-25T03:00:00+01:00")
    spring = _recording("s.wav", dt.datetime(2026, 3, 29, tzinfo=BERLIN), 6, "A", "Europe/Berlin")
    q = presence_table([spring], [], occasion="hour", labels=["Strix aluco"])
    skipped = q.occasions.index("2026-03-29T02")
    assert q.effort[0, skipped] == 0 and np.isnan(q.detections["Strix aluco"][0, skipped])
    assert q.effort[0].sum() == 6 * 3600  # no second lost or counted twice


def test_occasions_of_several_hours_or_days():
    assert parse_occasion("day") == ("d", 1) and parse_occasion("6h") == ("h", 6) and parse_occasion("7d") == ("d", 7)
    for bad in ("5h", "0d", "week", "-1d"):
        with pytest.raises(ValueError, match="give day, hour"):
            parse_occasion(bad)
    r = _recording("a.wav", dt.datetime(2026, 6, 1, 12, tzinfo=dt.timezone.utc), 24 * 9, "A", "UTC")
    p = presence_table([r], [], occasion="7d", labels=["x"])
    assert p.occasions == ["2026-06-01", "2026-06-08"] and p.effort[0].sum() == 9 * 86400
    six = presence_table([r], [], occasion="6h", labels=["x"])
    assert six.occasions[:3] == ["2026-06-01T00", "2026-06-01T06", "2026-06-01T12"] and six.effort[0, 2] == 6 * 3600


def test_files_in_the_shape_unmarked_reads(autumn, tmp_path):
    recordings, events = autumn
    p = presence_table(recordings, events, occasion="day", labels=["Strix aluco", "Bubo bubo"])
    files = write_presence(tmp_path / "presence", p)
    with open(files["Strix aluco"], newline="") as handle:
        y = list(csv.reader(handle))
    assert y[0] == ["site", *p.occasions] and [row[0] for row in y[1:]] == ["A", "B"]
    assert y[1][1:] == ["NA", "0", "1", "0"] and y[2][1:] == ["0", "0", "0", "0"]
    with open(files["Bubo bubo"], newline="") as handle:
        assert list(csv.reader(handle))[1][1:] == ["NA", "0", "0", "0"]  # never detected: zeros, NA unsurveyed
    with open(files["effort"], newline="") as handle:
        effort = list(csv.reader(handle))
    assert effort[1][1:] == ["0", "86400", "90000", "86400"]
    with open(files["presence"], newline="") as handle:
        long = list(csv.DictReader(handle))
    assert len(long) == 2 * 4 * 2
    first = long[0]
    assert (first["site"], first["occasion"], first["detections"], first["present"], first["time_zone"]) == \
        ("A", "2026-10-23", "NA", "NA", "Europe/Berlin")
    meta = json.loads((tmp_path / "presence" / "presence.json").read_text())
    assert meta["time_zones"]["B"] == UTC_FALLBACK and meta["occasion"] == "day"
    with open(files["sites"], newline="") as handle:
        assert list(csv.reader(handle))[1] == ["A", "52.5", "13.4", "Europe/Berlin"]


def test_nothing_usable_is_an_error():
    r = Recording("a.wav", None, 60.0, "", None, "A")
    with pytest.raises(ValueError, match="no recording has both a known start and a deployment"):
        presence_table([r], [])
