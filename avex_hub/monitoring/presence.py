"""Presence tables for occupancy models: detections per site and occasion, with the effort behind each cell.

Occasions are ``day``, ``hour``, ``Nh`` (N hours, N dividing 24, from local midnight) or ``Nd`` (N days from the
first surveyed date), in each site's local time: its deployments' ``timezone``, else the ``timezone`` given, else
UTC, and the output says which (``time_zone``). Boundaries are local wall-clock times converted to UTC with the
zone's rules, so a day when clocks change lasts 23 or 25 hours, the hour that occurs twice when clocks go back is
one occasion of two hours, and the hour skipped when they go forward has no effort (NA). Sites in different zones
share the occasion names (local dates and hours), each occasion at its own site's local time.

Effort is recorded seconds (the recordings table's spans) inside each occasion; a cell without effort is NA, not
zero. An event counts in the occasion holding its start. Recordings without a known start or outside every
deployment (and their events) are left out and counted in ``left_out``.

Files (:func:`write_presence`): ``presence.csv`` (long: ``site, time_zone, occasion, occasion_start, occasion_end,
effort_s, label, detections, present``), ``y_<label>.csv`` (sites as rows, occasions as columns, 1/0/NA: the
``y`` of R's ``unmarked::unmarkedFrameOccu``), ``effort.csv`` (the same shape, seconds: an observation covariate),
``sites.csv`` (``site, latitude, longitude, time_zone``: site covariates) and ``presence.json`` (the occasion unit,
zones and what was left out).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio.intervals import overlap_seconds
from .times import parse_time, parse_zone

__all__ = ["parse_occasion", "Presence", "presence_table", "write_presence"]

UTC_FALLBACK = "UTC (no time zone given for this site)"


def parse_occasion(text: str) -> tuple[str, int]:
    """``("h" | "d", length)`` from ``day``, ``hour``, ``6h``, ``7d``."""
    value = str(text).strip().lower()
    value = {"day": "1d", "hour": "1h"}.get(value, value)
    match = re.fullmatch(r"(\d+)\s*([hd])", value)
    if not match or int(match.group(1)) < 1 or (match.group(2) == "h" and 24 % int(match.group(1))):
        raise ValueError(f"occasion {text!r}: give day, hour, a number of hours dividing 24 (2h, 6h, 12h) or a number "
                         "of days (7d)")
    return match.group(2), int(match.group(1))


def _local_starts(zone: dt.tzinfo, first: dt.date, last: dt.date, unit: str, length: int) -> list[dt.datetime]:
    """Local wall-clock starts of the occasions from ``first`` to ``last`` (dates), plus the end of the last."""
    days = (last - first).days + 1
    if unit == "d":
        dates = [first + dt.timedelta(days=k * length) for k in range(-(-days // length) + 1)]
        return [dt.datetime(d.year, d.month, d.day, tzinfo=zone) for d in dates]
    starts = [dt.datetime(d.year, d.month, d.day, h, tzinfo=zone) for d in
              (first + dt.timedelta(days=k) for k in range(days)) for h in range(0, 24, length)]
    end = last + dt.timedelta(days=1)
    return starts + [dt.datetime(end.year, end.month, end.day, tzinfo=zone)]


@dataclass
class Presence:
    """Site x occasion tables: ``effort`` [sites, occasions] seconds, ``detections[label]`` [sites, occasions]
    (counts; NaN where no effort), occasion labels and UTC bounds per site, zones, and what was left out."""

    sites: list[str]
    occasions: list[str]
    labels: list[str]
    effort: np.ndarray
    detections: dict[str, np.ndarray]
    bounds: dict[str, list[tuple[str, str]]]
    zones: dict[str, str]
    positions: dict[str, tuple[float | None, float | None]]
    unit: str
    left_out: dict[str, int] = field(default_factory=dict)

    def present(self, label: str) -> np.ndarray:
        """1/0 per cell, NaN where there was no effort."""
        counts = self.detections[label]
        return np.where(np.isnan(counts), np.nan, (counts > 0).astype(float))


def _usable(recordings) -> tuple[list, dict[str, int]]:
    """The recordings with a known start inside a deployment, and the count of the others by reason."""
    usable, left_out = [], {}
    for r in recordings:
        if r.start is not None and r.site is not None and not r.flag:
            usable.append(r)
            continue
        reason = "recordings without a known start" if r.start is None else \
            "recordings outside every deployment or its dates"
        left_out[reason] = left_out.get(reason, 0) + 1
    if not usable:
        raise ValueError("no recording has both a known start and a deployment; give --deployments and check the "
                         "recordings table's flag and note columns")
    return usable, left_out


def _effort(usable, sites: list[str], edges: dict[str, np.ndarray]) -> np.ndarray:
    """Recorded seconds per site and occasion: ``[sites, occasions]``."""
    effort = np.zeros((len(sites), len(edges[sites[0]]) - 1))
    for i, site in enumerate(sites):
        mine = [r for r in usable if r.site == site]
        starts = np.array([r.start.timestamp() for r in mine])
        bounds = edges[site]  # a skipped hour has end == start: np.maximum keeps the interval valid
        effort[i] = overlap_seconds(bounds[:-1], np.maximum(bounds[1:], bounds[:-1]), starts,
                                    starts + np.array([r.duration_s for r in mine])).sum(1)
    return effort


def presence_table(recordings, events, *, occasion: str = "day", labels: list[str] | None = None,
                   timezone: str | None = None) -> Presence:
    """Build the tables from ``recordings`` (:class:`~avex_hub.monitoring.recordings.Recording`) and ``events``.

    A site's zone is its recordings' ``time_zone`` (from the deployments table); ``timezone`` is the zone for sites
    without one. ``labels``: the labels to tabulate (default: those with events), so a species never detected still
    gets its all-zero (and NA) matrix; events of other labels are not counted.
    """
    unit, length = parse_occasion(occasion)
    usable, left_out = _usable(recordings)
    sites = sorted({r.site for r in usable})
    zone_names = {s: next(r.time_zone for r in usable if r.site == s) or timezone for s in sites}
    tz = {s: parse_zone(zone_names[s]) if zone_names[s] else dt.timezone.utc for s in sites}
    first = min(r.start.astimezone(tz[r.site]).date() for r in usable)
    last = max((r.end - dt.timedelta(microseconds=1)).astimezone(tz[r.site]).date() for r in usable)
    local = {s: _local_starts(tz[s], first, last, unit, length) for s in sites}
    names = [_occasion_name(t, unit) for t in local[sites[0]][:-1]]
    edges = {s: np.array([t.timestamp() for t in local[s]]) for s in sites}
    effort = _effort(usable, sites, edges)
    site_of = {r.file: r.site for r in usable}
    labels = list(labels) if labels is not None else sorted({e.label for e in events})
    counts = {label: np.zeros_like(effort) for label in labels}
    for e in events:
        if e.label not in counts:
            continue
        if e.file not in site_of or not e.start_time:
            left_out["events of left-out recordings"] = left_out.get("events of left-out recordings", 0) + 1
            continue
        site = site_of[e.file]
        j = int(np.searchsorted(edges[site], parse_time(e.start_time).timestamp(), side="right")) - 1
        counts[e.label][sites.index(site), min(max(j, 0), len(names) - 1)] += 1
    for label in labels:
        counts[label][effort <= 0] = np.nan
    bounds = {s: [(t.isoformat(), u.isoformat()) for t, u in zip(local[s][:-1], local[s][1:])] for s in sites}
    unit_name = {("d", 1): "day", ("h", 1): "hour"}.get((unit, length), f"{length}{unit}")
    return Presence(sites, names, labels, effort, counts, bounds, {s: zone_names[s] or UTC_FALLBACK for s in sites},
                    {s: next((r.latitude, r.longitude) for r in usable if r.site == s) for s in sites}, unit_name,
                    left_out)


def _occasion_name(start: dt.datetime, unit: str) -> str:
    return start.strftime("%Y-%m-%d") if unit == "d" else start.strftime("%Y-%m-%dT%H")


def _slug(label: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", label).strip("_") or "label"


def write_presence(folder: str | os.PathLike, presence: Presence) -> dict[str, Path]:
    """Write the long table, the matrices, the site table and ``presence.json`` into ``folder``."""
    from ..embed.outputs import atomic_path
    from .tables import write_table

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    p, na = presence, lambda v: "NA" if np.isnan(v) else v  # noqa: E731
    files = {"presence": folder / "presence.csv", "effort": folder / "effort.csv", "sites": folder / "sites.csv"}
    write_table(files["presence"], ["site", "time_zone", "occasion", "occasion_start", "occasion_end", "effort_s",
                                    "label", "detections", "present"],
                ([s, p.zones[s], o, *p.bounds[s][j], p.effort[i, j], label, na(p.detections[label][i, j]),
                  na(p.present(label)[i, j])]
                 for i, s in enumerate(p.sites) for j, o in enumerate(p.occasions) for label in p.labels))
    write_table(files["effort"], ["site", *p.occasions], ([s, *p.effort[i]] for i, s in enumerate(p.sites)))
    write_table(files["sites"], ["site", "latitude", "longitude", "time_zone"],
                ([s, *p.positions[s], p.zones[s]] for s in p.sites))
    for label in p.labels:
        files[label] = folder / f"y_{_slug(label)}.csv"
        y = p.present(label)
        write_table(files[label], ["site", *p.occasions], ([s, *map(na, y[i])] for i, s in enumerate(p.sites)))
    meta = {"occasion": p.unit, "time_zones": p.zones, "left_out": p.left_out,
            "matrices": {label: files[label].name for label in p.labels}}
    with atomic_path(folder / "presence.json", ".json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return files
