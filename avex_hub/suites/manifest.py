"""Individual ID and vocal repertoire: a manifest the user fills, because their published layouts are not open.

The card's individual-ID sets (Pipit, Chiffchaff, Little Owl, Macaques) and vocal-repertoire sets (Zebra Finch,
Giant Otters, Bengalese Finch, Killer Whale) are read by the official avex library from Earth Species Project's own
data store (``esp_data``), whose prepared files and splits are not published; the recordings themselves come from
the papers that released them (for example Linhart et al. 2022 for the three bird individual-ID sets, on Zenodo).
So these suites read one ``manifest.csv`` in ``root`` that you fill from your copy of the data:

    set,path,label,split,start_s,end_s
    pipit,pipit/ind212_0001.wav,212,train,,
    pipit,pipit/ind212_0044.wav,212,test,,
    macaques,macaques/AL_coo_01.wav,AL,val,0.5,1.7

``set``: one of the suite's set names (others are ignored); ``path``: relative to ``root`` (or absolute);
``label``: the individual (or the call type); ``split``: ``train``, ``val`` or ``test``; ``start_s``/``end_s``
(optional): the seconds of the file holding the call. Clips are cut or zero padded to ``clip_s`` (default 5 s;
the model's window is 10 s). A set without ``val`` rows gets ``val_fraction`` of train held out (noted). The
vocal-repertoire suite scores retrieval and clustering only (the card has no probe row for it) and so needs only
``test`` rows.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from ..audio.datasets import AudioItem
from .data import ROLES, SetData, checked_dataset, hold_out_val

__all__ = ["INDIVIDUAL_ID_SETS", "VOCAL_REPERTOIRE_SETS", "MANIFEST", "read_manifest_set"]

INDIVIDUAL_ID_SETS = ("pipit", "chiffchaff", "littleowl", "macaques")
VOCAL_REPERTOIRE_SETS = ("zebra_finch", "giant_otters", "bengalese_finch", "killer_whale")
MANIFEST = "manifest.csv"
_COLUMNS = {"set", "path", "label", "split"}


def _rows(path: Path) -> list[tuple[str, str, AudioItem]]:
    """``(set, split, item)`` for every row of the manifest; ValueError naming the line of a row that does not
    parse."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = {c.strip() for c in reader.fieldnames or ()}
        if not _COLUMNS <= columns:
            raise ValueError(f"{path}: needs columns {sorted(_COLUMNS)} (and optionally start_s, end_s); found "
                             f"{sorted(columns)}")
        out = []
        for row in reader:
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            where = f"{path.name} line {reader.line_num}"
            if not row["path"] or not row["label"] or row["split"] not in ROLES:
                raise ValueError(f"{where}: needs a path, a label and a split in {ROLES}; got {row}")
            times = _seconds(row, where)
            file = Path(row["path"]) if Path(row["path"]).is_absolute() else path.parent / row["path"]
            out.append((row["set"], row["split"], AudioItem(file, (row["label"],), *times, origin=where)))
    return out


def _seconds(row: dict[str, str], where: str) -> list[float | None]:
    """``[start_s, end_s]`` of a manifest row (None where empty); ValueError unless both are seconds >= 0 and the
    end comes after the start."""
    try:
        times = [float(row[k]) if row.get(k) else None for k in ("start_s", "end_s")]
    except ValueError:
        times = None
    if (times is None or any(t is not None and not (math.isfinite(t) and t >= 0) for t in times)
            or (None not in times and times[1] <= times[0])):
        raise ValueError(f"{where}: start_s/end_s must be seconds >= 0 with end_s after start_s (or empty), got "
                         f"{row.get('start_s')!r}, {row.get('end_s')!r}")
    return times


def read_manifest_set(root: str | os.PathLike, name: str, *, roles: tuple[str, ...] = ROLES, clip_s: float = 5.0,
                      val_fraction: float = 0.2, seed: int = 0) -> SetData:
    """The rows of ``root/manifest.csv`` whose ``set`` is ``name`` as AudioDatasets of ``roles`` (module doc)."""
    path = Path(root).expanduser() / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: write the manifest for this suite (columns set, path, label, split; "
                                "README, 'Reproducing the model card') and pass its folder as --data")
    rows = _rows(path)
    mine = [(role, item) for set_name, role, item in rows if set_name == name]
    if not mine:
        raise FileNotFoundError(f"{path}: no rows with set == {name!r} (sets present: "
                                f"{sorted({set_name for set_name, _, _ in rows})})")
    labels = sorted({item.labels[0] for _, item in mine})
    splits, failures = {}, []
    for role in roles:
        items = [item for split, item in mine if split == role]
        if items:
            splits[role], skipped = checked_dataset(items, labels=labels, clip_s=clip_s, multilabel=False,
                                                    source=f"{path} set {name} {role}")
            failures += skipped
    needed = [role for role in roles if role != "val" and role not in splits]
    if needed:
        raise FileNotFoundError(f"{path}: set {name} has no {needed} rows; this suite needs {list(roles)}")
    notes = []
    if "val" in roles and "val" not in splits:
        splits["train"], splits["val"] = hold_out_val(splits["train"], val_fraction, seed)
        notes.append(f"no val rows: validation is {val_fraction:.0%} of train, held out with seed {seed}")
    return SetData(name, {role: splits[role] for role in roles}, False, source=str(path), notes=notes,
                   failures=failures)
