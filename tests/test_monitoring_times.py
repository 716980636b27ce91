"""monitoring.times: recording starts from GUANO, the AudioMoth comment and file names, on files in the recorders'
own layouts (tests/recorder_files.py); never a guess."""

from __future__ import annotations

import datetime as dt

import pytest
import soundfile as sf

from avex_hub.monitoring.times import TimePattern, iso, parse_zone, read_chunks, recording_start
from recorder_files import audiomoth_wav, guano_wav, plain_wav

UTC = dt.timezone.utc


def _offset(hours: float) -> dt.timezone:
    return dt.timezone(dt.timedelta(hours=hours))


def test_audiomoth_comment_with_its_offset_and_serial(tmp_path):
    path = audiomoth_wav(tmp_path / "20260601_053000.WAV",
                         "Recorded at 05:30:00 01/06/2026 (UTC+2) by AudioMoth 24F319055FDF1C41 at medium gain "
                         "while battery was 4.2V and temperature was 12.3C.")
    assert sf.info(str(path)).frames == 48000  # a valid WAV that soundfile reads
    start = recording_start(path)
    assert (start.source, start.recorder) == ("audiomoth comment", "24F319055FDF1C41")
    assert start.start == dt.datetime(2026, 6, 1, 5, 30, tzinfo=_offset(2))
    assert iso(start.start) == "2026-06-01T05:30:00.000+02:00"
    assert start.start.astimezone(UTC).hour == 3


@pytest.mark.parametrize("zone, offset", [("(UTC)", 0), ("(UTC-5)", -5), ("(UTC+5:30)", 5.5), ("(UTC-3:30)", -3.5),
                                          ("(UTC-0:30)", -0.5)])
def test_audiomoth_offsets_with_minutes_and_negative_zero(tmp_path, zone, offset):
    # The firmware writes "-0:30" for minus half an hour (its hours part is 0): the sign belongs to the minutes too.
    path = audiomoth_wav(tmp_path / "a.WAV", f"Recorded at 23:59:59 31/12/2025 {zone} during deployment "
                                             "0123456789ABCDEF at low gain while battery was 3.9V.")
    start = recording_start(path)
    assert start.start == dt.datetime(2025, 12, 31, 23, 59, 59, tzinfo=_offset(offset))
    assert start.recorder == "24F319055FDF1C41"  # the device's serial (IART), not the deployment's id


@pytest.mark.parametrize("words", ["by AudioMoth", "during deployment"])
def test_the_serial_names_the_recorder_and_the_comment_only_without_one(tmp_path, words):
    comment = f"Recorded at 05:30:00 01/06/2026 (UTC+2) {words} 0123456789ABCDEF at medium gain"
    assert recording_start(audiomoth_wav(tmp_path / "a.WAV", comment)).recorder == "24F319055FDF1C41"
    assert recording_start(audiomoth_wav(tmp_path / "b.WAV", comment, serial=None)).recorder == "0123456789ABCDEF"


def test_audiomoth_comment_without_a_zone_needs_the_timezone(tmp_path):
    path = audiomoth_wav(tmp_path / "old.WAV", "Recorded at 04:00:00 15/03/2018 by AudioMoth 0011223344556677 at "
                                               "gain setting 2 while battery state was 4.0V", serial="0011223344556677")
    assert recording_start(path).start is None
    assert "--timezone" in recording_start(path).note
    start = recording_start(path, timezone="UTC")
    assert start.start == dt.datetime(2018, 3, 15, 4, tzinfo=UTC) and start.recorder == "0011223344556677"


