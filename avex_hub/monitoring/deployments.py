"""Deployments: which site, position and dates each folder or recorder stands for.

A CSV with a header, one row per deployment::

    folder,recorder,site,latitude,longitude,start,end,timezone
    north/,,N1,52.51,13.40,2026-05-01,2026-05-31,Europe/Berlin
    ,24F319055FDF1C41,S2,52.49,13.38,2026-05-01T12:00:00+02:00,,Europe/Berlin

``folder`` (relative to the table's own folder, or absolute) or ``recorder`` (the id the recorder writes: the
AudioMoth serial, GUANO ``Serial``, a Song Meter's file name prefix) says which recordings a row covers; ``site``
is required; ``latitude``/``longitude`` in decimal degrees (WGS84); ``start``/``end`` are optional ISO 8601 dates
or times (a date alone covers its whole day; without an offset in the site's zone); ``timezone`` is the site's
zone (an IANA name such as Europe/Berlin), used for local days and hours in presence tables (UTC where empty).

Refused, with the line to fix: a folder that does not exist, a row naming neither folder nor recorder, two rows for
one folder or recorder whose dates overlap, one site given two time zones, positions out of range, dates that do
not parse or end before they start. A recording inside no row's folder or recorder is flagged ``no deployment``;
one whose start lies outside its row's dates ``outside deployment dates``.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from .times import RecordingStart, parse_time, parse_zone

__all__ = ["Deployment", "Deployments", "NO_DEPLOYMENT", "OUTSIDE_DATES", "UNKNOWN_START"]

NO_DEPLOYMENT = "no deployment"
OUTSIDE_DATES = "outside deployment dates"
UNKNOWN_START = "start unknown, deployment dates not checked"
_COLUMNS = ("folder", "recorder", "site", "latitude", "longitude", "start", "end", "timezone")


@dataclass(frozen=True)
class Deployment:
    """One row of the table (``line``: its line number); ``start``/``end`` aware or None (open)."""

    line: int
    site: str
    folder: str | None
    recorder: str | None
    latitude: float | None
    longitude: float | None
    start: dt.datetime | None
    end: dt.datetime | None
    timezone: str | None

    def contains(self, moment: dt.datetime) -> bool:
        return (self.start is None or moment >= self.start) and (self.end is None or moment < self.end)


def _number(row: dict, key: str, limit: float, where: str) -> float | None:
    text = (row.get(key) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not -limit <= value <= limit:
        raise ValueError(f"{where}: {key} {text!r} is not a number between -{limit:g} and {limit:g} (decimal "
                         "degrees, WGS84); fix it or leave it empty")
    return value


def _bound(text: str, zone: dt.tzinfo, end: bool, where: str) -> dt.datetime | None:
    text = text.strip()
    if not text:
        return None
    moment = parse_time(text, zone=zone, what=where)
    if end and len(text) == 10:  # a date alone: the whole day is in
        moment += dt.timedelta(days=1)
    return moment


class Deployments:
    """The deployments table; :meth:`match` finds a recording's row."""

    def __init__(self, rows: list[Deployment], path: str = "deployments") -> None:
        self.rows, self.path = rows, path
        self._check_overlaps()
        self.zones: dict[str, str | None] = {}
        for row in rows:
            if row.site in self.zones and self.zones[row.site] != row.timezone:
                raise ValueError(f"{path}, line {row.line}: site {row.site!r} has time zone {row.timezone or '(none)'}"
                                 f" here and {self.zones[row.site] or '(none)'} on an earlier line; give one zone")
            self.zones[row.site] = row.timezone

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Deployments":
        """Read and check the table (UTF-8, with or without a byte-order mark)."""
        path = Path(path)
        base = path.resolve().parent
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in reader.fieldnames or []]
            unknown = [h for h in header if h not in _COLUMNS]
            if "site" not in header or not {"folder", "recorder"} & set(header) or unknown:
                raise ValueError(f"{path}: expected the columns {','.join(_COLUMNS)} (site and folder or recorder "
                                 f"required), found {','.join(header) or 'none'}; fix the header")
            rows = [cls._row({k.strip(): v for k, v in raw.items() if k}, base, f"{path}, line {reader.line_num}",
                             reader.line_num) for raw in reader]
        if not rows:
            raise ValueError(f"{path}: no deployments in the table; add one row per folder or recorder")
        return cls(rows, str(path))

    @staticmethod
    def _row(row: dict, base: Path, where: str, line: int) -> Deployment:
        site = (row.get("site") or "").strip()
        folder_text, recorder = (row.get("folder") or "").strip(), (row.get("recorder") or "").strip() or None
        if not site or not (folder_text or recorder):
            raise ValueError(f"{where}: every row needs a site and a folder or recorder; fill them in or remove the "
                             "row")
        folder = None
        if folder_text:
            resolved = (base / folder_text).resolve()
            if not resolved.is_dir():
                raise ValueError(f"{where}: folder {folder_text!r} does not exist (looked for {resolved}); fix the "
                                 "path (relative to the table's folder) or remove the row")
            folder = str(resolved)
        zone_name = (row.get("timezone") or "").strip() or None
        zone = parse_zone(zone_name) if zone_name else dt.timezone.utc
        start = _bound(row.get("start") or "", zone, False, f"{where}: start")
        end = _bound(row.get("end") or "", zone, True, f"{where}: end")
        if start is not None and end is not None and end <= start:
            raise ValueError(f"{where}: the deployment ends ({row['end']}) before it starts ({row['start']}); swap "
                             "them")
        return Deployment(line, site, folder, recorder, _number(row, "latitude", 90, where),
                          _number(row, "longitude", 180, where), start, end, zone_name)

    def _check_overlaps(self) -> None:
        never, always = dt.datetime.min.replace(tzinfo=dt.timezone.utc), dt.datetime.max.replace(tzinfo=dt.timezone.utc)
        seen: dict[tuple[str, str], list[Deployment]] = {}
        for row in self.rows:
            for key in (("folder", row.folder), ("recorder", row.recorder)):
                if key[1] is None:
                    continue
                for other in seen.get(key, []):
                    if (row.start or never) < (other.end or always) and (other.start or never) < (row.end or always):
                        raise ValueError(f"{self.path}: lines {other.line} and {row.line} give {key[0]} {key[1]!r} "
                                         "overlapping dates; correct the start and end so each recording belongs to "
                                         "one deployment")
                seen.setdefault(key, []).append(row)

    def match(self, path: str, recording: RecordingStart) -> tuple[Deployment | None, str]:
        """``(row, flag)`` for the recording at ``path``: flag ``""``, ``NO_DEPLOYMENT``, ``OUTSIDE_DATES`` or
        ``UNKNOWN_START``. Folder rows come first (the deepest folder), then recorder rows."""
        real = os.path.realpath(path)
        by_folder = [r for r in self.rows if r.folder is not None and real.startswith(r.folder + os.sep)]
        by_folder.sort(key=lambda r: -len(r.folder))
        candidates = by_folder + [r for r in self.rows if r.recorder is not None and r.recorder == recording.recorder]
        if not candidates:
            return None, NO_DEPLOYMENT
        if recording.start is None:
            undated = [r for r in candidates if r.start is None and r.end is None]
            return (undated[0], "") if undated else (candidates[0], UNKNOWN_START)
        inside = [r for r in candidates if r.contains(recording.start)]
        return (inside[0], "") if inside else (candidates[0], OUTSIDE_DATES)

    def site_zone(self, site: str) -> str | None:
        """The time zone name of ``site`` (None: unknown, use UTC)."""
        return self.zones.get(site)

    def positions(self) -> dict[str, tuple[float | None, float | None]]:
        """``{site: (latitude, longitude)}`` from each site's first row."""
        out: dict[str, tuple[float | None, float | None]] = {}
        for row in self.rows:
            out.setdefault(row.site, (row.latitude, row.longitude))
        return out
