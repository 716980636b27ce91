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
``label``: the individual (or the call type); ``split``: ``train``, ``val`` or ``test`` (or a spelling
:func:`avex_hub.audio.manifest.canonical_split` reads, e.g. ``valid``); ``start_s``/``end_s``
(optional): the seconds of the file holding the call. Clips are cut or zero padded to ``clip_s`` (default 5 s;
the model's window is 10 s). A set without ``val`` rows gets ``val_fraction`` of train held out (noted). The
vocal-repertoire suite scores retrieval and clustering only (the card has no probe row for it) and so needs only
``test`` rows.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..audio.items import AudioItem
from ..audio.manifest import manifest_items
from .data import ROLES, SetData, checked_dataset, hold_out_val

__all__ = ["INDIVIDUAL_ID_SETS", "VOCAL_REPERTOIRE_SETS", "MANIFEST", "read_manifest_set"]

INDIVIDUAL_ID_SETS = ("pipit", "chiffchaff", "littleowl", "macaques")
VOCAL_REPERTOIRE_SETS = ("zebra_finch", "giant_otters", "bengalese_finch", "killer_whale")
MANIFEST = "manifest.csv"


def _rows(path: Path) -> list[tuple[str, str, AudioItem]]:
    """``(set, split, item)`` for every row of the manifest, read by :func:`avex_hub.audio.manifest.manifest_items`
    (paths, labels, seconds and split spellings checked there, each error naming its line)."""
    items = manifest_items(path, base=path.parent, label_column="label", split=None)
    if not {"set", "split"} <= set(items[0].extra):
        raise ValueError(f"{path}: needs the columns set, path, label and split (and optionally start_s, end_s); "
                         f"found {['path', *items[0].extra]}")
    bad = [item.origin for item in items if item.extra["split"] not in ROLES]
    if bad:
        raise ValueError(f"{path}: split must be train, val or test; not so on {', '.join(bad[:10])}")
    return [(item.extra["set"], item.extra["split"], item) for item in items]


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
