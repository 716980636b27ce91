"""When a recording started, read from what the recorder wrote; never guessed.

Where the start comes from, first found wins:

1. GUANO metadata (Wildlife Acoustics Song Meters and others): the ``Timestamp`` field of the WAV file's ``guan``
   chunk, which the GUANO specification allows anywhere in the RIFF container (often after the audio), written as
   ISO 8601 with ``Z``, an offset, or local time without one. ``Serial`` is the recorder's id, ``Loc Position``
   its latitude and longitude.
2. The AudioMoth comment: the ``ICMT`` entry of the ``LIST``/``INFO`` chunk, "Recorded at 05:30:00 01/06/2026
   (UTC+2) by AudioMoth 24F319055FDF1C41 at medium gain ...": local time of the recorder's clock, day before month,
   and the offset in hours with optional minutes (``UTC-3:30``). The serial in the ``IART`` entry ("AudioMoth
   24F3...") is the recorder's id (else the id after "by AudioMoth" or "during deployment").
3. A user pattern (``time_pattern``: strptime directives such as ``%Y-%m-%d_%H%M%S``, searched for in the file's
   path).
4. File names: AudioMoth ``20260601_053000.WAV``; Song Meter ``PREFIX_20260601_053000.wav`` (the prefix, the
   recorder's name, is its id).

Local times without an offset (GUANO local timestamps, every file name) need the recorder clock's zone,
``timezone=`` ("Europe/Berlin", "+02:00", "UTC"); without it the start stays unknown and says why. A date that
cannot exist (month 13, 25:61) is an error naming the file: it is a broken file name or pattern, not a recording
without a time.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass

__all__ = ["RecordingStart", "recording_start", "parse_zone", "parse_time", "iso", "fixed", "read_chunks",
           "parse_guano", "parse_audiomoth_comment", "TimePattern"]

_CHUNK_LIMIT = 1 << 20  # metadata chunks are small; a larger one is not metadata we read
_AUDIOMOTH = re.compile(
    r"Recorded at (\d{1,2}):(\d{2}):(\d{2}) (\d{1,2})/(\d{1,2})/(\d{4})"
    r"(?: \(UTC(?:([+-]\d{1,2})(?::(\d{2}))?)?\))?"
    r"(?: (?:by AudioMoth|during deployment) ([0-9A-Fa-f]+))?")
_NAME = re.compile(r"(?:^|[\\/])(?:(?P<prefix>[^\\/]*?)_)?(?P<date>\d{8})_(?P<time>\d{6})(?=\D*$)")


@dataclass(frozen=True)
class RecordingStart:
    """The start of one recording: ``start`` (timezone-aware) or None with ``note`` saying why.

    ``source``: ``"guano"``, ``"audiomoth comment"``, ``"time pattern"``, ``"file name"`` or ``""`` (none found);
    ``recorder``: the recorder's id where the file names one; ``position``: (latitude, longitude) from GUANO.
    """

    start: dt.datetime | None
    source: str = ""
    recorder: str | None = None
    position: tuple[float, float] | None = None
    note: str = ""


def parse_zone(text: str) -> dt.tzinfo:
    """A zone from ``"UTC"``, ``"Z"``, an offset (``"+02:00"``, ``"-0330"``, ``"+2"``) or an IANA name."""
    value = str(text).strip()
    if value.upper() in ("UTC", "Z", "GMT"):
        return dt.timezone.utc
    match = re.fullmatch(r"(?:UTC)?([+-])(\d{1,2})(?::?(\d{2}))?", value)
    if match:
        sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3) or 0)
        if hours > 14 or minutes > 59:
            raise ValueError(f"time zone {text!r}: an offset must lie within +-14:00; give e.g. +02:00 or a name "
                             "such as Europe/Berlin")
        delta = dt.timedelta(hours=hours, minutes=minutes)
        return dt.timezone(-delta if sign == "-" else delta)
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {text!r}: give an IANA name such as Europe/Berlin or America/Bogota, an "
                         "offset such as +02:00, or UTC (on Windows, pip install tzdata for the names)") from None


def parse_time(text: str, *, zone: dt.tzinfo | None = None, what: str = "time") -> dt.datetime:
    """An ISO 8601 date or date-time (``T`` or a space between them, ``Z`` or an offset optional).

    A value without an offset is taken in ``zone`` when given, else returned naive. A date alone is its midnight.
    """
    value = str(text).strip()
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not an ISO 8601 date or time; write it as 2026-06-01 or "
                         "2026-06-01T05:30:00+02:00") from None
    if moment.tzinfo is None and zone is not None:
        moment = moment.replace(tzinfo=zone)
    return moment


def iso(moment: dt.datetime | None) -> str:
    """ISO 8601 with the offset, to the millisecond (``2026-06-01T05:30:10.000+02:00``); ``""`` for None."""
    return "" if moment is None else moment.isoformat(timespec="milliseconds")


# -- the WAV file's chunks -------------------------------------------------------------------------------------
def read_chunks(path: str | os.PathLike, wanted: tuple[bytes, ...] = (b"guan", b"LIST")) -> dict[bytes, list[bytes]]:
    """The contents of the RIFF/WAVE chunks named in ``wanted`` (every occurrence, in file order).

    The walk jumps from header to header (the audio is never read), so a ``guan`` chunk after a long ``data``
    chunk costs one seek. Not a WAV file, or a chunk cut short: what was found so far.
    """
    found: dict[bytes, list[bytes]] = {}
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            return found
        size = os.fstat(handle.fileno()).st_size
        offset = 12
        while offset + 8 <= size:
            handle.seek(offset)
            header = handle.read(8)
            if len(header) < 8:
                break
            chunk, length = header[:4], int.from_bytes(header[4:], "little")
            if chunk in wanted and length <= _CHUNK_LIMIT:
                found.setdefault(chunk, []).append(handle.read(length))
            if length == 0xFFFFFFFF:  # RF64's data chunk: its size lives in ds64; nothing we read follows
                break
            offset += 8 + length + (length & 1)  # chunks are word aligned
    return found


def _info_entries(lists: list[bytes]) -> dict[bytes, str]:
    """``{b"ICMT": text, b"IART": text, ...}`` from LIST chunks of type INFO."""
    entries: dict[bytes, str] = {}
    for body in lists:
        if body[:4] != b"INFO":
            continue
        offset = 4
        while offset + 8 <= len(body):
            key, length = body[offset:offset + 4], int.from_bytes(body[offset + 4:offset + 8], "little")
            text = body[offset + 8:offset + 8 + length].split(b"\0", 1)[0]
            entries.setdefault(key, text.decode("utf-8", "replace").strip())
            offset += 8 + length + (length & 1)
    return entries


def parse_guano(text: str | bytes) -> dict[str, str]:
    """GUANO ``key: value`` lines -> ``{key: value}`` (namespaced keys keep their ``NS|`` prefix)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            text = text.decode("latin-1")
    fields = {}
    for line in text.split("\n"):
        key, colon, value = line.strip(" \t\r\0").partition(":")
        if colon and key.strip():
            fields[key.strip()] = value.strip(" \t\r\0")
    return fields


