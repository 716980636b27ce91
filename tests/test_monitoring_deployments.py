"""monitoring.deployments and .recordings: sites joined onto recordings, bad tables refused by line, flags."""

from __future__ import annotations

import datetime as dt

import pytest

from avex_hub.monitoring.deployments import NO_DEPLOYMENT, OUTSIDE_DATES, Deployments
from avex_hub.monitoring.recordings import by_file, describe_recordings, read_recordings, write_recordings
from recorder_files import audiomoth_wav, plain_wav

HEADER = "folder,recorder,site,latitude,longitude,start,end,timezone\n"


def _table(tmp_path, text: str):
    path = tmp_path / "deployments.csv"
    path.write_text(HEADER + text, encoding="utf-8")
    return path


@pytest.fixture
def survey(tmp_path):
    """Two folders and one AudioMoth known by its serial: a file in May, one in June, one in no deployment."""
    files = {
        "north_may": plain_wav(tmp_path / "north" / "20260510_050000.WAV"),
        "north_june": plain_wav(tmp_path / "north" / "20260602_050000.WAV"),
        "deep": plain_wav(tmp_path / "north" / "pond" / "20260511_050000.WAV"),
        "moth": audiomoth_wav(tmp_path / "loose" / "a.WAV", "Recorded at 06:00:00 12/05/2026 (UTC+2) by AudioMoth "
                                                             "AAAA000011112222 at medium gain",
                              serial="AAAA000011112222"),
        "stray": plain_wav(tmp_path / "elsewhere" / "20260510_050000.WAV"),
    }
    table = _table(tmp_path, "north,,N1,52.5,13.4,2026-05-01,2026-05-31,Europe/Berlin\n"
                             "north/pond,,N2,52.6,13.5,,,Europe/Berlin\n"
                             ",AAAA000011112222,S1,-3.1,-60.0,2026-05-01T00:00:00-04:00,,America/Manaus\n")
    return files, Deployments.read(table)


def test_recordings_get_site_position_zone_and_flags(survey):
    files, deployments = survey
    rows = describe_recordings({str(p): 60.0 for p in files.values()}, deployments=deployments,
                               timezone="Europe/Berlin")
    got = {name: r for name, r in zip(files, rows)}
    assert (got["north_may"].site, got["north_may"].flag, got["north_may"].time_zone) == ("N1", "", "Europe/Berlin")
    assert (got["north_may"].latitude, got["north_may"].longitude) == (52.5, 13.4)
    assert got["north_june"].site == "N1" and got["north_june"].flag == OUTSIDE_DATES  # ends 2026-05-31, whole day
    assert got["deep"].site == "N2" and got["deep"].flag == ""  # the deepest folder wins
    assert got["moth"].site == "S1" and got["moth"].recorder == "AAAA000011112222" and got["moth"].flag == ""
    assert got["stray"].site is None and got["stray"].flag == NO_DEPLOYMENT
    assert got["north_may"].time_at(30.5) == dt.datetime(2026, 5, 10, 3, 0, 30, 500000, tzinfo=dt.timezone.utc)


def test_the_recordings_table_round_trips(survey, tmp_path):
    files, deployments = survey
    rows = describe_recordings({str(p): 60.0 for p in files.values()}, deployments=deployments)
    write_recordings(tmp_path / "recordings.csv", rows)
    back = read_recordings(tmp_path / "recordings.csv")
    assert back == rows  # starts, sites, positions, zones, flags and notes all survive
    assert sum(r.start is None for r in back) == 4  # file names without --timezone: unknown, never guessed
    assert by_file(back)[str(files["moth"])].start.utcoffset() == dt.timedelta(hours=2)


@pytest.mark.parametrize("rows, message", [
    ("north,,N1,,,2026-05-01,2026-05-31,\nnorth,,N1b,,,2026-05-20,,\n",
     "lines 2 and 3 give folder .* overlapping dates"),
    (",REC1,A,,,,,\n,REC1,B,,,2026-01-01,,\n", "lines 2 and 3 give recorder 'REC1' overlapping dates"),
    ("nowhere,,N1,,,,,\n", r"line 2: folder 'nowhere' does not exist"),
    ("north,,N1,95,13,,,\n", "latitude '95' is not a number between -90 and 90"),
    (",,N1,,,,,\n", "every row needs a site and a folder or recorder"),
    ("north,,N1,,,2026-06-01,2026-05-01,\n", "ends .* before it starts"),
    ("north,,N1,,,2026-13-01,,\n", "is not an ISO 8601 date"),
    ("north,,N1,,,,,Europe/Berlin\nnorth/pond,,N1,,,,,UTC\n", "site 'N1' has time zone UTC here and Europe/Berlin"),
])
def test_bad_tables_are_refused_with_the_line_to_fix(survey, tmp_path, rows, message):
    with pytest.raises(ValueError, match=message) as error:
        Deployments.read(_table(tmp_path, rows))
    assert "\n" not in str(error.value)


def test_a_table_without_the_columns_is_refused(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("place,lat\nA,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected the columns folder,recorder,site"):
        Deployments.read(path)


def test_times_into_a_recording_are_elapsed_time_across_the_clock_change(tmp_path):
    # 01:30 CEST on the night clocks go back: two hours of audio later it is 02:30 CET, not 03:30 (which adding
    # to a wall clock in the zone would give).
    (r,) = describe_recordings({str(plain_wav(tmp_path / "20261025_013000.WAV")): 7200.0}, timezone="Europe/Berlin")
    assert r.start.astimezone(dt.timezone.utc) == dt.datetime(2026, 10, 24, 23, 30, tzinfo=dt.timezone.utc)
    assert r.time_at(7200) == dt.datetime(2026, 10, 25, 1, 30, tzinfo=dt.timezone.utc)
    assert r.end == r.time_at(7200)