@pytest.mark.parametrize("before_audio", [False, True])
def test_guano_timestamp_serial_and_position_wherever_the_chunk_is(tmp_path, before_audio):
    path = guano_wav(tmp_path / "S4U09999_20200101_000000.wav",  # the name says otherwise: metadata wins
                     {"Make": "Wildlife Acoustics, Inc.", "Model": "Song Meter SM4BAT-FS", "Serial": "S4U12345",
                      "Timestamp": "2026-05-31 04:30:00.250-04:00", "Loc Position": "42.5 -71.25"},
                     before_audio=before_audio)
    assert sf.info(str(path)).samplerate == 24000
    assert b"guan" in read_chunks(path)
    start = recording_start(path)
    assert start.source == "guano" and start.recorder == "S4U12345" and start.position == (42.5, -71.25)
    assert start.start == dt.datetime(2026, 5, 31, 4, 30, 0, 250000, tzinfo=_offset(-4))


def test_guano_local_and_utc_timestamps(tmp_path):
    local = guano_wav(tmp_path / "local.wav", {"Timestamp": "2026-07-01T22:00:00"})
    assert recording_start(local).start is None  # local time without an offset: not guessed
    berlin = recording_start(local, timezone="Europe/Berlin").start
    assert berlin.utcoffset() == dt.timedelta(hours=2) and berlin.astimezone(UTC).hour == 20
    zulu = guano_wav(tmp_path / "zulu.wav", {"Timestamp": "2026-07-01T22:00:00Z"})
    assert recording_start(zulu, timezone="Europe/Berlin").start == dt.datetime(2026, 7, 1, 22, tzinfo=UTC)


def test_file_names_of_audiomoth_and_song_meter(tmp_path):
    moth = plain_wav(tmp_path / "20260115_220000.WAV")
    assert recording_start(moth).start is None  # file names carry no offset
    winter = recording_start(moth, timezone="Europe/Berlin")
    assert winter.source == "file name" and winter.recorder is None
    assert iso(winter.start) == "2026-01-15T22:00:00.000+01:00"  # the zone's winter offset
    meter = plain_wav(tmp_path / "site3" / "SMM07257_20260715_220000.wav")
    summer = recording_start(meter, timezone="Europe/Berlin")
    assert summer.recorder == "SMM07257" and iso(summer.start) == "2026-07-15T22:00:00.000+02:00"
    assert recording_start(meter, timezone="-03:00").start.utcoffset() == dt.timedelta(hours=-3)


def test_a_user_pattern_and_its_zone(tmp_path):
    path = plain_wav(tmp_path / "2026-06-01" / "rec_0530-15+0200.wav")
    pattern = TimePattern("%Y-%m-%d/rec_%H%M-%S%z")
    start = recording_start(path, time_pattern=pattern)
    assert start.source == "time pattern" and start.start == dt.datetime(2026, 6, 1, 5, 30, 15, tzinfo=_offset(2))
    with pytest.raises(ValueError, match="needs a year"):
        TimePattern("%H%M%S")
    with pytest.raises(ValueError, match="%Q is not supported"):
        TimePattern("%Y%Q")


def test_impossible_dates_are_errors_naming_the_file(tmp_path):
    path = plain_wav(tmp_path / "20261345_256100.WAV")
    with pytest.raises(ValueError, match=r"20261345_256100.WAV: the file name says 2026-13-45 25:61:00, which is "
                                         r"not a real date and time") as error:
        recording_start(path, timezone="UTC")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="not a real date and time; fix the file name or the pattern"):
        recording_start(plain_wav(tmp_path / "x_2026-02-30.wav"), time_pattern="%Y-%m-%d")


def test_no_time_anywhere_stays_empty(tmp_path):
    start = recording_start(plain_wav(tmp_path / "dawn chorus.wav"), timezone="UTC")
    assert start.start is None and start.source == "" and "--time-pattern" in start.note
    assert recording_start(tmp_path / "moved" / "20260601_053000.WAV", timezone="UTC").start is not None  # name only


def test_zones():
    assert parse_zone("UTC") is UTC and parse_zone("+05:30").utcoffset(None) == dt.timedelta(hours=5, minutes=30)
    assert parse_zone("-0330").utcoffset(None) == -dt.timedelta(hours=3, minutes=30)
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        parse_zone("Mars/Olympus")