def parse_audiomoth_comment(comment: str, where: str = "comment") -> tuple[dt.datetime, str | None] | None:
    """``(start, recorder id)`` from an AudioMoth comment, or None when it is not one.

    The start is aware when the comment states its zone ("(UTC)", "(UTC+2)", "(UTC-3:30)"), else naive.
    """
    match = _AUDIOMOTH.search(comment)
    if match is None:
        return None
    hour, minute, second, day, month, year = (int(match.group(i)) for i in range(1, 7))
    start = _checked(where, "the AudioMoth comment", year, month, day, hour, minute, second)
    if "(UTC" in match.group(0):
        hours = match.group(7) or "+0"
        delta = dt.timedelta(hours=abs(int(hours)), minutes=int(match.group(8) or 0))
        start = start.replace(tzinfo=dt.timezone(-delta if hours.startswith("-") else delta))
    return start, match.group(9)


def _checked(where: str, what: str, year: int, month: int, day: int, hour: int, minute: int, second: int,
             micro: int = 0) -> dt.datetime:
    try:
        return dt.datetime(year, month, day, hour, minute, second, micro)
    except ValueError:
        raise ValueError(f"{where}: {what} says {year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}, "
                         "which is not a real date and time; fix the file's name or metadata, or give "
                         "--time-pattern for names in another layout") from None


class TimePattern:
    """A strptime pattern (``%Y %m %d %H %M %S %y %j %f %z %%``) searched for in a file's path."""

    _DIRECTIVES = {"Y": r"\d{4}", "y": r"\d{2}", "m": r"\d{2}", "d": r"\d{2}", "H": r"\d{2}", "M": r"\d{2}",
                   "S": r"\d{2}", "j": r"\d{3}", "f": r"\d{1,6}", "z": r"(?:Z|[+-]\d{2}:?\d{2})", "%": "%"}

    def __init__(self, pattern: str) -> None:
        parts, i = [], 0
        while i < len(pattern):
            if pattern[i] == "%":
                code = pattern[i + 1:i + 2]
                if code not in self._DIRECTIVES:
                    raise ValueError(f"--time-pattern {pattern!r}: %{code} is not supported; use %Y %y %m %d %j %H "
                                     "%M %S %f %z (and %% for a percent sign)")
                parts.append(self._DIRECTIVES[code])
                i += 2
            else:
                parts.append(re.escape(pattern[i]))
                i += 1
        if not any(f"%{c}" in pattern for c in "Yy") or "%d" not in pattern and "%j" not in pattern:
            raise ValueError(f"--time-pattern {pattern!r} needs a year (%Y or %y) and a day (%d or %j)")
        self.pattern, self.regex = pattern, re.compile("".join(parts))

    def search(self, path: str) -> dt.datetime | None:
        """The time in ``path`` (its last match), or None; a match that is no real date is a ValueError."""
        matches = list(self.regex.finditer(path.replace("\\", "/")))
        if not matches:
            return None
        text = matches[-1].group(0)
        try:
            return dt.datetime.strptime(text, self.pattern)
        except ValueError:
            raise ValueError(f"{path}: {text!r} matches --time-pattern {self.pattern!r} but is not a real date "
                             "and time; fix the file name or the pattern") from None


def _from_name(path: str) -> tuple[dt.datetime, str | None] | None:
    match = _NAME.search(os.path.splitext(path)[0])
    if match is None:
        return None
    d, t = match.group("date"), match.group("time")
    start = _checked(path, "the file name", int(d[:4]), int(d[4:6]), int(d[6:]), int(t[:2]), int(t[2:4]), int(t[4:]))
    return start, (match.group("prefix") or None)


def _aware(start: dt.datetime, zone: dt.tzinfo | None, source: str, **extra) -> RecordingStart:
    if start.tzinfo is not None:
        return RecordingStart(start, source, **extra)
    if zone is None:
        return RecordingStart(None, source, note=f"the {source} gives local time {start.isoformat()} without an offset;"
                                                 " give --timezone (the recorder clock's zone)", **extra)
    return RecordingStart(fixed(start.replace(tzinfo=zone)), source, **extra)  # a ZoneInfo gives that date's offset


def fixed(moment: dt.datetime) -> dt.datetime:
    """``moment`` with its zone replaced by its fixed UTC offset at that instant. Adding a timedelta to a datetime
    in a ZoneInfo zone moves the wall clock (an hour off across a daylight-saving change); with a fixed offset the
    sum is the elapsed time."""
    return moment.astimezone(dt.timezone(moment.utcoffset()))


def recording_start(path: str | os.PathLike, *, time_pattern: str | TimePattern | None = None,
                    timezone: str | dt.tzinfo | None = None) -> RecordingStart:
    """The start of the recording at ``path`` (see the module docstring for the order of the sources)."""
    name = os.fsdecode(os.fspath(path))
    zone = parse_zone(timezone) if isinstance(timezone, str) else timezone
    pattern = TimePattern(time_pattern) if isinstance(time_pattern, str) else time_pattern
    is_wav = name.lower().endswith((".wav", ".wave")) and os.path.isfile(name)  # a moved file: its name only
    chunks = read_chunks(name) if is_wav else {}
    for body in chunks.get(b"guan", []):
        fields = parse_guano(body)
        if fields.get("Timestamp"):
            position = _position(fields.get("Loc Position", ""))
            start = parse_time(fields["Timestamp"], what=f"{name}: GUANO Timestamp")
            return _aware(start, zone, "guano", recorder=fields.get("Serial") or None, position=position)
    info = _info_entries(chunks.get(b"LIST", []))
    found = parse_audiomoth_comment(info.get(b"ICMT", ""), name)
    if found is not None:
        # the serial (IART) names the device; a comment "during deployment <id>" names the deployment instead
        return _aware(found[0], zone, "audiomoth comment", recorder=_audiomoth_artist(info) or found[1])
    if pattern is not None:
        start = pattern.search(name)
        if start is not None:
            return _aware(start, zone, "time pattern")
    found = _from_name(name)
    if found is not None:
        return _aware(found[0], zone, "file name", recorder=found[1])
    return RecordingStart(None, note="no GUANO timestamp, AudioMoth comment or time in the file name; give "
                                     "--time-pattern if the name holds the time")


def _audiomoth_artist(info: dict[bytes, str]) -> str | None:
    artist = info.get(b"IART", "")
    return artist.split()[-1] if artist.startswith("AudioMoth ") else None


def _position(text: str) -> tuple[float, float] | None:
    try:
        lat, lon = (float(v) for v in text.split())
    except ValueError:
        return None
    return (lat, lon) if -90 <= lat <= 90 and -180 <= lon <= 180 else None
